"""Signed messages from the backend: the bytes a signature covers, and what it must bind.

Every downlink document and command carries an HMAC-SHA256 signature with the store's
downlink key over its RFC 8785 canonical JSON without "sig" (`gateway.sync.canonical`), and
the signature covers what it authorises: the store, the gateway (or "*" for every gateway of
the store), the family or command, the version, when it was issued and until when it holds.
`verify` reads a payload through the bounded parser (`gateway.sync.wire`) and checks the
signature; `check_envelope` says whether a verified message is meant for this gateway now;
`NonceCache` and `check_command` keep a command from running twice. The recipe for backends
is docs/downlink.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.store.db import private_file
from gateway.sync import wire
from gateway.sync.canonical import NotCanonical
from gateway.sync.canonical import canonical as jcs

log = logging.getLogger(__name__)

COMMANDS = ("flush", "diagnose", "reload")
CLOCK_SKEW_S = 300.0  # how far ahead of this box's clock an issue time may be
COMMAND_MAX_VALIDITY_S = 3600.0
DEFAULT_MAX_VALIDITY_S = 30 * 86400.0
DOCUMENT_FIELDS = frozenset(
    {"family", "kind", "version", "store", "gateway", "issued_at", "expires_at", "data", "sig"}
)
COMMAND_FIELDS = frozenset(
    {"command", "args", "store", "gateway", "issued_at", "expires_at", "nonce", "sig"}
)
ALL_GATEWAYS = "*"


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes the signature covers: RFC 8785 of the document without "sig"."""
    return jcs({k: v for k, v in document.items() if k != "sig"})


