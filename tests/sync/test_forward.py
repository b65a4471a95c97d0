"""Forwarded readings in a fleet (PGS3): decoded by the hearer, signed, one frame per owner,
read by the owner only, every bound checked before or while parsing."""

from __future__ import annotations

import json

import pytest

from gateway.sync import forward, peers, wire
from gateway.sync.topics import Inbound, Topics

KEY = bytes.fromhex("a1" * 32)
NOW = 1_900_000_000.0
TO_B = forward.ForwardTopic("storegate/v1", "demo-bookstore", "gw-a", "gw-b")
ALICE = "ibeacon:5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:1"


def _signed(body: object, topic: forward.ForwardTopic = TO_B, key: bytes = KEY) -> bytes:
    raw = json.dumps(body).encode()
    return wire.seal_frame(forward.MAGIC, key, topic.topic, raw)


def _body(devices: object, **kw: object) -> dict[str, object]:
    body: dict[str, object] = {"v": 3, "gateway": "gw-a", "owner": "gw-b", "sent_at": NOW}
    body["devices"] = devices
    body.update(kw)
    return body


def _reason(payload: bytes, key: bytes = KEY, clock: peers.PeerClock | None = None) -> str:
    with pytest.raises(forward.ForwardRejected) as info:
        forward.decode(payload, TO_B, key=key, now=NOW, clock=clock)
    return info.value.reason


def test_readings_go_per_owner_decoded_and_come_back_as_sent() -> None:
    buffer = forward.ForwardBuffer()
    buffer.add(ALICE, -59, NOW, "gw-sw", -70)
    buffer.add("ibeacon:x:1:2", None, NOW + 0.1, "gw-nw", -80)
    buffer.add(ALICE, -59, NOW + 0.2, "gw-nw", -75)
    owners = {ALICE: "gw-b", "ibeacon:x:1:2": "gw-c"}

    def topic_of(owner: str) -> forward.ForwardTopic:
        return forward.ForwardTopic("storegate/v1", "demo-bookstore", "gw-a", owner)

    frames = buffer.take(owners.__getitem__, topic_of, KEY, NOW)
    assert buffer.devices == {} and buffer.readings == 0
    assert sorted(t.owner for t, _ in frames) == ["gw-b", "gw-c"]
    (to_b,) = [p for t, p in frames if t.owner == "gw-b"]
    assert to_b.startswith(b"PGS3 ") and b"gw-sw" in to_b and b"ibeacon:x" not in to_b
    batch = forward.decode(to_b, TO_B, key=KEY, now=NOW)
    assert batch.errors == [] and batch.readings == 2
    assert batch.devices == [(ALICE, -59, [(NOW, "gw-sw", -70), (NOW + 0.2, "gw-nw", -75)])]
    # a frame for gw-c is not gw-b's: its topic (and so its signature) names gw-c
    (to_c,) = [p for t, p in frames if t.owner == "gw-c"]
    assert _reason(to_c) == "bad_signature"
    # a device that has become the hearer's own is not sent to itself
    buffer.add(ALICE, -59, NOW + 1, "gw-sw", -70)
    assert buffer.take(lambda _d: "gw-a", topic_of, KEY, NOW + 1) == []


def test_the_topics_route_frames_to_their_owner_only() -> None:
    b = Topics("storegate/v1", "demo-bookstore", "gw-b")
    a = Topics("storegate/v1", "demo-bookstore", "gw-a")
    assert a.forwarded("gw-b") == TO_B.topic
    assert b.match(TO_B.topic) == (Inbound.FORWARDED, "gw-a")
    assert b.match("storegate/v1/demo-bookstore/gw-a/sightings/gw-c") is None
    assert b.match("storegate/v1/demo-bookstore/gw-a/sightings") == (Inbound.SIGHTINGS, "gw-a")


