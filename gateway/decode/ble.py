"""Raw BLE advertising data → typed beacon frames.

Pure and defensive: every function takes bytes and returns a frame or ``None`` plus a short
reason; nothing raises on malformed input. Counting reasons is the caller's job (see
:class:`DecodeStats`), so the decoder stays allocation-light on the hot path.

Formats (field layouts from the public specifications):
  * AD structures: Bluetooth Core Supplement part A — length, type, data; a zero length
    ends the significant part.
  * iBeacon: manufacturer data, company 0x004C, then 0x02 0x15, UUID(16), major(2),
    minor(2), measured power at 1 m (int8). Big-endian.
  * AltBeacon: manufacturer data, any company, then 0xBE 0xAC, beacon id(20), reference
    RSSI at 1 m (int8), manufacturer reserved(1).
  * Eddystone: 16-bit service data for UUID 0xFEAA; frame type 0x00 UID (tx power at 0 m,
    namespace 10, instance 6, RFU 2 optional), 0x10 URL (tx power, scheme, encoded URL
    up to 17 bytes), 0x20 TLM version 0 (VBATT mV, TEMP 8.8 signed, ADV_CNT, SEC_CNT in
    0.1 s) or version 1 (encrypted: ETLM 12, salt 2, MIC 2), 0x30 EID (tx power, EID 8).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.model import (
    Advert,
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    Frame,
    IBeacon,
)

AD_SERVICE_DATA_16 = 0x16
AD_MANUFACTURER_DATA = 0xFF

COMPANY_APPLE = 0x004C
EDDYSTONE = "feaa"
BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"

URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS = (
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
    ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov",
)  # fmt: skip
# Byte → text for every legal Eddystone-URL byte; None marks reserved codes.
_URL_TABLE: tuple[str | None, ...] = tuple(
    URL_EXPANSIONS[b] if b < len(URL_EXPANSIONS) else (chr(b) if 0x21 <= b <= 0x7E else None)
    for b in range(256)
)


@dataclass(slots=True)
class AdFields:
    mfr: dict[int, bytes] = field(default_factory=dict)
    svc: dict[str, bytes] = field(default_factory=dict)


# Kept when the payload's leading structures are whole but bytes after them are not (a
# structure running past the end: a trailing RSSI byte some scanners append, a cut PDU). Core
# spec scanners and Home Assistant keep the whole structures; so do we, and say so.
TRAILING_GARBAGE = "ad_trailing_garbage"


def parse_ad(payload: bytes) -> tuple[AdFields | None, str]:
    """Split advertising data into manufacturer and 16-bit service data.

    A structure that runs past the end: if it is the first one, the payload is malformed
    (`ad_truncated`); after whole structures, those are kept and the rest is dropped
    (`ad_trailing_garbage`, returned beside the fields). Nothing in the garbage is guessed at.
    """
    fields = AdFields()
    i, n = 0, len(payload)
    while i < n:
        length = payload[i]
        if length == 0:
            break
        end = i + 1 + length
        if end > n:
            if i == 0:
                return None, "ad_truncated"
            return fields, TRAILING_GARBAGE
        ad_type = payload[i + 1]
        if ad_type == AD_MANUFACTURER_DATA and length >= 3:
            fields.mfr[payload[i + 2] | (payload[i + 3] << 8)] = payload[i + 4 : end]
        elif ad_type == AD_SERVICE_DATA_16 and length >= 3:
            fields.svc[f"{payload[i + 3]:02x}{payload[i + 2]:02x}"] = payload[i + 4 : end]
        i = end
    return fields, ""


def short_uuid(key: str) -> str:
    """bleak names service data by full 128-bit UUID; 16-bit ones fold to 4 hex digits."""
    key = key.lower()
    if len(key) == 36 and key.startswith("0000") and key.endswith(BASE_UUID_SUFFIX):
        return key[4:8]
    return key


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _int8(b: int) -> int:
    return b - 256 if b > 127 else b


def decode_ibeacon(data: bytes) -> tuple[IBeacon | None, str]:
    """Apple manufacturer data (after the company id) as an iBeacon."""
    if data[:2] != b"\x02\x15":
        return None, "apple_not_ibeacon"
    if len(data) < 23:
        return None, "ibeacon_short"
    return (
        IBeacon(
            format_uuid(data[2:18]),
            (data[18] << 8) | data[19],
            (data[20] << 8) | data[21],
            _int8(data[22]),
        ),
        "",
    )


def decode_altbeacon(company: int, data: bytes) -> tuple[AltBeacon | None, str]:
    """Manufacturer data starting 0xBE 0xAC as an AltBeacon (24 bytes after the company)."""
    if len(data) < 24:
        return None, "altbeacon_short"
    return (
        AltBeacon(company, data[2:22].hex(), _int8(data[22]), data[23]),
        "",
    )


def decode_eddystone(data: bytes) -> tuple[Frame | None, str]:
    if not data:
        return None, "eddystone_empty"
    kind = data[0]
    if kind == 0x00:
        if len(data) < 18:
            return None, "eddystone_uid_short"
        return EddystoneUID(data[2:12].hex(), data[12:18].hex(), _int8(data[1])), ""
    if kind == 0x10:
        if len(data) < 3:
            return None, "eddystone_url_short"
        if len(data) > 20:
            return None, "eddystone_url_long"
        if data[2] >= len(URL_SCHEMES):
            return None, "eddystone_url_scheme"
        parts = [URL_SCHEMES[data[2]]]
        for b in data[3:]:
            text = _URL_TABLE[b]
            if text is None:
                return None, "eddystone_url_reserved_byte"
            parts.append(text)
        return EddystoneURL("".join(parts), _int8(data[1])), ""
    if kind == 0x20:
        if len(data) < 2:
            return None, "eddystone_tlm_short"
        version = data[1]
        if version == 0x00:
            if len(data) < 14:
                return None, "eddystone_tlm_short"
            raw_temp = (data[4] << 8) | data[5]
            temperature = None if raw_temp == 0x8000 else _int16(raw_temp) / 256.0
            return (
                EddystoneTLM(
                    voltage=(data[2] << 8) | data[3],
                    temperature=temperature,
                    adv_count=int.from_bytes(data[6:10], "big"),
                    sec_count=int.from_bytes(data[10:14], "big"),
                ),
                "",
            )
        if version == 0x01:
            if len(data) < 18:
                return None, "eddystone_etlm_short"
            return EddystoneETLM(data[2:14].hex(), data[14:16].hex(), data[16:18].hex()), ""
        return None, "eddystone_tlm_version"
    if kind == 0x30:
        if len(data) < 10:
            return None, "eddystone_eid_short"
        return EddystoneEID(data[2:10].hex(), _int8(data[1])), ""
    return None, "eddystone_unknown_frame"


def _int16(v: int) -> int:
    return v - 0x10000 if v & 0x8000 else v


def decode_fields(mfr: dict[int, bytes], svc: dict[str, bytes]) -> tuple[Frame | None, str]:
    """The beacon frame in manufacturer/service data, or why there is none.

    Identifying frames win over telemetry; with several manufacturer entries (rare, but
    BlueZ merges what a device sent over time) the first beacon among them is taken.
    """
    reason = ""
    frame: Frame | None
    for company, data in mfr.items():
        if company == COMPANY_APPLE and data[:1] == b"\x02":
            frame, reason = decode_ibeacon(data)
        elif data[:2] == b"\xbe\xac":
            frame, reason = decode_altbeacon(company, data)
        else:
            reason = reason or ("apple_not_ibeacon" if company == COMPANY_APPLE else "")
            continue
        if frame is not None:
            return frame, ""
    eddystone = svc.get(EDDYSTONE)
    if eddystone is None and svc:
        for key, data in svc.items():
            if short_uuid(key) == EDDYSTONE:
                eddystone = data
                break
    if eddystone is not None:
        return decode_eddystone(eddystone)
    if reason:
        return None, reason
    if mfr:
        return None, "unknown_manufacturer"
    if svc:
        return None, "unknown_service"
    return None, "no_beacon_data"


def decode_advert(advert: Advert) -> tuple[Frame | None, str]:
    """Decode whatever the source gave us: raw AD bytes and/or bleak's dicts.

    A frame comes with reason "" or `ad_trailing_garbage` (decoded from the whole leading
    structures); no frame, with the reason there is none."""
    mfr, svc = advert.mfr, advert.svc
    if advert.ad:
        if not mfr and not svc:
            return decode_payload(advert.ad)
        fields, reason = parse_ad(advert.ad)
        if fields is None:
            return None, reason
        if mfr or svc:
            # bleak's dicts win where both exist: they are what BlueZ already merged.
            mfr = {**fields.mfr, **mfr}
            svc = {**fields.svc, **svc}
        else:
            mfr, svc = fields.mfr, fields.svc
    return decode_fields(mfr, svc)


# Adverts repeat (a beacon sends the same bytes ten times a second; 2,315 distinct payloads
# among 27,697 real captures), so the decode of a raw payload is cached on its bytes, as Home
# Assistant's parser does. Frames are immutable, so a cached one is safe to hand out again.
# The cache is a dict whose `__getitem__` is the decoder: a hit is one dict lookup in C, with
# no Python frame (functools.lru_cache wraps a bytes argument in a key tuple on every call).
DECODE_CACHE_SIZE = 4096


def _decode_payload(payload: bytes) -> tuple[Frame | None, str]:
    """Raw advertising data → (frame, "" or `ad_trailing_garbage`) or (None, reason)."""
    fields, note = parse_ad(payload)
    if fields is None:
        return None, note
    frame, reason = decode_fields(fields.mfr, fields.svc)
    if frame is None:
        # Garbage after the whole structures most likely cut the beacon's own structure.
        return None, "ad_truncated" if note else reason
    return frame, note


class DecodeCache(dict[bytes, tuple[Frame | None, str]]):
    """Decoded payloads by their raw bytes, bounded (emptied when full: cheap, and the
    payloads of the devices present come back within a second)."""

    def __missing__(self, payload: bytes) -> tuple[Frame | None, str]:
        decoded = _decode_payload(payload)
        if len(self) >= DECODE_CACHE_SIZE:
            self.clear()
        self[payload] = decoded
        return decoded


DECODE_CACHE = DecodeCache()
# Raw advertising data (bytes) → (frame, "" or `ad_trailing_garbage`) or (None, reason).
decode_payload: Callable[[bytes], tuple[Frame | None, str]] = DECODE_CACHE.__getitem__


def company_of(payload: bytes) -> int | None:
    """The first manufacturer's company id in a payload (for reports on unknown data)."""
    fields, _ = parse_ad(payload)
    if fields is None or not fields.mfr:
        return None
    return next(iter(fields.mfr))


@dataclass(slots=True)
class DecodeStats:
    """Counts of decoded frames by type and of rejections by reason."""

    frames: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    # Decoded all the same, with a remark (`ad_trailing_garbage`): counted by reason too.
    lenient: Counter[str] = field(default_factory=Counter)

    def record(self, frame: Frame | None, reason: str) -> None:
        if frame is None:
            self.rejected[reason] += 1
        else:
            self.frames[frame.kind] += 1
            if reason:
                self.lenient[reason] += 1
