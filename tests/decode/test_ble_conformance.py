"""Conformance corpus built from the public specifications' field layouts, and a 1M fuzz.

Vectors are assembled byte by byte from the spec tables (AltBeacon v1.0; Eddystone UID,
URL, TLM plain/encrypted, EID), so a decoder that reads a field from the wrong offset,
with the wrong endianness or sign, fails here.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest

from gateway.decode.ble import decode_payload
from gateway.decode.frames import frame_json


def svc_feaa(frame: str) -> str:
    """AD structures of an Eddystone advert: flags, 16-bit UUID list, service data."""
    data = bytes.fromhex(frame)
    return "020106" + "0303aafe" + f"{len(data) + 3:02x}16aafe" + data.hex()


CORPUS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "altbeacon, spec diagram values (Radius Networks 0x0118, id 2F234454-…, 1, 2, -59)",
        "1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c500",
        {
            "frame": "altbeacon",
            "company_id": 0x0118,
            "beacon_id": "2f234454cf6d4a0fadf2f4911ba9ffa600010002",
            "uuid": "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6",
            "major": 1,
            "minor": 2,
            "tx_power": -59,
            "mfg_reserved": 0,
        },
    ),
    (
        "eddystone-uid with RFU bytes (length 0x17)",
        svc_feaa("00e2" + "8b0ca750095477cb3e77" + "0a0b0c0d0e0f" + "0000"),
        {
            "frame": "eddystone_uid",
            "namespace": "8b0ca750095477cb3e77",
            "instance": "0a0b0c0d0e0f",
            "tx_power": -30,
        },
    ),
    (
        "eddystone-uid truncated before RFU (length 0x15, allowed by the spec)",
        svc_feaa("0012" + "00112233445566778899" + "aabbccddeeff"),
        {
            "frame": "eddystone_uid",
            "namespace": "00112233445566778899",
            "instance": "aabbccddeeff",
            "tx_power": 18,
        },
    ),
    (
        "eddystone-url https://goo.gl/S6zT6P",
        svc_feaa("10eb03" + b"goo.gl/S6zT6P".hex()),
        {"frame": "eddystone_url", "url": "https://goo.gl/S6zT6P", "tx_power": -21},
    ),
    (
        "eddystone-url with scheme 0 and expansion 0x00",
        svc_feaa("10ee00" + b"example".hex() + "00" + b"shop".hex()),
        {"frame": "eddystone_url", "url": "http://www.example.com/shop", "tx_power": -18},
    ),
    (
        "eddystone-url every expansion code 0x07-0x0d",
        svc_feaa("100003" + "61" + "07" + "08" + "09" + "0a" + "0b" + "0c" + "0d"),
        {"frame": "eddystone_url", "url": "https://a.com.org.edu.net.info.biz.gov", "tx_power": 0},
    ),
    (
        "eddystone-tlm plain: 3000 mV, 23.5 °C, 256 adverts, 256.0 s",
        svc_feaa("2000" + "0bb8" + "1780" + "00000100" + "00000a00"),
        {
            "frame": "eddystone_tlm",
            "version": 0,
            "voltage": 3000,
            "temperature": 23.5,
            "adv_count": 256,
            "sec_count": 2560,
            "uptime": 256.0,
        },
    ),
    (
        "eddystone-tlm plain: negative temperature, big counters",
        svc_feaa("2000" + "0c1c" + "ff80" + "ffffffff" + "80000000"),
        {
            "frame": "eddystone_tlm",
            "version": 0,
            "voltage": 3100,
            "temperature": -0.5,
            "adv_count": 4294967295,
            "sec_count": 2147483648,
            "uptime": 214748364.8,
        },
    ),
    (
        "eddystone-tlm plain: mains powered, no temperature sensor",
        svc_feaa("2000" + "0000" + "8000" + "00000001" + "00000001"),
        {
            "frame": "eddystone_tlm",
            "version": 0,
            "voltage": 0,
            "temperature": None,
            "adv_count": 1,
            "sec_count": 1,
            "uptime": 0.1,
        },
    ),
    (
        "eddystone-tlm encrypted (version 1)",
        svc_feaa("2001" + "00112233445566778899aabb" + "c0c1" + "d0d1"),
        {
            "frame": "eddystone_etlm",
            "version": 1,
            "etlm": "00112233445566778899aabb",
            "salt": "c0c1",
            "mic": "d0d1",
        },
    ),
    (
        "eddystone-eid",
        svc_feaa("30f6" + "8fb7cd3f0a1b2c3d"),
        {"frame": "eddystone_eid", "eid": "8fb7cd3f0a1b2c3d", "tx_power": -10},
    ),
    (
        "ibeacon among other AD structures (name, tx power level)",
        "020106"
        + "050954657374"
        + "020a04"
        + "1aff4c000215f7826da64fa24e988024bc5b71e0893e2710fffeb3",
        {
            "frame": "ibeacon",
            "uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e",
            "major": 10000,
            "minor": 65534,
            "tx_power": -77,
        },
    ),
]

REJECTS = [
    (
        "eddystone-url reserved byte 0x0e",
        svc_feaa("100003" + "610e"),
        "eddystone_url_reserved_byte",
    ),
    (
        "eddystone-url reserved byte 0x7f",
        svc_feaa("100003" + "617f"),
        "eddystone_url_reserved_byte",
    ),
    ("eddystone-url scheme 4", svc_feaa("100004" + "61"), "eddystone_url_scheme"),
    ("eddystone-url over 17 bytes", svc_feaa("100003" + "61" * 18), "eddystone_url_long"),
    ("eddystone-tlm version 2", svc_feaa("2002" + "00" * 12), "eddystone_tlm_version"),
    ("eddystone-tlm short", svc_feaa("2000" + "0bb8"), "eddystone_tlm_short"),
    ("eddystone-uid short", svc_feaa("00e2" + "8b0ca750"), "eddystone_uid_short"),
    ("eddystone-eid short", svc_feaa("30f6" + "8fb7"), "eddystone_eid_short"),
    ("eddystone unknown frame 0x40", svc_feaa("40" + "00" * 5), "eddystone_unknown_frame"),
    ("altbeacon short", "0aff1801beac2f234454cf", "altbeacon_short"),
    ("other service data", "0416f0ff01", "unknown_service"),
]


@pytest.mark.parametrize(("name", "payload", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_spec_vectors(name: str, payload: str, expected: dict[str, Any]) -> None:
    frame, reason = decode_payload(bytes.fromhex(payload))
    assert frame_json(frame, reason) == expected


@pytest.mark.parametrize(("name", "payload", "reason"), REJECTS, ids=[r[0] for r in REJECTS])
def test_spec_violations_are_rejected_with_reason(name: str, payload: str, reason: str) -> None:
    assert decode_payload(bytes.fromhex(payload)) == (None, reason)


def test_bleak_full_uuid_service_keys_are_understood() -> None:
    from gateway.decode.ble import decode_advert
    from gateway.model import Advert

    advert = Advert(
        0.0,
        "hci0",
        "AA",
        -60,
        svc={"0000feaa-0000-1000-8000-00805f9b34fb": bytes.fromhex("30f68fb7cd3f0a1b2c3d")},
    )
    frame, _ = decode_advert(advert)
    assert frame is not None and frame.kind == "eddystone_eid"


def test_decode_command_speaks_the_corpus() -> None:
    stdin = "".join(p + "\n" for _, p, _ in CORPUS)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "decode"],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert [json.loads(line) for line in result.stdout.splitlines()] == [e for _, _, e in CORPUS]


def test_one_million_random_and_mutated_payloads() -> None:
    """1M payloads: random bytes, and spec frames with flipped, cut or grown bytes.
    Zero exceptions; every rejection carries a reason."""
    rng = random.Random(20261123)
    seeds = [bytes.fromhex(p) for _, p, _ in CORPUS] + [bytes.fromhex(p) for _, p, _ in REJECTS]
    randbytes = rng.randbytes
    decoded = rejected = 0
    for i in range(1_000_000):
        if i % 4 == 0:
            payload = randbytes(rng.randrange(0, 40))
        else:
            buf = bytearray(seeds[i % len(seeds)])
            for _ in range(1 + (i % 3)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            if i % 5 == 0:
                del buf[rng.randrange(len(buf)) :]
            elif i % 7 == 0:
                buf += randbytes(rng.randrange(1, 8))
            payload = bytes(buf)
        frame, reason = decode_payload(payload)
        if frame is None:
            assert reason
            rejected += 1
        else:
            assert reason in ("", "ad_trailing_garbage")
            frame_json(frame, reason)  # every decoded frame also serialises
            decoded += 1
    assert decoded + rejected == 1_000_000
    assert decoded > 50_000 and rejected > 250_000  # the mutations exercise both paths
