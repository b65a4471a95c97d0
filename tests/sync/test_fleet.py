"""Work sharing across a store's gateways: one owner per shopper device, hand-over on a lost
peer, over a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from pathlib import Path

import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.model import OfferDecision, PipelineEvent, ZoneEvent
from gateway.resources import data_file
from gateway.runtime.commit import Queued
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.sources import replay_source
from gateway.sources.replay import Rebase, first_time
from gateway.store import db
from gateway.store.outbox import Outbox
from gateway.sync import ownership, uplink
from gateway.sync.topics import Topics
from gateway.zones.handover import HandedOver, VisitState
from tests.support.broker import Broker
from tests.support.fakebluez import wait_for

KEY = bytes.fromhex("a1" * 32)
ALICE = "ibeacon:5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:1"
A_RECEIVERS = {"gw-entrance", "gw-sw", "gw-nw"}


def _fleet(me: str, *others: str) -> ownership.Fleet:
    fleet = ownership.Fleet(me, KEY, 0.0)
    for other in others:
        topic = f"storegate/v1/s/{other}/status"
        claim = ownership.status_signature(KEY, topic, "online", 1.0)
        body = {"state": "online", "started_at": 1.0, "fleet": claim}
        assert fleet.on_status(other, topic, json.dumps(body).encode())
    fleet.ready = True
    return fleet


def test_every_member_names_the_same_single_owner_and_a_leaver_moves_only_its_own() -> None:
    devices = [f"ibeacon:{i:032x}:1:{i}" for i in range(3000)]
    members = ["gw-1", "gw-2", "gw-3", "gw-4"]
    fleets = [_fleet(m, *(o for o in members if o != m)) for m in members]
    owners = {d: fleets[0].owner(d) for d in devices}
    for fleet in fleets[1:]:
        assert {d: fleet.owner(d) for d in devices} == owners
    for fleet in fleets:  # exactly one member owns each device
        assert sum(fleet.owns(d) for fleet in fleets for d in devices[:1]) == 1
    share = {m: sum(o == m for o in owners.values()) / len(devices) for m in members}
    assert all(0.2 < s < 0.3 for s in share.values()), share  # spread about evenly
    # gw-3 goes (its will): only its devices move, spread over the others
    will = json.dumps({"state": "offline", "started_at": 1.0}).encode()
    assert fleets[0].on_status("gw-3", "storegate/v1/s/gw-3/status", will)
    moved = {d for d in devices if fleets[0].owner(d) != owners[d]}
    assert moved == {d for d in devices if owners[d] == "gw-3"}


def test_membership_needs_the_peer_key_and_our_own_birth() -> None:
    fleet = ownership.Fleet("gw-1", KEY, 0.0)
    assert not fleet.owns(ALICE)  # not ready: the broker has not told us about the others
    fleet.tick(ownership.READY_AFTER_S)  # ... and never did: own what we hear
    assert fleet.owns(ALICE)
    topic = "storegate/v1/s/gw-x/status"
    forged = ownership.status_signature(b"guess" * 8, topic, "online", 1.0)
    for body in (
        {"state": "online", "started_at": 1.0},  # not a fleet member (no claim)
        {"state": "online", "started_at": 1.0, "fleet": forged},  # no peer key
        {"state": "online", "started_at": 2.0, "fleet": forged},
    ):
        assert not fleet.on_status("gw-x", topic, json.dumps(body).encode())
    assert not fleet.on_status("gw-x", topic, b"\xff not json")
    # the claim binds the topic: gw-y cannot reuse gw-x's status
    good = ownership.status_signature(KEY, topic, "online", 1.0)
    status = json.dumps({"state": "online", "started_at": 1.0, "fleet": good}).encode()
    assert not fleet.on_status("gw-y", "storegate/v1/s/gw-y/status", status)
    assert fleet.on_status("gw-x", topic, status)
    assert fleet.live == {"gw-1", "gw-x"}


def test_handover_state_round_trip_and_refusals() -> None:
    state = HandedOver(
        ALICE,
        ALICE,
        "p-alice-3f9c",
        100.0,
        [VisitState("entrance", 90.0, True, True, None)],
        [
            {
                "offer_id": "of1",
                "profile_id": "p-alice-3f9c",
                "campaign": "c",
                "sku": "978",
                "code": "ABC",
                "store_day": "2026-12-03",
                "status": "issued",
                "issued_at": 95.0,
                "expires_at": 995.0,
            }
        ],
    )
    topic = "storegate/v1/s/gw-1/handover"
    payload = ownership.encode_handover(topic, KEY, "gw-1", [state], sent_at=100.0)
    assert ownership.decode_handover(payload, topic, "gw-1", key=KEY, now=101.0) == [state]

    def reason(data: bytes, **kw: object) -> str:
        with pytest.raises(ownership.HandoverRejected) as info:
            ownership.decode_handover(
                data,
                str(kw.get("topic", topic)),
                str(kw.get("gateway", "gw-1")),
                key=KEY,
                now=float(kw.get("now", 101.0)),  # type: ignore[arg-type]
            )
        return info.value.reason

    assert reason(payload[5:]) == "unsigned"
    assert reason(payload, topic="storegate/v1/s/gw-2/handover", gateway="gw-2") == (
        "bad_signature"
    )
    assert reason(payload, now=1000.0) == "stale"
    bad = {"v": 1, "gateway": "gw-1", "sent_at": 100.0, "devices": [{"device": ALICE}]}
    raw = json.dumps(bad).encode()
    signed = ownership.MAGIC + ownership._mac(KEY, topic, raw) + b"\n" + raw
    assert reason(signed) == "malformed"


def test_the_status_of_a_fleet_member_carries_its_claim(tmp_path: Path) -> None:
    config = parse_config(
        f"[gateway]\nid = 'gw-1'\nstate_dir = '{tmp_path}'\n[mqtt]\nenabled = true\n"
        f"share_sightings = true\npeer_sightings = true\npeer_key = '{KEY.hex()}'\n",
        "gw.toml",
        tmp_path,
    )
    topic = Topics("storegate/v1", config.gateway.store, "gw-1").status
    conn = db.connect(tmp_path / "gateway.db")
    up = uplink.Uplink(config, Outbox(conn), PinnedClock(10.0))
    fleet = ownership.Fleet("gw-2", KEY, 0.0)
    assert fleet.on_status("gw-1", topic, up._status("online"))
    assert fleet.on_status("gw-1", topic, up._status("offline"))
    conn.close()


class LinkCutter:
    """A TCP relay between one gateway and the broker whose cut drops the connection without
    an MQTT DISCONNECT, as a killed process or a pulled plug does: the broker sends the will."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        assert self.server is not None
        self.server.close()  # no reconnection either
        for writer in self.writers:
            writer.transport.abort()  # RST, no DISCONNECT


