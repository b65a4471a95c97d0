"""`gateway downlink sign|publish` and `gateway secret`: the backend's side of the downlink.

A backend signs in its own language following docs/downlink.md; these commands are the
reference (and what a shop uses to try the downlink by hand): the same RFC 8785 bytes, the
same binding, checked the way a gateway checks before anything is signed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli._common import CONFIG, CONFIG_ENV, INSTALLED_CONFIG, bad_input
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers
    from gateway.config.sections import Config

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'300', '300s', '15m', '12h', '7d' → seconds."""
    unit = DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use e.g. 300, 15m, 12h or 7d") from None
    if not 0 < value < 10 * 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def read_key(path: str) -> bytes:
    """The hex key in a key file (the form of `mqtt.downlink_key`), or ValueError."""
    from gateway.config.secrets import secret_problem

    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the key file: {exc}") from None
    if problem := secret_problem(text):
        raise ValueError(f"{path}: the key must be hex, like mqtt.downlink_key: {problem}")
    return bytes.fromhex(text)


def _read_document(path: str) -> dict[str, Any]:
    from gateway.sync import wire

    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    try:
        document = wire.parse(raw, max_bytes=64 << 20)
    except wire.WireRejected as exc:
        raise ValueError(f"{path}: {exc.reason}: {exc.detail}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected one JSON object (a document or a command)")
    return document


def _load_config(path: str | None) -> Config | None:
    from gateway.config.sections import load_config

    return None if path is None else load_config(path)


def build_signed(args: argparse.Namespace, key: bytes, config: Config | None) -> dict[str, Any]:
    """The document or command of args.file, bound and signed; ValueError says what is wrong."""
    import secrets

    from gateway.sync import downlink, signed

    document = _read_document(args.file)
    is_command = "command" in document
    document.pop("sig", None)
    store = args.store or document.get("store") or (config.gateway.store if config else None)
    if not isinstance(store, str) or not store:
        raise ValueError("which store is it for? give --store (or --config, or a 'store' field)")
    gateway = args.gateway or document.get("gateway")
    if gateway is None:
        gateway = config.gateway.id if (is_command and config) else signed.ALL_GATEWAYS
    if is_command and gateway == signed.ALL_GATEWAYS:
        raise ValueError("a command is for one gateway: give --gateway ID")
    valid_s = args.valid_for or (300.0 if is_command else 7 * 86400.0)
    now = SystemClock().wall()
    if args.now is not None:
        now = args.now
    for field in ("issued_at", "expires_at"):
        if field in document and not args.keep_times:
            del document[field]
    if is_command:
        document.setdefault("nonce", secrets.token_hex(12))
        document.setdefault("args", {})
    sealed = signed.seal(key, document, store=store, gateway=gateway, now=now, valid_s=valid_s)
    # Check it as a gateway would (but for the version it holds): never sign what is refused.
    binding = signed.Binding(
        store,
        gateway if gateway != signed.ALL_GATEWAYS else "-",
        # Without a config, the gateway's default limit: never sign what a default box refuses.
        config.mqtt.downlink_max_validity_days * 86400.0
        if config
        else signed.DEFAULT_MAX_VALIDITY_S,
    )
    refused = signed.check_envelope(sealed, binding, now, command=is_command)
    if refused is not None:
        raise ValueError(f"{refused.reason}: {refused.detail}")
    try:
        if is_command:
            if document.get("command") not in signed.COMMANDS:
                raise downlink.DocumentRejected(
                    "unknown_command", f"one of {', '.join(signed.COMMANDS)}"
                )
        else:
            downlink.validate_document(sealed)
    except downlink.DocumentRejected as exc:
        raise ValueError(f"{exc.reason}: {exc.detail}") from None
    return sealed


def _key_for(args: argparse.Namespace, config: Config | None) -> bytes:
    if args.key_file:
        return read_key(args.key_file)
    if config is not None and config.mqtt.downlink_key:
        return bytes.fromhex(config.mqtt.downlink_key)
    raise ValueError("no key: give --key-file (hex, like mqtt.downlink_key) or a --config with one")


def _cmd_sign(args: argparse.Namespace) -> int:
    """Bind and sign a document or command; print it (one JSON line) for any publisher."""
    try:
        config = _load_config(args.config)
        sealed = build_signed(args, _key_for(args, config), config)
    except ValueError as exc:
        return bad_input(str(exc))
    from gateway.sync.canonical import canonical

    # In canonical form: the bytes printed are the bytes signed, plus "sig".
    sys.stdout.write(canonical(sealed).decode() + "\n")
    return 0


def topic_for(config: Config, sealed: dict[str, Any]) -> str:
    from gateway.sync.topics import Topics

    prefix, store = config.mqtt.topic_prefix, str(sealed["store"])
    gateway = str(sealed["gateway"])
    if "command" in sealed:
        return f"{Topics(prefix, store, gateway).base}/cmd/{sealed['command']}"
    if gateway == "*":
        return f"{prefix}/{store}/down/{sealed['family']}"
    return f"{Topics(prefix, store, gateway).base}/down/{sealed['family']}"


