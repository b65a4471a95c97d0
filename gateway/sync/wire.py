"""The one way JSON from the network is read: bounded before it is parsed.

Every message from the broker (downlink documents, commands, peer sightings) is hostile until
proven otherwise: any client of the store's broker can publish, and a retained message is
delivered again at every connection. So before `json.loads` sees a byte:

* the payload's size is checked against the caller's limit;
* its nesting depth is measured without parsing (strings blanked out, then one bracket level
  removed per pass, in C-speed regex passes) — CPython's decoder raises RecursionError on deep
  input, and that exception used to end the MQTT session;
* `NaN`/`Infinity` literals, numbers too long to be meaningful and malformed UTF-8 are refused.

Whatever goes wrong comes back as `WireRejected(reason, detail)`, never as another exception.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # documents and batches are a few levels deep; 32 leaves room, 1000 crashes
MAX_NUMBER_CHARS = 40  # a float's repr fits in 24; anything longer is an attack or an error

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: one pass, no backtracking
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")


class WireRejected(ValueError):
    """A message refused before or while parsing, with a reason for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def nesting_problem(payload: bytes, max_depth: int) -> str:
    """'' when JSON text nests at most `max_depth` deep, else why not ("too_deep", or
    "unbalanced" brackets, which no parser would accept either)."""
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKET)
    for _ in range(max_depth):
        if not brackets:
            return ""
        brackets = _INNERMOST.sub(b"", brackets)
    if not brackets:
        return ""
    opened = brackets.count(b"[") + brackets.count(b"{")
    return "too_deep" if 2 * opened == len(brackets) else "unbalanced"


def _refuse_constant(name: str) -> Any:
    raise WireRejected("invalid_number", f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise WireRejected("invalid_number", f"an integer of {len(text)} digits")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise WireRejected("invalid_number", f"a number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise WireRejected("invalid_number", f"{text} is beyond a double's range")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose member names are unique (I-JSON): with a name twice, which one a
    signature covered would depend on the parser."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise WireRejected("duplicate_member", f"{name!r} appears twice in one object")
            seen.add(name)
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> bool:
    """True when a string in `value` holds a surrogate half (only `\\uD8xx` escapes can put
    one there): such text cannot be encoded, signed or stored."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    return False


def parse(
    payload: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH, checked_numbers: bool = False
) -> Any:
    """The JSON value of `payload`, or WireRejected with one of: too_large, too_deep,
    invalid_utf8, invalid_json, invalid_number, duplicate_member.

    `checked_numbers`: the caller range-checks every number it reads (forwarded sightings,
    thousands of numbers a frame), so they are parsed in C without the per-number bounds
    above; `NaN`/`Infinity` literals are still refused, an integer is still bounded by
    Python's digit limit (a ValueError here), and a float beyond a double's range comes back
    as an infinity that no range check lets through."""
    if len(payload) > max_bytes:
        raise WireRejected("too_large", f"{len(payload)} bytes; at most {max_bytes}")
    problem = nesting_problem(payload, max_depth)
    if problem == "too_deep":
        raise WireRejected("too_deep", f"nested deeper than {max_depth} levels")
    if problem:
        raise WireRejected("invalid_json", "brackets do not balance")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireRejected("invalid_utf8", f"byte {exc.start}: not UTF-8") from None
    try:
        if checked_numbers:
            value = json.loads(
                text, parse_constant=_refuse_constant, object_pairs_hook=_unique_members
            )
        else:
            value = json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_int=_bounded_int,
                parse_float=_bounded_float,
                object_pairs_hook=_unique_members,
            )
    except WireRejected:
        raise
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise WireRejected("invalid_json", f"{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # belt and braces
        raise WireRejected("invalid_json", f"{type(exc).__name__}: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        raise WireRejected("invalid_json", "a string holds a lone UTF-16 surrogate (\\uD800-DFFF)")
    return value


class RejectionLog:
    """Which rejections are worth a log line and an uplinked notice right now.

    Every rejection is counted (`counts`, for /metrics and /status). Telling about each one
    is not: 2,000 junk messages must not become 2,000 outbox rows and log lines. Per reason a
    token bucket lets `burst` through at once and then one per `every_s`; what it holds back
    is reported with the next one let through (`suppressed`).
    """

    def __init__(self, burst: int = 10, every_s: float = 6.0) -> None:
        self.burst, self.every_s = burst, every_s
        self.counts: dict[str, int] = {}
        self._tokens: dict[str, tuple[float, float]] = {}  # reason -> (tokens, at)
        self._held: dict[str, int] = {}
        self.max_reasons = 64  # reasons are our own words, but bound the tables anyway

    def record(self, reason: str, now: float) -> int | None:
        """Count one rejection. None: stay quiet; else how many were held back before it."""
        if reason not in self.counts and len(self.counts) >= self.max_reasons:
            reason = "other"
        self.counts[reason] = self.counts.get(reason, 0) + 1
        tokens, at = self._tokens.get(reason, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) / self.every_s)
        if tokens < 1.0:
            self._tokens[reason] = (tokens, now)
            self._held[reason] = self._held.get(reason, 0) + 1
            return None
        self._tokens[reason] = (tokens - 1.0, now)
        return self._held.pop(reason, 0)


# --- signed frames between a store's gateways ----------------------------------------------

SIGNATURE_HEX = 64  # HMAC-SHA256 in hex


def frame_mac(key: bytes, topic: str, body: bytes) -> bytes:
    """The MAC of a frame: over the topic and the body, so a frame cannot be moved."""
    return hmac.new(key, topic.encode() + b"\n" + body, hashlib.sha256).hexdigest().encode()


def seal_frame(magic: bytes, key: bytes, topic: str, body: bytes) -> bytes:
    """`magic` + the MAC in hex + a new line + the body (peer sightings, hand-overs)."""
    return magic + frame_mac(key, topic, body) + b"\n" + body


def open_frame(magic: bytes, key: bytes, topic: str, payload: bytes) -> bytes:
    """The body of a sealed frame, checked before a byte of it is parsed; WireRejected
    `unsigned` or `bad_signature` otherwise."""
    header_end = len(magic) + SIGNATURE_HEX
    if not payload.startswith(magic) or payload[header_end : header_end + 1] != b"\n":
        raise WireRejected("unsigned", f"expected {magic.decode()}<signature> and a new line")
    body = payload[header_end + 1 :]
    if not hmac.compare_digest(payload[len(magic) : header_end], frame_mac(key, topic, body)):
        raise WireRejected("bad_signature", "does not match the store's peer key")
    return body