async def test_a_peer_lost_mid_visit_hands_its_shoppers_over_without_a_second_offer(
    tmp_path: Path, clock: PinnedClock
) -> None:
    """gw-a owns Alice (rendezvous over {gw-a, gw-b}); it is cut off mid-visit, after her
    offer. gw-b takes her over within seconds, goes on with her visits (no second enter, no
    second dwell) and, counting gw-a's offer, makes her none: one offer store-wide."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    cutter = LinkCutter(broker.port)
    relay_port = await cutter.start()
    profiles = json.loads(data_file("demo-profiles.json").read_text())
    trace_a, trace_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with trace_a.open("w") as fa, trace_b.open("w") as fb:
        for line in data_file("demo-trace.jsonl").read_text().splitlines():
            obj = json.loads(line)
            own = obj["kind"] == "ble" and obj["receiver"] in A_RECEIVERS
            (fa if own else fb).write(line + "\n")

    def gateway(name: str, port: int) -> Gateway:
        config = parse_config(
            f"[gateway]\nid = '{name}'\nstate_dir = '{tmp_path / name}'\n"
            "[sinks]\nstdout = false\n"
            f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {port}\n"
            "backoff_max_s = 0.3\nshare_sightings = true\npeer_sightings = true\n"
            f"peer_key = '{KEY.hex()}'\nshare_interval_s = 0.05\nkeepalive_s = 5\n",
            f"{name}.toml",
            tmp_path,
        )
        g = Gateway(config, quiet_sink=True, clock=clock)
        g.identity.load_seed(profiles)
        g.refresh()
        return g

    gw_a, gw_b = gateway("gw-a", relay_port), gateway("gw-b", broker.port)
    assert gw_a.fleet_work is not None and gw_b.fleet_work is not None
    b_events: list[PipelineEvent] = []

    def record(events: list[PipelineEvent], _queued: list[Queued]) -> None:
        b_events.extend(events)

    gw_b.add_sink(record)
    recorded = first_time(data_file("demo-trace.jsonl"))
    assert recorded is not None
    together = Rebase(lambda _first: clock.wall() - recorded)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    speed = 10.0
    run_b = asyncio.create_task(
        run_gateway(
            gw_b, [replay_source(gw_b, trace_b, speed, together), lambda _: stop_b.wait()], stop_b
        )
    )
    try:
        await wait_for(lambda: gw_b.uplink is not None and gw_b.uplink.stats.subscribed)
        run_a = asyncio.create_task(
            run_gateway(
                gw_a,
                [replay_source(gw_a, trace_a, speed, together), lambda _: stop_a.wait()],
                stop_a,
            )
        )
        await wait_for(lambda: gw_b.fleet_work is not None and "gw-a" in gw_b.fleet_work.fleet.live)
        assert gw_b.fleet_work.fleet.owner(ALICE) == "gw-a"

        def handed_over_mid_visit() -> bool:
            state = gw_b.pipeline.handed_over.get(ALICE)
            return (
                state is not None and bool(state.offers) and any(v.confirmed for v in state.visits)
            )

        await wait_for(handed_over_mid_visit, timeout=60)
        assert gw_a.pipeline.stats.offers_issued == 1
        visit_zones = {v.zone for v in gw_b.pipeline.handed_over[ALICE].visits if v.confirmed}
        seen_before = len(b_events)
        cutter.cut()  # gw-a vanishes: the broker publishes its will
        await wait_for(lambda: "gw-a" not in gw_b.fleet_work.fleet.live, timeout=10)
        assert gw_b.fleet_work.fleet.owns(ALICE)
        await wait_for(lambda: gw_b.pipeline.stats.taken_over >= 1, timeout=30)
        stop_a.set()
        run_a.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await run_a
        end = max(json.loads(line)["t"] for line in trace_b.read_text().splitlines())
        end += clock.wall() - recorded
        await wait_for(lambda: gw_b.pipeline.now >= end - 5.0, timeout=60)  # the trace played
    finally:
        stop_b.set()
        with suppress(asyncio.CancelledError):
            await run_b
        cutter.cut()
        broker.stop()
    after = [e for e in b_events[seen_before:] if getattr(e, "device", None) == ALICE]
    # the visits go on: B closes the ones it was handed (an exit, never a second enter)
    for zone in visit_zones:
        kinds = [e.kind for e in after if isinstance(e, ZoneEvent) and e.zone == zone]
        assert kinds[:1] == ["exit"], (zone, kinds)
    # one offer store-wide: gw-a's, which counts at gw-b (the same offer id in its database)
    assert gw_b.pipeline.stats.offers_issued == 0
    assert not [e for e in after if isinstance(e, OfferDecision) and e.issued]
    (issued,) = gw_b.conn.execute(
        "SELECT count(*) FROM offers WHERE profile_id = 'p-alice-3f9c'"
    ).fetchone()
    assert issued == 1
    gw_a.close()
    gw_b.close()