def test_forged_replayed_stale_and_misaddressed_frames_are_refused() -> None:
    good = _body([[ALICE, -59, [[NOW, "gw-sw", -60]]]])
    assert forward.decode(_signed(good), TO_B, key=KEY, now=NOW).readings == 1
    raw = json.dumps(good).encode()
    assert _reason(raw) == "unsigned"
    assert _reason(_signed(good, key=b"guess" * 4)) == "bad_signature"
    assert _reason(_signed(good), key=b"") == "no_peer_key"
    assert _reason(_signed({**good, "v": 2})) == "unsupported_version"
    assert _reason(_signed({**good, "owner": "gw-c"})) == "gateway_mismatch"
    assert _reason(_signed({**good, "sent_at": NOW - 60})) == "stale"
    assert _reason(_signed({**good, "sent_at": "soon"})) == "stale"
    clock = peers.PeerClock()
    frame = _signed(good)
    assert forward.decode(frame, TO_B, key=KEY, now=NOW, clock=clock).readings == 1
    assert _reason(frame, clock=clock) == "replayed"
    assert _reason(_signed([good])) == "malformed"


def test_hostile_frames_are_bounded_before_or_while_parsing() -> None:
    assert _reason(b" " * (forward.MAX_PAYLOAD_BYTES + 1)) == "too_large"
    nested = b'{"v": 3, "devices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _reason(wire.seal_frame(forward.MAGIC, KEY, TO_B.topic, nested)) == "malformed"
    for literal in (b"NaN", b"Infinity", b"1e999"):
        text = b'{"v":3,"gateway":"gw-a","owner":"gw-b","sent_at":' + literal + b',"devices":[]}'
        assert _reason(wire.seal_frame(forward.MAGIC, KEY, TO_B.topic, text)) in (
            "malformed",
            "stale",
        )
    many = [[ALICE, -59, [[NOW, "gw-sw", -60]] * (forward.MAX_READINGS + 1)]]
    assert _reason(_signed(_body(many))) in ("too_large", "malformed")
    devices: list[object] = [[f"ibeacon:{i}", None, []] for i in range(forward.MAX_DEVICES + 1)]
    assert _reason(_signed(_body(devices))) == "malformed"


def test_bad_devices_and_readings_are_refused_one_by_one() -> None:
    devices = [
        [ALICE, -59, [[NOW, "gw-sw", -60], [NOW + 1e15, "gw-sw", -60], [NOW, "gw-sw", 5]]],
        [ALICE, -59, [[NOW, 7, -60], [NOW, "", -60], [NOW, "gw-sw", -60.5], [NOW]]],
        ["no-kind", -59, [[NOW, "gw-sw", -60]]],
        [ALICE, 999, [[NOW, "gw-sw", -60]]],
        [ALICE, True, [[NOW, "gw-sw", -60]]],
        [ALICE, None, "readings"],
        [ALICE, None, [[NOW - 7200, "gw-sw", -60], [NOW - 5, "gw-nw", -61]]],
        "device",
    ]
    batch = forward.decode(_signed(_body(devices)), TO_B, key=KEY, now=NOW)
    assert batch.devices == [
        (ALICE, -59, [(NOW, "gw-sw", -60)]),
        (ALICE, None, [(NOW - 5, "gw-nw", -61)]),
    ]
    assert len(batch.errors) == 12, batch.errors
    assert any("synchronised" not in e and ": t: " in e for e in batch.errors)
    assert any("rssi" in e for e in batch.errors) and any("receiver" in e for e in batch.errors)
    assert any("power" in e for e in batch.errors) and any("device:" in e for e in batch.errors)


def test_the_buffer_is_bounded_while_the_broker_is_away() -> None:
    buffer = forward.ForwardBuffer()
    for i in range(forward.MAX_BUFFERED + 10):
        buffer.add(f"ibeacon:{i % 7}", None, NOW + i * 0.001, "gw-sw", -60)
    assert buffer.readings <= forward.MAX_BUFFERED and buffer.dropped > 0
    assert buffer.readings + buffer.dropped == forward.MAX_BUFFERED + 10
    newest = max(r[0] for _, rs in buffer.devices.values() for r in rs)
    assert newest == NOW + (forward.MAX_BUFFERED + 9) * 0.001
