"""The BLE decoder: specification examples, malformed input, real captures, fuzz."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.decode.ble import (
    DECODE_CACHE,
    DECODE_CACHE_SIZE,
    DecodeStats,
    decode_advert,
    decode_payload,
    parse_ad,
)
from gateway.decode.frames import frame_json
from gateway.model import Advert, IBeacon
from gateway.sim.walkers import ibeacon_ad
from tests.conftest import shared_data

# Apple's AirLocate sample: UUID E2C56DB5-..., major 0, minor 0, measured power -59 (0xC5),
# as a scanner reports it (flags AD structure + manufacturer data).
AIRLOCATE = "0201061aff4c000215e2c56db5dffb48d2b060d0f5a71096e000000000c5"


def test_ibeacon_spec_example() -> None:
    frame, reason = decode_payload(bytes.fromhex(AIRLOCATE))
    assert reason == ""
    assert frame == IBeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 0, 0, -59)


def test_ibeacon_fields_big_endian_and_signed_power() -> None:
    payload = ibeacon_ad("01234567-89ab-cdef-0123-456789abcdef", 0x1234, 0xFFFE, -77)
    frame, _ = decode_payload(payload)
    assert frame == IBeacon("01234567-89ab-cdef-0123-456789abcdef", 0x1234, 0xFFFE, -77)
    assert frame.identity == "ibeacon:01234567-89ab-cdef-0123-456789abcdef:4660:65534"


def test_bleak_style_dicts_decode_like_raw_bytes() -> None:
    raw = bytes.fromhex(AIRLOCATE)
    fields, _ = parse_ad(raw)
    assert fields is not None
    advert = Advert(0.0, "hci0", "AA:BB:CC:DD:EE:FF", -60, mfr=fields.mfr)
    assert decode_advert(advert)[0] == decode_payload(raw)[0]


def test_malformed_payloads_give_reasons() -> None:
    truncated = bytes.fromhex(AIRLOCATE)[:-5]
    assert decode_payload(truncated) == (None, "ad_truncated")
    short = bytes.fromhex("0201060aff4c000215e2c56db5df")
    assert decode_payload(short) == (None, "ibeacon_short")
    apple_nearby = bytes.fromhex("0201060aff4c0010050b1c5e7a2d")
    assert decode_payload(apple_nearby) == (None, "apple_not_ibeacon")
    other = bytes.fromhex("02010605ff59000102")
    assert decode_payload(other) == (None, "unknown_manufacturer")
    assert decode_payload(b"") == (None, "no_beacon_data")


def test_trailing_garbage_keeps_the_whole_leading_structures() -> None:
    """A trailing RSSI byte (as some scanners append it), or any structure running past the
    end after whole ones: the whole structures are decoded and the remark is kept."""
    whole, _ = decode_payload(bytes.fromhex(AIRLOCATE))
    assert whole is not None
    for tail in ("c5", "1aff4c00", "05ff"):
        frame, reason = decode_payload(bytes.fromhex(AIRLOCATE + tail))
        assert (frame, reason) == (whole, "ad_trailing_garbage")
        assert frame_json(frame, reason)["note"] == "ad_trailing_garbage"
    # Garbage from the first byte on is still malformed: nothing whole to keep.
    assert decode_payload(bytes.fromhex("1aff4c000215")) == (None, "ad_truncated")
    stats = DecodeStats()
    stats.record(*decode_payload(bytes.fromhex(AIRLOCATE + "c5")))
    assert stats.lenient == {"ad_trailing_garbage": 1} and not stats.rejected


def test_decode_of_a_repeated_payload_is_cached_on_its_bytes() -> None:
    payload = bytes.fromhex(AIRLOCATE)
    first = decode_payload(payload)
    assert payload in DECODE_CACHE
    assert decode_payload(bytes(bytearray(payload))) is first  # equal bytes, another object
    for i in range(DECODE_CACHE_SIZE + 10):  # bounded
        decode_payload(i.to_bytes(4, "big"))
    assert len(DECODE_CACHE) <= DECODE_CACHE_SIZE
    advert = Advert(1.0, "r1", "AA:BB:CC:DD:EE:FF", -60, payload)
    assert decode_advert(advert) == first


def test_zero_length_structure_ends_the_payload() -> None:
    padded = bytes.fromhex(AIRLOCATE) + b"\x00\xff\xff\xff"
    assert decode_payload(padded)[0] is not None


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=62))
def test_random_bytes_never_raise(payload: bytes) -> None:
    frame, reason = decode_payload(payload)
    assert (frame is None) == bool(reason)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_mutated_ibeacons_never_raise(data: st.DataObject) -> None:
    payload = bytearray(bytes.fromhex(AIRLOCATE))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    frame, reason = decode_payload(bytes(payload[:cut]))
    assert (frame is None) == bool(reason)


def test_real_captured_adverts_all_decode_without_error() -> None:
    """~22k real payloads (phones, headsets, garbled PDUs) from the MIT LL captures."""
    stats = DecodeStats()
    rows = 0
    for name in (
        "conference-room-nrf52.csv",
        "conference-room-ubertooth.csv",
        "conference-room-wall-ubertooth.csv",
    ):
        with shared_data(f"mitll-adverts/{name}").open(newline="") as f:
            for row in csv.DictReader(f):
                rows += 1
                frame, reason = decode_payload(bytes.fromhex(row["ad_payload_hex"] or ""))
                stats.record(frame, reason)
    assert rows > 20000
    assert sum(stats.rejected.values()) + sum(stats.frames.values()) == rows
    # Every rejection is explained by a known reason.
    assert set(stats.rejected) <= {
        "ad_truncated",
        "apple_not_ibeacon",
        "ibeacon_short",
        "unknown_manufacturer",
        "unknown_service",
        "no_beacon_data",
    }


def test_decode_command_json_lines() -> None:
    lines = f"{AIRLOCATE}\nzz-not-hex\n0201060aff4c0010050b1c5e7a2d\n"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "decode"],
        input=lines,
        capture_output=True,
        text=True,
        check=True,
    )
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0] == {
        "frame": "ibeacon",
        "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
        "major": 0,
        "minor": 0,
        "tx_power": -59,
    }
    assert out[1] == {"frame": None, "reason": "not_hex"}
    assert out[2] == {"frame": None, "reason": "apple_not_ibeacon"}