def sign(key: bytes, document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the document with its signature (the backend side, and tests)."""
    return {**document, "sig": hmac.new(key, canonical(document), hashlib.sha256).hexdigest()}


def seal(
    key: bytes,
    document: dict[str, Any],
    *,
    store: str,
    now: float,
    gateway: str = ALL_GATEWAYS,
    valid_s: float = 7 * 86400.0,
) -> dict[str, Any]:
    """Bind a document or command to a store, a gateway and a time window, then sign it.
    Fields the document already has are kept (`gateway downlink sign` fills the others)."""
    bound = {
        "store": store,
        "gateway": gateway,
        "issued_at": now,
        "expires_at": now + valid_s,
        **{k: v for k, v in document.items() if k != "sig"},
    }
    return sign(key, bound)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Binding:
    """What a signature must name to be accepted by this gateway."""

    store: str
    gateway: str
    max_validity_s: float = DEFAULT_MAX_VALIDITY_S


def verify(key: bytes, payload: bytes, max_bytes: int = 4 << 20) -> dict[str, Any] | Rejected:
    """The signed JSON object in `payload`, or why it is refused. Size and nesting are bounded
    before parsing; nothing here raises."""
    if not key:
        return Rejected("no_downlink_key", "mqtt.downlink_key is not configured")
    try:
        document = wire.parse(payload, max_bytes=max_bytes)
    except wire.WireRejected as exc:
        return Rejected(exc.reason, exc.detail)
    if not isinstance(document, dict):
        return Rejected("invalid_payload", "expected a JSON object")
    sig = document.get("sig")
    if not isinstance(sig, str):
        return Rejected("unsigned", "no 'sig'")
    try:
        body = canonical(document)
    except NotCanonical as exc:
        return Rejected("invalid_payload", f"cannot be canonicalised (RFC 8785): {exc}")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        return Rejected("bad_signature", "signature does not match the downlink key")
    return document


def _time(document: dict[str, Any], key: str) -> float:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}: expected seconds since 1970 (UTC), a number")
    return float(value)


def check_envelope(
    document: dict[str, Any],
    binding: Binding,
    now: float,
    *,
    command: bool = False,
    held_version: int | None = None,
) -> Rejected | None:
    """None when a verified document (or command) is meant for this gateway now, else why
    not. A document whose version this gateway already holds skips the time checks: an
    expired copy of what was applied is a harmless duplicate."""
    fields = COMMAND_FIELDS if command else DOCUMENT_FIELDS
    unknown = sorted(set(document) - fields)
    if unknown:
        return Rejected(
            "unknown_field", f"{', '.join(unknown)}; expected {', '.join(sorted(fields))}"
        )
    store, gateway = document.get("store"), document.get("gateway")
    if not isinstance(store, str) or not isinstance(gateway, str):
        return Rejected(
            "unbound",
            "store and gateway are required (signatures bind them; sign with "
            "`gateway downlink sign`)",
        )
    if store != binding.store:
        return Rejected("wrong_store", f"for store {store!r}; this is {binding.store!r}")
    if gateway not in (ALL_GATEWAYS, binding.gateway):
        return Rejected("wrong_gateway", f"for gateway {gateway!r}; this is {binding.gateway!r}")
    if command and gateway == ALL_GATEWAYS:
        # A command acts on one box: a "*" one, sniffed on any gateway's topic, would run on
        # every other gateway of the store too (each has its own nonce cache).
        return Rejected("wrong_gateway", "a command must name its gateway, not '*'")
    try:
        issued, expires = _time(document, "issued_at"), _time(document, "expires_at")
    except ValueError as exc:
        return Rejected("unbound", str(exc))
    longest = COMMAND_MAX_VALIDITY_S if command else binding.max_validity_s
    if not 0 < expires - issued <= longest:
        return Rejected(
            "invalid_validity",
            f"valid for {expires - issued:.0f} s; expires_at must follow issued_at by at most "
            f"{longest:.0f} s",
        )
    version = document.get("version")
    if held_version is not None and version == held_version:
        return None
    if issued > now + CLOCK_SKEW_S:
        return Rejected(
            "not_yet_valid",
            f"issued {issued - now:.0f} s ahead of this gateway's clock ({now:.0f}); is the "
            "clock synchronised?",
        )
    if expires <= now:
        return Rejected("expired", f"expired {now - expires:.0f} s ago (clock {now:.0f})")
    return None


class NonceCache:
    """Commands seen and not yet expired (replay protection). Bounded: only correctly signed
    commands get here, so the bound is a safety net, not the defence. With a `path`, the
    nonces outlive a restart: a command sniffed before a reboot cannot be replayed after it
    while it is still valid."""

    def __init__(self, size: int = 4096, path: Path | None = None) -> None:
        self.seen: OrderedDict[str, float] = OrderedDict()  # nonce -> expires_at
        self.size = size
        self.path = path
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("command nonces in %s unreadable (%s); starting empty", path, exc)
            return
        if isinstance(stored, dict):
            valid = [
                (float(until), nonce)
                for nonce, until in stored.items()
                if isinstance(nonce, str) and isinstance(until, (int, float))
            ]
            for until, nonce in sorted(valid)[-self.size :]:
                self.seen[nonce] = until

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            temporary = self.path.with_suffix(".tmp")
            private_file(temporary)
            temporary.write_text(json.dumps(dict(self.seen)), encoding="utf-8")
            temporary.replace(self.path)
        except OSError as exc:  # a full disk: the cache still holds in memory
            log.warning("command nonces not saved to %s: %s", self.path, exc)

    def fresh(self, nonce: str, expires_at: float, now: float) -> str:
        for old, until in list(self.seen.items()):
            if until > now:
                break
            del self.seen[old]
        if nonce in self.seen:
            return "replayed"
        self.seen[nonce] = expires_at
        while len(self.seen) > self.size:
            self.seen.popitem(last=False)
        self._save()
        return ""


def check_command(document: dict[str, Any], nonces: NonceCache, now: float) -> str:
    """'' when a verified, bound command may run, else the reason it may not."""
    if document.get("command") not in COMMANDS:
        return "unknown_command"
    nonce, args = document.get("nonce"), document.get("args", {})
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128 or not isinstance(args, dict):
        return "invalid_payload"
    try:
        expires_at = _time(document, "expires_at")
    except ValueError:
        return "invalid_payload"
    return nonces.fresh(nonce, expires_at, now)
