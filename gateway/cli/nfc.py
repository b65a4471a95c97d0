"""`gateway nfc`: parse NDEF messages, read a tag, provision one."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from gateway.cli._common import CONFIG_ENV, INSTALLED_CONFIG, bad_input
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers
    from gateway.sources.nfc import TagRead


def _cmd_nfc_parse(args: argparse.Namespace) -> int:
    """One hex NDEF message per line on stdin → one JSON object per line."""
    from gateway.decode.ndef import parse_hex_line

    for line in sys.stdin:  # exactly one output line per input line, blank ones included
        print(json.dumps(parse_hex_line(line), ensure_ascii=False))
    return 0


def _read_json(read: TagRead) -> dict[str, object]:
    from gateway.decode.ndef import parse_message

    out: dict[str, object] = {
        "uid": read.uid.hex(),
        "technology": read.technology,
        "product": read.product,
        "ndef_hex": read.ndef.hex(),
    }
    out |= parse_message(read.ndef) if read.ndef else {"records": []}
    return out


def _cmd_nfc_read(args: argparse.Namespace) -> int:
    """Print what a tap yields (for staff checking tags and readers)."""
    from gateway.sources.nfc import read_once

    try:
        read = read_once(args.device, SystemClock(), args.timeout)
    except OSError as exc:
        return bad_input(str(exc))
    if read is None:
        print(f"gateway: no tag within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(json.dumps(_read_json(read), ensure_ascii=False))
    return 0


def _cmd_nfc_write(args: argparse.Namespace) -> int:
    """Provision a tag (shelf URI or signed loyalty token), verified by reading it back."""
    import ndef

    from gateway.config.sections import load_config
    from gateway.identity import loyalty
    from gateway.sources.nfc import write_ndef

    if args.loyalty:
        if args.config is None:
            return bad_input(
                "--loyalty signs the card with this store's nfc.loyalty_key: pass --config "
                f"FILE (or set ${CONFIG_ENV}); no config found at {INSTALLED_CONFIG}"
            )
        config = load_config(args.config)
        key = bytes.fromhex(config.nfc.loyalty_key)
        message = loyalty.token_record(key, args.loyalty, args.token_id)
    else:
        message = b"".join(ndef.message_encoder([ndef.UriRecord(args.uri)]))
    try:
        read = write_ndef(args.device, message, SystemClock(), args.timeout)
    except (OSError, TimeoutError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"written": True} | _read_json(read), ensure_ascii=False))
    return 0


def add_nfc(sub: Subparsers) -> None:
    nfc = sub.add_parser("nfc", help="NFC tags")
    nfc_sub = nfc.add_subparsers(dest="nfc_command", required=True)
    p = nfc_sub.add_parser("parse", help="hex NDEF messages on stdin → JSON records per line")
    p.set_defaults(func=_cmd_nfc_parse)
    p = nfc_sub.add_parser("read", help="wait for one tag and print its UID and records")
    p.add_argument("--device", required=True, help="nfcpy device, e.g. usb:072f:2200")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=_cmd_nfc_read)
    p = nfc_sub.add_parser("write", help="write a URI or a signed loyalty token, verified")
    p.add_argument("--device", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--uri", help="shelf tag: the URL to write")
    what.add_argument("--loyalty", metavar="PROFILE", help="loyalty card for this profile id")
    p.add_argument("--token-id", default="card-1", help="loyalty token id (for revocation)")
    # Optional: only --loyalty needs a key from the config.
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"config with nfc.loyalty_key (--loyalty only); default: ${CONFIG_ENV}, else "
        f"{INSTALLED_CONFIG}",
    )
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=_cmd_nfc_write, config_mode="optional")
