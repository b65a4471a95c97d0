"""Raw BLE advertising data → typed beacon frames.

Pure and defensive: every function takes bytes and returns a frame or ``None`` plus a short
reason; nothing raises on malformed input. Counting reasons is the caller's job (see
:class:`DecodeStats`), so the decoder stays allocation-light on the hot path.

References: Bluetooth Core Supplement part A (AD structure = length, type, data), Apple's
iBeacon format (company 0x004C, beacon type 0x02, length 0x15).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .model import Advert, Frame, IBeacon

AD_MANUFACTURER_DATA = 0xFF
AD_SERVICE_DATA_16 = 0x16

COMPANY_APPLE = 0x004C
IBEACON_PREFIX = b"\x02\x15"
IBEACON_LENGTH = 2 + 16 + 2 + 2 + 1  # prefix, uuid, major, minor, tx power


@dataclass(slots=True)
class AdFields:
    mfr: dict[int, bytes] = field(default_factory=dict)
    svc: dict[str, bytes] = field(default_factory=dict)


def parse_ad(payload: bytes) -> tuple[AdFields | None, str]:
    """Split advertising data into manufacturer and service data.

    A zero length byte ends the significant part (the rest is padding, as in the spec).
    A structure that runs past the end makes the whole payload malformed: scanners hand
    over truncated/garbled PDUs and we must not guess at them.
    """
    fields = AdFields()
    i, n = 0, len(payload)
    while i < n:
        length = payload[i]
        if length == 0:
            break
        end = i + 1 + length
        if end > n:
            return None, "ad_truncated"
        ad_type = payload[i + 1]
        data = payload[i + 2 : end]
        if ad_type == AD_MANUFACTURER_DATA and len(data) >= 2:
            fields.mfr[data[0] | (data[1] << 8)] = bytes(data[2:])
        elif ad_type == AD_SERVICE_DATA_16 and len(data) >= 2:
            fields.svc[f"{data[1]:02x}{data[0]:02x}"] = bytes(data[2:])
        i = end
    return fields, ""


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def decode_ibeacon(data: bytes) -> tuple[IBeacon | None, str]:
    """Decode Apple manufacturer data (without the company id) as an iBeacon."""
    if data[:2] != IBEACON_PREFIX:
        return None, "apple_not_ibeacon"
    if len(data) < IBEACON_LENGTH:
        return None, "ibeacon_short"
    tx = data[22]
    return (
        IBeacon(
            uuid=format_uuid(data[2:18]),
            major=(data[18] << 8) | data[19],
            minor=(data[20] << 8) | data[21],
            tx_power=tx - 256 if tx > 127 else tx,
        ),
        "",
    )


def decode_fields(mfr: dict[int, bytes], svc: dict[str, bytes]) -> tuple[Frame | None, str]:
    apple = mfr.get(COMPANY_APPLE)
    if apple is not None:
        return decode_ibeacon(apple)
    if mfr:
        return None, "unknown_manufacturer"
    if svc:
        return None, "unknown_service"
    return None, "no_beacon_data"


def decode_advert(advert: Advert) -> tuple[Frame | None, str]:
    """Decode whatever the source gave us: raw AD bytes and/or bleak's dicts."""
    mfr, svc = advert.mfr, advert.svc
    if advert.ad:
        fields, reason = parse_ad(advert.ad)
        if fields is None:
            return None, reason
        # bleak's dicts win where both exist: they are what BlueZ already merged.
        mfr = {**fields.mfr, **mfr}
        svc = {**fields.svc, **svc}
    return decode_fields(mfr, svc)


def decode_payload(payload: bytes) -> tuple[Frame | None, str]:
    fields, reason = parse_ad(payload)
    if fields is None:
        return None, reason
    return decode_fields(fields.mfr, fields.svc)


@dataclass(slots=True)
class DecodeStats:
    """Counts of decoded frames by type and of rejections by reason."""

    frames: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def record(self, frame: Frame | None, reason: str) -> None:
        if frame is None:
            self.rejected[reason] += 1
        else:
            self.frames[type(frame).__name__.lower()] += 1
