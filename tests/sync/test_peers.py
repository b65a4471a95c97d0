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


def test_encode_decode_round_trip_without_addresses() -> None:
    adverts = [
        Advert(10.0, "gw-sw", "C0:FF:EE:00:00:01", -70, bytes.fromhex("0201061aff4c00")),
        Advert(10.5, "gw-nw", "C0:FF:EE:00:00:01", -80, b"", {0x004C: b"\x02\x15"}),
    ]
    payload = peers.encode("gw-a", adverts)
    assert b"C0:FF:EE" not in payload
    batch = peers.decode(payload, "gw-a", now=10.0)
    assert batch.errors == []
    assert [(a.t, a.receiver, a.rssi, a.ad, a.mfr) for a in batch.adverts] == [
        (a.t, a.receiver, a.rssi, a.ad, a.mfr) for a in adverts
    ]
    assert all(a.address == "peer:gw-a" for a in batch.adverts)


def test_bad_batches_and_bad_sightings_are_named() -> None:
    with pytest.raises(peers.PeerRejected) as info:
        peers.decode(b"{not json", "gw-a", now=0.0)
    assert info.value.reason == "malformed"
    with pytest.raises(peers.PeerRejected) as info:
        peers.decode(
            json.dumps({"v": 1, "gateway": "gw-x", "sightings": []}).encode(), "gw-a", now=0.0
        )
    assert info.value.reason == "gateway_mismatch"
    with pytest.raises(peers.PeerRejected) as info:
        peers.decode(
            json.dumps({"v": 9, "gateway": "gw-a", "sightings": []}).encode(), "gw-a", now=0.0
        )
    assert info.value.reason == "unsupported_version"
    body = {
        "v": 1,
        "gateway": "gw-a",
        "sightings": [
            {"t": 1.0, "kind": "ble", "receiver": "gw-sw", "rssi": 7, "ad": "02"},
            {"t": 1.0, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "zz"},
            {"t": 1.0, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "address": "AA:BB"},
            {"t": 1.0, "kind": "nfc", "reader": "r", "uid": "04a2246a"},
            {"t": 2.0, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "0201"},
        ],
    }
    batch = peers.decode(json.dumps(body).encode(), "gw-a", now=2.0)
    assert len(batch.adverts) == 1 and batch.adverts[0].t == 2.0
    assert [e.split(":")[0] for e in batch.errors] == [f"sightings[{i}]" for i in range(4)]
    assert "rssi" in batch.errors[0] and "hex" in batch.errors[1]
    assert "MAC" in batch.errors[2] and "only BLE" in batch.errors[3]


def test_share_buffer_is_bounded_never_reshares_and_drops_stale() -> None:
    buffer = peers.ShareBuffer()
    buffer.add(Advert(1.0, "r", "peer:gw-b", -60))
    assert buffer.take("gw-a") is None
    for i in range(peers.MAX_BUFFERED + 10):
        buffer.add(Advert(i * 0.001, "r", "AA", -60))
    assert buffer.dropped == 10
    buffer = peers.ShareBuffer()
    buffer.add(Advert(100.0, "r", "AA", -60))
    buffer.add(Advert(103.0, "r", "AA", -61))
    payload = buffer.take("gw-a")
    assert payload is not None
    assert [s["t"] for s in json.loads(payload)["sightings"]] == [103.0]


def _split_trace(tmp_path: Path) -> tuple[Path, Path, int]:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shopper_a = 0
    with a.open("w") as fa, b.open("w") as fb:
        for line in data_file("demo-trace.jsonl").read_text().splitlines():
            obj = json.loads(line)
            if obj["kind"] == "ble" and obj["receiver"] in A_RECEIVERS:
                fa.write(line + "\n")
                shopper_a += "5f2b7a103c4d4e8f9a1b2c3d4e5f6a7b" in obj.get("ad", "")
            else:
                fb.write(line + "\n")
    return a, b, shopper_a


async def test_two_gateways_fuse_each_others_receivers(tmp_path: Path, clock: PinnedClock) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    trace_a, trace_b, shopper_adverts_a = _split_trace(tmp_path)
    profiles = json.loads(data_file("demo-profiles.json").read_text())

    def gateway(name: str) -> Gateway:
        config = parse_config(
            f"[gateway]\nid = '{name}'\nstate_dir = '{tmp_path / name}'\n"
            "[sinks]\nstdout = false\n"
            f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
            "backoff_max_s = 0.3\nshare_sightings = true\npeer_sightings = true\n"
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
            await wait_for(
                lambda: gw_b.peer_stats["accepted"] >= 0.95 * shopper_adverts_a, timeout=60
            )
            await asyncio.sleep(0.5)
            stop.set()
            for run in (run_a, run_b):
                with suppress(asyncio.CancelledError):
                    await run
            sniffing.cancel()
    finally:
        broker.stop()
    # B heard A's receivers for every shopper advert A shared, and none were rejected
    assert gw_b.peer_stats["accepted"] >= 0.95 * shopper_adverts_a
    assert not any(k.startswith("rejected") for k in gw_b.peer_stats)
    assert gw_b.pipeline.presence.rejected["unknown_receiver"] == 0
    # only shopper devices travel, never a MAC address, never a fixed beacon
    assert sniffed and all(b"C0:FF:EE" not in p and b"address" not in p for p in sniffed)
    anchors_uuid = "0f1e2d3c4b5a49788695a4b3c2d1e0f9"
    assert all(anchors_uuid not in p.decode() for p in sniffed)
    # B's own two receivers sit at the back; with A's it places Alice at the entrance and
    # makes the same offer the single-gateway demo makes.
    issued = gw_b.pipeline.stats.offers_issued
    assert issued == 1, gw_b.pipeline.stats.decisions
    assert gw_b.pipeline.stats.zone_events["enter"] >= 4
    gw_a.close()
    gw_b.close()


def test_hostile_batches_are_refused_before_or_while_parsing() -> None:
    huge = b" " * (peers.MAX_PAYLOAD_BYTES + 1)  # refused unparsed
    with pytest.raises(peers.PeerRejected) as info:
        peers.decode(huge, "gw-a", now=0.0)
    assert info.value.reason == "too_large"
    nested = b'{"v": 1, "gateway": "gw-a", "sightings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(peers.PeerRejected) as info:
        peers.decode(nested, "gw-a", now=0.0)
    assert info.value.reason == "malformed"


def test_sightings_far_from_this_gateways_clock_are_refused_one_by_one() -> None:
    now = 1_800_000_000.0
    times = [now, now - 5.0, now + 1e15, now - 7200.0, now + 31.0, 5e9]
    body = {
        "v": 1,
        "gateway": "gw-a",
        "sightings": [
            {"t": t, "kind": "ble", "receiver": "gw-sw", "rssi": -60, "ad": "0201"} for t in times
        ],
    }
    batch = peers.decode(json.dumps(body).encode(), "gw-a", now=now)
    assert [a.t for a in batch.adverts] == [now, now - 5.0]
    assert len(batch.errors) == 4 and all(": t: " in e for e in batch.errors)
    assert "synchronised" in batch.errors[1] and "2100" in batch.errors[0]