async def _publish(config: Config, sealed: dict[str, Any], retain: bool, wait_s: float) -> int:
    import asyncio

    import aiomqtt

    from gateway.sync.topics import Topics
    from gateway.sync.uplink import client_settings

    settings = client_settings(config.mqtt, config, b"")
    for key in ("will", "properties", "clean_start", "clean_session"):
        settings.pop(key, None)
    settings["identifier"] = f"{config.gateway.id}-downlink-cli"
    topic = topic_for(config, sealed)
    payload = json.dumps(sealed, ensure_ascii=False, separators=(",", ":")).encode()
    async with aiomqtt.Client(**settings) as client:
        if "command" not in sealed:
            # The gateway answers a document with a notice on its gateway event stream
            # (downlink_applied, or downlink_rejected with the reason): wait for it.
            notices = Topics(config.mqtt.topic_prefix, config.gateway.store, config.gateway.id)
            await client.subscribe(notices.events("gateway"), qos=1)
            await client.publish(topic, payload, qos=1, retain=retain)
            print(f"published {sealed['family']} v{sealed['version']} to {topic}")
            try:
                async with asyncio.timeout(wait_s):
                    async for message in client.messages:
                        kind, data = _notice(message)
                        if data.get("topic") != topic:
                            continue
                        if kind == "downlink_applied" and data.get("version") == sealed["version"]:
                            print(f"{config.gateway.id}: applied")
                            return 0
                        if kind == "downlink_rejected":
                            reason, detail = data.get("reason"), data.get("detail")
                            print(f"{config.gateway.id}: rejected: {reason}: {detail}")
                            return 1
            except TimeoutError:
                pass
            print(
                f"{config.gateway.id} has not confirmed it within {wait_s:g} s (offline, or "
                "its notices are held back); a retained document reaches it when it connects",
                file=sys.stderr,
            )
            return 0
        base = Topics(config.mqtt.topic_prefix, str(sealed["store"]), str(sealed["gateway"])).base
        reply_topic = f"{base}/cmd-resp/{sealed['command']}"
        await client.subscribe(reply_topic, qos=1)
        await client.publish(topic, payload, qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    body = message.payload if isinstance(message.payload, bytes) else b""
                    reply = json.loads(body or b"{}")
                    if isinstance(reply, dict) and reply.get("nonce") in (sealed["nonce"], None):
                        print(json.dumps(reply, ensure_ascii=False))
                        return 0 if reply.get("ok") else 1
        except TimeoutError:
            pass
    print(f"gateway: no answer on {reply_topic} within {wait_s:g} s", file=sys.stderr)
    return 1


def _notice(message: Any) -> tuple[str, dict[str, Any]]:
    """(kind, data) of a gateway notice read from the event stream, in either CloudEvents
    mode (structured: the event is the payload; binary: data is, the type a User
    Property); ("", {}) for anything else."""
    body = message.payload if isinstance(message.payload, bytes) else b""
    try:
        event = json.loads(body or b"{}")
    except ValueError:
        return "", {}
    if not isinstance(event, dict):
        return "", {}
    kind = event.get("type")
    data = event.get("data")
    if kind is None:  # binary mode
        properties = dict(getattr(message.properties, "UserProperty", None) or [])
        kind, data = properties.get("type"), event
    if not isinstance(kind, str) or not isinstance(data, dict):
        return "", {}
    return kind.rsplit(".", 1)[-1], data


def _cmd_publish(args: argparse.Namespace) -> int:
    """Sign (unless already signed) and publish to the topic the document or command names."""
    import asyncio

    import aiomqtt

    from gateway.config.sections import load_config

    try:
        config = load_config(args.config)
        sealed = _read_document(args.file) if args.signed else None
        if sealed is None:
            sealed = build_signed(args, _key_for(args, config), config)
    except ValueError as exc:
        return bad_input(str(exc))
    try:
        return asyncio.run(_publish(config, sealed, args.retain, args.wait))
    except aiomqtt.MqttError as exc:
        print(f"gateway: broker {config.mqtt.host}:{config.mqtt.port}: {exc}", file=sys.stderr)
        return 1


def _cmd_secret(args: argparse.Namespace) -> int:
    """A fresh random key in hex, for any of the config's keys."""
    import secrets

    print(secrets.token_hex(args.bytes))
    return 0


def _signing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the document or command as JSON ('-': standard input)")
    p.add_argument("--key-file", help="file holding the store's downlink key in hex")
    p.add_argument("--store", help="the store it is for (default: the config's, or the file's)")
    p.add_argument(
        "--gateway", help="one gateway id, or '*' for all of the store's (documents' default)"
    )
    p.add_argument(
        "--valid-for",
        type=parse_duration,
        help="validity from now, e.g. 15m, 12h, 7d (default: 7d documents, 5m commands)",
    )
    p.add_argument(
        "--keep-times",
        action="store_true",
        help="keep the file's issued_at/expires_at instead of stamping now",
    )
    p.add_argument("--now", type=float, help=argparse.SUPPRESS)  # test vectors


def add_downlink(sub: Subparsers) -> None:
    group = sub.add_parser("downlink", help="sign and publish downlink documents and commands")
    group_sub = group.add_subparsers(dest="downlink_command", required=True)
    p = group_sub.add_parser(
        "sign", help="bind, check and sign a document or command (RFC 8785, HMAC-SHA256)"
    )
    _signing_options(p)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a gateway config: its store, key and limits as defaults (default: "
        f"${CONFIG_ENV}, else {INSTALLED_CONFIG} if it exists)",
    )
    p.set_defaults(func=_cmd_sign, config_mode="optional")
    p = group_sub.add_parser(
        "publish",
        parents=[CONFIG],
        help="sign and publish to the store's broker (commands: print the answer)",
    )
    _signing_options(p)
    p.add_argument("--signed", action="store_true", help="the file is signed already: send as is")
    p.add_argument(
        "--retain", action="store_true", help="retain the document (snapshots for new gateways)"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the gateway's answer (a command's reply, a document's "
        "downlink_applied/rejected notice)",
    )
    p.set_defaults(func=_cmd_publish)


def add_secret(sub: Subparsers) -> None:
    p = sub.add_parser("secret", help="print a fresh random hex key for the config")
    p.add_argument("--bytes", type=int, default=32, choices=[16, 24, 32, 48, 64])
    p.set_defaults(func=_cmd_secret)
