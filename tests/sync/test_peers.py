"""Peer gateways of one store share shopper sightings over a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from pathlib import Path

import aiomqtt
import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.model import Advert
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.sources import replay_source
from gateway.sources.replay import Rebase, first_time
from gateway.sync import peers
from tests.support.broker import Broker
from tests.support.fakebluez import wait_for

A_RECEIVERS = {"gw-entrance", "gw-sw", "gw-nw"}  # gateway A's adapters; B has the rest
ALICE = "ibeacon:5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b"


KEY = bytes.fromhex("a1" * 32)
TOPIC = peers.PeerTopic("storegate/v1", "demo-bookstore", "gw-a")


def _signed(body: dict[str, object], topic: peers.PeerTopic = TOPIC, key: bytes = KEY) -> bytes:
    """A batch signed like `peers.encode` signs one, around any body (for hostile bodies)."""
    raw = json.dumps(body).encode()
    return peers.MAGIC + peers._mac(key, topic, raw) + b"\n" + raw


def test_encode_decode_round_trip_without_addresses() -> None:
    adverts = [
        Advert(10.0, "gw-sw", "C0:FF:EE:00:00:01", -70, bytes.fromhex("0201061aff4c00")),
        Advert(10.5, "gw-nw", "C0:FF:EE:00:00:01", -80, b"", {0x004C: b"\x02\x15"}),
    ]
    payload = peers.encode(TOPIC, KEY, adverts, sent_at=10.5)
    assert b"C0:FF:EE" not in payload
    batch = peers.decode(payload, TOPIC, key=KEY, now=10.0)
    assert batch.errors == []
    assert [(a.t, a.receiver, a.rssi, a.ad, a.mfr) for a in batch.adverts] == [
        (a.t, a.receiver, a.rssi, a.ad, a.mfr) for a in adverts
    ]
    assert all(a.address == "peer:gw-a" for a in batch.adverts)


def _reason(payload: bytes, now: float = 0.0, **kw: object) -> str:
    with pytest.raises(peers.PeerRejected) as info:
        peers.decode(payload, kw.pop("topic", TOPIC), key=kw.pop("key", KEY), now=now, **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_forged_replayed_and_stale_batches_are_refused() -> None:
    """Issue 16: unsigned batches from a made-up gateway put a shopper anywhere."""
    adverts = [Advert(100.0, "gw-sw", "AA", -60, bytes.fromhex("0201061aff4c00"))]
    good = peers.encode(TOPIC, KEY, adverts, sent_at=100.0)
    unsigned = json.dumps({"v": 2, "gateway": "gw-a", "sent_at": 100.0, "sightings": []})
    assert _reason(unsigned.encode(), 100.0) == "unsigned"
    assert _reason(peers.encode(TOPIC, b"x" * 32, adverts, sent_at=100.0), 100.0) == "bad_signature"
    # The MAC binds the topic: gw-a's batch replayed as gw-b's (or another store's) fails.
    other = peers.PeerTopic("storegate/v1", "demo-bookstore", "gw-b")
    assert _reason(good, 100.0, topic=other) == "bad_signature"
    tampered = good.replace(b"-60", b"-30")
    assert _reason(tampered, 100.0) == "bad_signature"
    assert _reason(good, 100.0, key=b"") == "no_peer_key"
    assert _reason(good, 200.0) == "stale"  # captured and played later
    clock = peers.PeerClock()
    assert len(peers.decode(good, TOPIC, key=KEY, now=100.0, clock=clock).adverts) == 1
    assert _reason(good, 100.5, clock=clock) == "replayed"  # the same batch again


def test_bad_batches_and_bad_sightings_are_named() -> None:
    assert _reason(peers.MAGIC + b"0" * 64 + b"\n{not json") == "bad_signature"
    nested = b"[" * 5000
    assert _reason(peers.MAGIC + peers._mac(KEY, TOPIC, nested) + b"\n" + nested) == "malformed"
    assert _reason(_signed({"v": 2, "gateway": "gw-x", "sent_at": 0, "sightings": []})) == (
        "gateway_mismatch"
    )
    assert _reason(_signed({"v": 9, "gateway": "gw-a", "sightings": []})) == "unsupported_version"
    body = {
        "v": 2,
        "gateway": "gw-a",
        "sent_at": 2.0,
        "sightings": [
            {"t": 1.0, "kind": "ble", "receiver": "gw-sw", "rssi": 7, "ad": "02"},
            {"t": 1.0, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "zz"},
            {"t": 1.0, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "address": "AA:BB"},
            {"t": 1.0, "kind": "nfc", "reader": "r", "uid": "04a2246a"},
            {"t": 2.0, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "0201"},
        ],
    }
    batch = peers.decode(_signed(body), TOPIC, key=KEY, now=2.0)
    assert len(batch.adverts) == 1 and batch.adverts[0].t == 2.0
    assert [e.split(":")[0] for e in batch.errors] == [f"sightings[{i}]" for i in range(4)]
    assert "rssi" in batch.errors[0] and "hex" in batch.errors[1]
    assert "MAC" in batch.errors[2] and "only BLE" in batch.errors[3]


def test_share_buffer_is_bounded_never_reshares_and_drops_stale() -> None:
    buffer = peers.ShareBuffer()
    buffer.add(Advert(1.0, "r", "peer:gw-b", -60))
    assert buffer.take(TOPIC, KEY, 1.0) is None
    for i in range(peers.MAX_BUFFERED + 10):
        buffer.add(Advert(i * 0.001, "r", "AA", -60))
    assert buffer.dropped == 10
    buffer = peers.ShareBuffer()
    buffer.add(Advert(100.0, "r", "AA", -60))
    buffer.add(Advert(103.0, "r", "AA", -61))
    payload = buffer.take(TOPIC, KEY, 103.0)
    assert payload is not None
    batch = peers.decode(payload, TOPIC, key=KEY, now=103.0)
    assert [a.t for a in batch.adverts] == [103.0]
    # Two batches taken at the same time (a pinned clock, a replay's store time) are both
    # accepted: a sender's sent_at only ever grows.
    clock = peers.PeerClock()
    for _ in range(2):
        buffer.add(Advert(103.0, "r", "AA", -60))
        again = buffer.take(TOPIC, KEY, 103.0)
        assert again is not None
        assert peers.decode(again, TOPIC, key=KEY, now=103.0, clock=clock).adverts


SHOPPERS_UUID = "5f2b7a103c4d4e8f9a1b2c3d4e5f6a7b"
BOB_DECLINED = SHOPPERS_UUID + "00640002"


def _split_trace(tmp_path: Path) -> tuple[Path, Path, int]:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shopper_a = 0
    with a.open("w") as fa, b.open("w") as fb:
        for line in data_file("demo-trace.jsonl").read_text().splitlines():
            obj = json.loads(line)
            if obj["kind"] == "ble" and obj["receiver"] in A_RECEIVERS:
                fa.write(line + "\n")
                ad = obj.get("ad", "").lower()
                # Bob (major 100, minor 2) declined: his sightings stay on the gateway.
                shopper_a += SHOPPERS_UUID in ad and BOB_DECLINED not in ad
            else:
                fb.write(line + "\n")
    return a, b, shopper_a


async def test_two_gateways_fuse_each_others_receivers(tmp_path: Path, clock: PinnedClock) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    trace_a, trace_b, _ = _split_trace(tmp_path)
    alice_ad = "5f2b7a103c4d4e8f9a1b2c3d4e5f6a7b00640001"  # her UUID, major 100, minor 1
    alice_adverts = {"gw-a": trace_a.read_text().count(alice_ad)}
    alice_adverts["gw-b"] = trace_b.read_text().count(alice_ad)
    profiles = json.loads(data_file("demo-profiles.json").read_text())

    def gateway(name: str) -> Gateway:
        config = parse_config(
            f"[gateway]\nid = '{name}'\nstate_dir = '{tmp_path / name}'\n"
            "[sinks]\nstdout = false\n"
            f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
            "backoff_max_s = 0.3\nshare_sightings = true\npeer_sightings = true\n"
            f"peer_key = '{KEY.hex()}'\n"
            "share_interval_s = 0.05\n",
            f"{name}.toml",
            tmp_path,
        )
        g = Gateway(config, quiet_sink=True, clock=clock)
        g.identity.load_seed(profiles)
        g.refresh()
        return g

    gw_a, gw_b = gateway("gw-a"), gateway("gw-b")
    # Both halves of the recording are moved to the present by the same shift, as two live
    # gateways in one shop share one time.
    recorded = first_time(data_file("demo-trace.jsonl"))
    assert recorded is not None
    shift = clock.wall() - recorded
    together = Rebase(lambda _first: shift)
    sniffed: list[bytes] = []
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sniffer") as sniffer:
            await sniffer.subscribe("storegate/v1/demo-bookstore/+/sightings")
            # in a fleet: forwarded to the owner, decoded (PGS3)
            await sniffer.subscribe("storegate/v1/demo-bookstore/+/sightings/+")

            async def sniff() -> None:
                async for message in sniffer.messages:
                    assert isinstance(message.payload, bytes)
                    sniffed.append(message.payload)

            sniffing = asyncio.create_task(sniff())
            stop = asyncio.Event()
            # B is live first (no source but the peers), then A replays its half at 25× and
            # B its own half alongside.
            speed = 25.0
            run_b = asyncio.create_task(
                run_gateway(
                    gw_b,
                    [replay_source(gw_b, trace_b, speed, together), lambda _: stop.wait()],
                    stop,
                )
            )
            await wait_for(lambda: gw_b.uplink is not None and gw_b.uplink.stats.subscribed)
            run_a = asyncio.create_task(
                run_gateway(
                    gw_a,
                    [replay_source(gw_a, trace_a, speed, together), lambda _: stop.wait()],
                    stop,
                )
            )
            await wait_for(lambda: gw_a.uplink is not None and gw_a.uplink.stats.subscribed)
            end = max(json.loads(line)["t"] for line in trace_b.read_text().splitlines())
            end += shift
            await wait_for(
                lambda: min(gw_a.pipeline.now, gw_b.pipeline.now) >= end - 5.0, timeout=60
            )
            await asyncio.sleep(0.5)
            stop.set()
            for run in (run_a, run_b):
                with suppress(asyncio.CancelledError):
                    await run
            sniffing.cancel()
    finally:
        broker.stop()
    # What was forwarded was accepted (both shoppers are gw-a's: gw-a forwards nothing)
    for g in (gw_a, gw_b):
        assert not any(k.startswith("rejected") for k in g.peer_stats)
        assert g.pipeline.presence.rejected["unknown_receiver"] == 0
    # only shopper devices travel, never a MAC address, never a fixed beacon
    assert sniffed and all(b"C0:FF:EE" not in p and b"address" not in p for p in sniffed)
    assert not any(BOB_DECLINED in p.decode().lower() for p in sniffed)  # he said no
    assert not any(f"{ALICE}:100:2".encode() in p for p in sniffed)  # nor as a device key
    assert all(p.startswith(b"PGS3 ") for p in sniffed)  # members forward decoded readings
    anchors_uuid = "0f1e2d3c4b5a49788695a4b3c2d1e0f9"
    assert all(anchors_uuid not in p.decode() for p in sniffed)
    # Work sharing: both know the fleet, one of them owns Alice. The owner fuses both halves
    # of the receivers (the other forwards what it hears of her) and makes the same offer the
    # single-gateway demo makes; store-wide it is made once.
    assert gw_a.fleet_work is not None and gw_b.fleet_work is not None
    assert gw_a.fleet_work.fleet.live == gw_b.fleet_work.fleet.live == {"gw-a", "gw-b"}
    alice = ALICE + ":100:1"  # her device: the iBeacon UUID, major and minor
    owner_id = gw_a.fleet_work.fleet.owner(alice)
    assert gw_b.fleet_work.fleet.owner(alice) == owner_id
    owner, other = (gw_a, gw_b) if owner_id == "gw-a" else (gw_b, gw_a)
    assert owner.pipeline.stats.offers_issued == 1, owner.pipeline.stats.decisions
    assert other.pipeline.stats.offers_issued == 0, other.pipeline.stats.decisions
    assert owner.pipeline.stats.zone_events["enter"] >= 4
    assert other.pipeline.stats.not_owned > 0
    # in a fleet a gateway forwards only what it does not own: the owner got (nearly) every
    # sighting of Alice that the other heard (QoS 0: a frame may be lost), decoded
    heard_by_other = alice_adverts[other.config.gateway.id]
    assert owner.pipeline.stats.forwarded_in >= 0.9 * heard_by_other > 0
    assert owner.pipeline.stats.misrouted == 0
    work = owner.fleet_work
    assert work is not None and work.stats["forward_frames_sent"] == 0  # it owns Alice
    assert not any(k.startswith("forward_rejected") for k in work.stats), work.stats
    gw_a.close()
    gw_b.close()


def test_hostile_batches_are_refused_before_or_while_parsing() -> None:
    huge = b" " * (peers.MAX_PAYLOAD_BYTES + 1)  # refused unparsed
    assert _reason(huge) == "too_large"
    # Even with the store's key, a deep body never reaches the JSON decoder's recursion.
    nested = b'{"v": 2, "gateway": "gw-a", "sightings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _reason(peers.MAGIC + peers._mac(KEY, TOPIC, nested) + b"\n" + nested) == "malformed"


def test_sightings_far_from_this_gateways_clock_are_refused_one_by_one() -> None:
    now = 1_800_000_000.0
    times = [now, now - 5.0, now + 1e15, now - 7200.0, now + 31.0, 5e9]
    body = {
        "v": 2,
        "gateway": "gw-a",
        "sent_at": now,
        "sightings": [
            {"t": t, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "0201"} for t in times
        ],
    }
    batch = peers.decode(_signed(body), TOPIC, key=KEY, now=now)
    assert [a.t for a in batch.adverts] == [now, now - 5.0]
    assert len(batch.errors) == 4 and all(": t: " in e for e in batch.errors)
    assert "synchronised" in batch.errors[1] and "2100" in batch.errors[0]


async def test_forged_peer_batches_over_the_broker_issue_nothing(
    tmp_path: Path, clock: PinnedClock
) -> None:
    """The attack of issue 16 item 4, re-run: 100 unsigned batches from a made-up gateway
    carrying Alice's beacon at the entrance receivers, against a real daemon and broker."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = parse_config(
        f"[gateway]\nid = 'gw-b'\nstate_dir = '{tmp_path / 'b'}'\n[sinks]\nstdout = false\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
        f"backoff_max_s = 0.3\npeer_sightings = true\npeer_key = '{KEY.hex()}'\n",
        "b.toml",
        tmp_path,
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    stop = asyncio.Event()
    run = asyncio.create_task(run_gateway(gateway, [lambda _: stop.wait()], stop))
    alice_ad = "0201061aff4c000215" + "5f2b7a103c4d4e8f9a1b2c3d4e5f6a7b" + "00010001c5"
    evil = peers.PeerTopic("storegate/v1", "demo-bookstore", "gw-evil")
    try:
        await wait_for(lambda: gateway.uplink is not None and gateway.uplink.stats.subscribed)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="intruder") as intruder:
            for i in range(100):
                now = clock.wall() + i * 0.05
                body = {
                    "v": 2,
                    "gateway": "gw-evil",
                    "sent_at": now,
                    "sightings": [
                        {"t": now, "kind": "ble", "receiver": r, "rssi": -45, "ad": alice_ad}
                        for r in ("gw-entrance", "gw-sw", "gw-nw")
                    ],
                }
                raw = json.dumps(body).encode()
                forged = [raw, peers.MAGIC + peers._mac(b"guess" * 4, evil, raw) + b"\n" + raw]
                await intruder.publish(evil.topic, forged[i % 2], qos=0)
            await wait_for(
                lambda: (
                    gateway.peer_stats["rejected_unsigned"]
                    + gateway.peer_stats["rejected_bad_signature"]
                    == 100
                )
            )
        assert gateway.uplink is not None and gateway.uplink.stats.connected
        assert gateway.peer_stats["accepted"] == 0
        assert gateway.pipeline.stats.adverts == 0 and gateway.pipeline.stats.offers_issued == 0
    finally:
        stop.set()
        with suppress(asyncio.CancelledError):
            await run
        broker.stop()
        gateway.close()
