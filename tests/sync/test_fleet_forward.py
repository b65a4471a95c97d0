"""Work sharing in-process: hearers forward decoded readings (PGS3) to the owner, which folds
them with its next batch behind a one-interval jitter buffer. Real gateways, real signed
frames, the broker left out (tests/sync/test_peers.py and test_fleet.py run it through one)."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

from gateway.clock import ManualClock
from gateway.config.sections import parse_config
from gateway.model import Advert, OfferDecision, PipelineEvent
from gateway.resources import data_file
from gateway.runtime.commit import Queued
from gateway.runtime.gateway import Gateway
from gateway.sync.topics import Topics
from gateway.trace import parse_line

KEY = bytes.fromhex("a1" * 32)
A_RECEIVERS = {"gw-entrance", "gw-sw", "gw-nw"}
SLICE_S = 0.2


def _adverts() -> list[Advert]:
    out = []
    for i, line in enumerate(data_file("demo-trace.jsonl").read_text().splitlines()):
        item = parse_line(line, i + 1)
        if isinstance(item, Advert):
            out.append(item)
    return out


def _gateway(tmp_path: Path, name: str, clock: ManualClock, fleet: bool) -> Gateway:
    sharing = (
        f"[mqtt]\nshare_sightings = true\npeer_sightings = true\npeer_key = '{KEY.hex()}'\n"
        f"share_interval_s = {SLICE_S}\n"
        if fleet
        else ""
    )
    config = parse_config(
        f"[gateway]\nid = '{name}'\nstate_dir = '{tmp_path / name}'\n[sinks]\nstdout = false\n"
        + sharing,
        f"{name}.toml",
        tmp_path,
    )
    g = Gateway(config, quiet_sink=True, clock=clock)
    g.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    g.refresh()
    return g


def _decisions(g: Gateway) -> Counter[tuple[str, str, str, bool]]:
    decided: Counter[tuple[str, str, str, bool]] = Counter()

    def record(events: list[PipelineEvent], _q: list[Queued]) -> None:
        for e in events:
            if isinstance(e, OfferDecision):
                decided[(e.device, e.trigger, e.campaign, e.issued)] += 1

    g.add_sink(record)
    return decided


def test_the_owner_decides_once_from_both_halves_of_the_receivers(tmp_path: Path) -> None:
    adverts = _adverts()
    clock = ManualClock(adverts[0].t)
    alone = _gateway(tmp_path, "gw-alone", clock, fleet=False)
    single = _decisions(alone)
    for k in range(0, len(adverts), 256):
        alone.process(list(adverts[k : k + 256]))
    alone.close()

    clock = ManualClock(adverts[0].t)
    pair = [_gateway(tmp_path, name, clock, fleet=True) for name in ("gw-a", "gw-b")]
    decided = [_decisions(g) for g in pair]
    for g in pair:
        assert g.fleet_work is not None
        g.fleet_work.fleet.live = {"gw-a", "gw-b"}
        g.fleet_work.fleet.ready = True
    topics = [Topics("storegate/v1", g.config.gateway.store, g.config.gateway.id) for g in pair]
    index, end = 0, adverts[0].t + SLICE_S
    frames_sent = 0
    while index < len(adverts):
        local: list[list[Advert]] = [[], []]
        while index < len(adverts) and adverts[index].t < end:
            a = adverts[index]
            local[0 if a.receiver in A_RECEIVERS else 1].append(a)
            index += 1
        clock.set_wall(end)
        frames: list[list[tuple[str, bytes]]] = [[], []]
        for i, g in enumerate(pair):
            g.process(list(local[i]))
            assert g.fleet_work is not None
            for p in g.fleet_work.forwards(topics[i]):
                assert p.topic == topics[i].forwarded(topics[1 - i].gateway)
                frames[1 - i].append((g.config.gateway.id, p.payload))
                frames_sent += 1
        for i, g in enumerate(pair):
            assert g.fleet_work is not None
            for sender, payload in frames[i]:
                g.fleet_work.on_forwarded(sender, payload, idle=False)
        end += SLICE_S
    for g in pair:
        g.process([])  # the last frames
        g.advance(end + 60.0)
    assert frames_sent > 0
    everything = decided[0] + decided[1]
    # Each shopper's decisions are made by her owner only (never by both gateways); the
    # consenting shoppers' decisions and the issued offers are the lone gateway's.
    assert not set(decided[0]) & set(decided[1]), everything

    def consenting(c: Counter[tuple[str, str, str, bool]]) -> set[tuple[str, str, str, bool]]:
        return {k for k in c if not k[0].startswith("visit:")}

    assert consenting(everything) == consenting(single)
    assert {k for k in everything if k[3]} == {k for k in single if k[3]}
    assert sum(g.pipeline.stats.forwarded_in for g in pair) > 0
    assert sum(g.pipeline.stats.not_owned for g in pair) > 0
    for g in pair:
        assert g.pipeline.stats.misrouted == 0
        assert g.fleet_work is not None
        assert not any(k.startswith("forward_rejected") for k in g.fleet_work.stats)
        assert g.pipeline.inbox == []
        g.close()


def test_the_jitter_buffer_waits_one_interval_and_misrouted_readings_are_left_out(
    tmp_path: Path,
) -> None:
    adverts = [a for a in _adverts() if a.receiver == "gw-entrance"][:400]
    clock = ManualClock(adverts[0].t)
    g = _gateway(tmp_path, "gw-a", clock, fleet=True)
    assert g.fleet_work is not None and g.pipeline.solve_delay_s == SLICE_S
    g.fleet_work.fleet.ready = True  # alone in its fleet: it owns every device
    pipeline = g.pipeline
    solved: list[float] = []
    solve = pipeline.presence.positions_many

    def watch(due: list[tuple[str, float]]) -> list[object]:
        solved.extend(pipeline.now - t for _, t in due)
        return solve(due)  # type: ignore[return-value]

    pipeline.presence.positions_many = watch  # type: ignore[assignment,method-assign]
    for a in adverts:
        g.process([a])
    assert solved and min(solved) >= SLICE_S - 1e-9  # never before one interval has passed
    # and at the latest at the next solve or the next half-second check after that
    gap = max(b.t - a.t for a, b in pairwise(adverts))
    assert max(solved) <= SLICE_S + 0.5 + gap
    # A reading forwarded for a device this gateway does not own is counted, not folded.
    g.fleet_work.fleet.live = {"gw-a", "gw-z"}
    g.fleet_work.fleet.forget()
    theirs = next(d for d in (f"ibeacon:x:1:{i}" for i in range(100)) if not g.fleet_work.owns(d))
    t = adverts[-1].t
    pipeline.inbox.append((theirs, -59, [(t, "gw-entrance", -60)]))
    g.process([])
    assert pipeline.stats.misrouted == 1 and theirs not in pipeline.presence.devices
    g.close()
