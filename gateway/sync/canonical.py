"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes a downlink signature covers.

A backend in JavaScript, Go or Java must produce the same bytes as this gateway for the same
document, so the form is the published one rather than "Python's json.dumps with sorted keys"
(which escapes non-ASCII by default and writes 0.00005 as 5e-05):

* objects: members sorted by their names' UTF-16 code units, no whitespace;
* strings: only `"`, `\\` and control characters escaped (`\\b \\f \\n \\r \\t`, else `\\u00xx`),
  everything else as UTF-8; a lone surrogate cannot be represented and is refused;
* numbers: IEEE 754 doubles written as ECMAScript's Number.prototype.toString does (shortest
  round-trip digits; plain notation for exponents -7 < e < 21, else `1e+30`, `1e-7`); NaN and
  infinities are refused, and so are integers beyond ±2^53, which a double cannot hold exactly
  (I-JSON, RFC 7493).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


class NotCanonical(ValueError):
    """A value JCS cannot represent (with where it is)."""


def canonical(value: Any) -> bytes:
    """The RFC 8785 form of a JSON value, UTF-8 encoded."""
    parts: list[str] = []
    _write(value, parts, "$")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:  # pragma: no cover - _string refuses surrogates first
        raise NotCanonical("a string holds a lone surrogate") from None


def number(value: float | int) -> str:
    """ECMAScript's Number.prototype.toString for a finite double (RFC 8785 §3.2.2.3)."""
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonical(f"integer {value} is beyond ±2^53 (not exact as a double)")
        value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise NotCanonical(f"{value!r} is not a JSON number")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    _, digits_t, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digits_t) - len(digits)  # the stripped zeros move the exponent
    k = len(digits)
    n = exponent + k  # value = 0.d1..dk × 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _string(text: str, where: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise NotCanonical(f"{where}: a lone surrogate (U+{code:04X}) is not text")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str], where: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (int, float)):
        try:
            out.append(number(value))
        except NotCanonical as exc:
            raise NotCanonical(f"{where}: {exc}") from None
    elif isinstance(value, str):
        out.append(_string(value, where))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, f"{where}[{i}]")
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, name in enumerate(sorted(value, key=_key_order(where))):
            if i:
                out.append(",")
            out.append(_string(name, f"{where} (a name)"))
            out.append(":")
            _write(value[name], out, f"{where}.{name}")
        out.append("}")
    else:
        raise NotCanonical(f"{where}: {type(value).__name__} is not a JSON value")


def _key_order(where: str) -> Any:
    def key(name: Any) -> bytes:
        if not isinstance(name, str):
            raise NotCanonical(f"{where}: member names must be strings")
        return _utf16_key(name)

    return key
