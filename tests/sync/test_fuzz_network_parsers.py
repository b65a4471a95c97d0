"""Every parser of network input, fuzzed: whatever the bytes, the answer is a reasoned
rejection or a value — never another exception (which, in the uplink, would end the MQTT
session). Seeded, so a failure reproduces."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from typing import Any

from gateway.sync import downlink, forward, peers, signed, wire

KEY = bytes.fromhex("6b" * 32)
TOPIC = peers.PeerTopic("storegate/v1", "demo-bookstore", "gw-a")
NOW = 1_900_000_000.0

ATOMS: list[bytes] = [
    b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\\u", b"\\ud800", b"NaN", b"-Infinity",
    b"1e999", b"9" * 50, b"-0", b"0.00005", b"true", b"null", b"\xff", b"\xc3", b"\x00",
    b'"sig"', b'"family"', b'"stock"', b'"data"', b'"version"', b"\n", b" ",
]  # fmt: skip


def _seed_documents() -> list[bytes]:
    stock = {
        "family": "stock",
        "kind": "snapshot",
        "version": 2,
        "data": {"items": [{"sku": "a", "quantity": 1, "zone_id": "z", "title": "Ü"}]},
    }
    profiles = {
        "family": "profiles",
        "kind": "delta",
        "version": 1,
        "data": {"profiles": [{"profile_id": "p", "cart": [{"sku": "a", "price": 1.5}]}]},
    }
    command = {"command": "flush", "nonce": "nonce-0001", "args": {}}
    out = []
    for body in (stock, profiles, command):
        gateway = "gw-demo-1" if "command" in body else "*"
        sealed = signed.seal(KEY, body, store="demo-bookstore", gateway=gateway, now=NOW)
        out.append(json.dumps(sealed, ensure_ascii=False).encode())
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        at = rng.randint(0, len(buf))
        if op < 0.3 and buf:
            del buf[at : at + rng.randint(1, 8)]
        elif op < 0.6:
            buf[at:at] = rng.choice(ATOMS) * rng.randint(1, 3)
        elif op < 0.8 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        else:
            buf[at:at] = buf[: rng.randint(0, len(buf))]  # repeat a prefix: nesting, size
    return bytes(buf)


def _consume_document(conn: sqlite3.Connection, payload: bytes) -> str:
    """What the downlink handler does with a document, minus the broker."""
    document = signed.verify(KEY, payload)
    if isinstance(document, signed.Rejected):
        return document.reason
    binding = signed.Binding("demo-bookstore", "gw-demo-1")
    is_command = "command" in document
    refused = signed.check_envelope(document, binding, NOW, command=is_command)
    if refused is not None:
        return refused.reason
    if is_command:
        return signed.check_command(document, signed.NonceCache(), NOW) or "ok"
    try:
        return downlink.apply_document(conn, document)
    except downlink.DocumentRejected as exc:
        return exc.reason


def test_downlink_verification_and_documents(conn: sqlite3.Connection) -> None:
    rng = random.Random(1601)
    seeds = _seed_documents()
    reasons: dict[str, int] = {}
    for i in range(3000):
        payload = _mutate(rng, rng.choice(seeds))
        if i % 10 == 0:  # and a re-signed mutation, so the document checks are reached
            try:
                body: Any = json.loads(payload)
            except (ValueError, RecursionError):
                body = None
            if isinstance(body, dict):
                with contextlib.suppress(ValueError, TypeError):
                    payload = json.dumps(signed.sign(KEY, body)).encode()
        reason = _consume_document(conn, payload)
        reasons[reason] = reasons.get(reason, 0) + 1
    # The fuzzer reached past the signature too, not only the parser.
    assert reasons.get("bad_signature", 0) > 100 and len(reasons) >= 6, reasons


def test_peer_batches() -> None:
    rng = random.Random(1602)
    body = {
        "v": 2,
        "gateway": "gw-a",
        "sent_at": NOW,
        "sightings": [
            {"t": NOW, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "0201061aff4c00"}
        ],
    }
    raw = json.dumps(body).encode()
    outcomes: dict[str, int] = {}
    for _ in range(3000):
        mutated = _mutate(rng, raw)
        # Signed after mutation (a peer with the key sending garbage), or mutated whole.
        framed = peers.MAGIC + peers._mac(KEY, TOPIC, mutated) + b"\n" + mutated
        for payload in (framed, _mutate(rng, framed)):
            try:
                batch = peers.decode(payload, TOPIC, key=KEY, now=NOW)
                key = f"accepted:{len(batch.adverts)}"
            except peers.PeerRejected as exc:
                key = exc.reason
            outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("bad_signature", 0) > 100 and outcomes.get("malformed", 0) > 100, outcomes


def test_forwarded_frames() -> None:
    """Forwarded readings (PGS3) are parsed without per-number hooks: every number is
    range-checked by the reader instead, so a mutated number must still never get through
    as anything but a refused frame or reading."""
    rng = random.Random(1604)
    topic = forward.ForwardTopic("storegate/v1", "demo-bookstore", "gw-a", "gw-b")
    readings = [(NOW, "gw-sw", -60), (NOW + 0.1, "gw-nw", -71)]
    raw = forward.encode(topic, KEY, [("ibeacon:u:1:2", -59, readings)], sent_at=NOW)
    body = raw.split(b"\n", 1)[1]
    outcomes: dict[str, int] = {}
    for _ in range(3000):
        mutated = _mutate(rng, body)
        framed = forward.MAGIC + wire.frame_mac(KEY, topic.topic, mutated) + b"\n" + mutated
        for payload in (framed, _mutate(rng, framed)):
            try:
                batch = forward.decode(payload, topic, key=KEY, now=NOW)
            except forward.ForwardRejected as exc:
                key = exc.reason
            else:
                key = f"accepted:{batch.readings}"
                for _device, power, rs in batch.devices:
                    assert power is None or -127 <= power <= 127
                    for t, receiver, rssi in rs:
                        assert abs(t - NOW) <= 3600 and -127 <= rssi <= -1
                        assert isinstance(receiver, str)
            outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("bad_signature", 0) > 100 and outcomes.get("malformed", 0) > 100, outcomes
    assert outcomes.get("accepted:2", 0) > 10, outcomes


def test_the_bounded_parser_alone() -> None:
    rng = random.Random(1603)
    for _ in range(5000):
        payload = b"".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 400)))
        with contextlib.suppress(wire.WireRejected):
            wire.parse(payload, max_bytes=4096)
