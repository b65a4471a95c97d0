"""The JSON-lines trace format shared by replay, recording and the stable CLI commands.

One object per line:
  {"t": 1763892000.25, "kind": "ble", "receiver": "gw-front", "address": "F0:12:..",
   "rssi": -67, "ad": "<hex AD structures>" | "mfr": {"0x004c": "<hex>"}, "svc": {"feaa": "<hex>"}}
  {"t": 1763892100.0, "kind": "nfc", "reader": "counter-reader", "uid": "<hex>", "ndef": "<hex>"}
`adapter` is accepted for `receiver`. A bad line is a `TraceError` naming the line and field;
it never stops the lines after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from gateway.model import Advert, Tap


@dataclass(frozen=True, slots=True)
class TraceError:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return (
            f"line {self.line}: {self.field}: {self.reason}"
            if self.field
            else (f"line {self.line}: {self.reason}")
        )


def _hex(obj: dict[str, Any], key: str, line: int, required: bool = False) -> bytes | TraceError:
    value = obj.get(key)
    if value is None:
        return TraceError(line, key, "missing") if required else b""
    if not isinstance(value, str):
        return TraceError(line, key, "expected a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        return TraceError(line, key, "not valid hex")


def _hex_dict(
    obj: dict[str, Any], key: str, line: int, int_keys: bool
) -> dict[Any, bytes] | TraceError:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        return TraceError(line, key, "expected an object of hex strings")
    out: dict[Any, bytes] = {}
    for k, v in value.items():
        try:
            name: Any = int(k, 0) if int_keys else str(k).lower()
            out[name] = bytes.fromhex(v)
        except (ValueError, TypeError):
            return TraceError(line, f"{key}.{k}", "bad key or hex value")
    return out


def parse_line(text: str, line: int) -> Advert | Tap | TraceError | None:
    """Parse one trace line; None for blank lines and comments."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return TraceError(line, "", f"not JSON ({exc.msg})")
    return parse_object(obj, line)


# Seconds since the Unix epoch of 2100-01-01 UTC: no recording or sighting is later. Beyond it
# a timestamp is garbage (1e15 would even overflow date arithmetic downstream).
LATEST_T = 4_102_444_800.0


def parse_object(obj: Any, line: int) -> Advert | Tap | TraceError:
    """One decoded trace object (also the sightings peers share) → Advert or Tap."""
    if not isinstance(obj, dict):
        return TraceError(line, "", "expected a JSON object")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        return TraceError(line, "t", "expected a non-negative number of seconds")
    if t >= LATEST_T:
        return TraceError(line, "t", f"{t:.6g} is after 2100-01-01: not a time anything was heard")
    kind = obj.get("kind")
    if kind == "ble":
        receiver = obj.get("receiver", obj.get("adapter"))
        if not isinstance(receiver, str) or not receiver:
            return TraceError(line, "receiver", "missing receiver/adapter id")
        rssi = obj.get("rssi")
        if isinstance(rssi, bool) or not isinstance(rssi, (int, float)) or not math.isfinite(rssi):
            return TraceError(line, "rssi", "expected a number (dBm)")
        if not -127 <= rssi < 0:
            return TraceError(line, "rssi", f"{rssi} dBm is outside -127..-1")
        ad = _hex(obj, "ad", line)
        if isinstance(ad, TraceError):
            return ad
        mfr = _hex_dict(obj, "mfr", line, int_keys=True)
        if isinstance(mfr, TraceError):
            return mfr
        svc = _hex_dict(obj, "svc", line, int_keys=False)
        if isinstance(svc, TraceError):
            return svc
        address = obj.get("address", "")
        if not isinstance(address, str):
            return TraceError(line, "address", "expected a string")
        return Advert(float(t), receiver, address, int(rssi), ad, mfr, svc)
    if kind == "nfc":
        reader = obj.get("reader")
        if not isinstance(reader, str) or not reader:
            return TraceError(line, "reader", "missing reader id")
        uid = _hex(obj, "uid", line, required=True)
        if isinstance(uid, TraceError):
            return uid
        if not 4 <= len(uid) <= 10:
            return TraceError(line, "uid", f"{len(uid)} bytes; NFC UIDs have 4, 7 or 10")
        ndef = _hex(obj, "ndef", line)
        if isinstance(ndef, TraceError):
            return ndef
        return Tap(float(t), reader, uid, ndef)
    return TraceError(line, "kind", f"unknown kind {kind!r}; use 'ble' or 'nfc'")


def advert_line(a: Advert) -> str:
    return json.dumps(advert_object(a), separators=(",", ":"))


def advert_object(a: Advert, with_address: bool = True) -> dict[str, Any]:
    obj: dict[str, Any] = {"t": round(a.t, 3), "kind": "ble", "receiver": a.receiver}
    if with_address:
        obj["address"] = a.address
    obj["rssi"] = a.rssi
    if a.ad:
        obj["ad"] = a.ad.hex()
    if a.mfr:
        obj["mfr"] = {f"0x{k:04x}": v.hex() for k, v in a.mfr.items()}
    if a.svc:
        obj["svc"] = {k: v.hex() for k, v in a.svc.items()}
    return obj


def tap_line(tap: Tap) -> str:
    obj: dict[str, Any] = {
        "t": round(tap.t, 3),
        "kind": "nfc",
        "reader": tap.reader,
        "uid": tap.uid.hex(),
    }
    if tap.ndef:
        obj["ndef"] = tap.ndef.hex()
    return json.dumps(obj, separators=(",", ":"))
