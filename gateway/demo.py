"""`gateway demo`: the bookstore scenario through the whole pipeline, no broker, no radio."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import TextIO

from .config import Config, ReplaySection, SourcesSection
from .daemon import Gateway, RunSummary, replay_source, run_pipeline
from .report import ConsoleReporter
from .resources import data_file

DEMO_TRACE = "demo-trace.jsonl"
DEMO_PROFILES = "demo-profiles.json"


def demo_config(state_dir: Path, speed: float) -> Config:
    base = Config(base_dir=state_dir)
    return dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, state_dir=str(state_dir)),
        sources=SourcesSection(replay=ReplaySection(path=str(data_file(DEMO_TRACE)), speed=speed)),
    )


def run_demo(
    speed: float, state_dir: Path | None, out: TextIO, trace: Path | None = None
) -> tuple[RunSummary, Gateway]:
    with tempfile.TemporaryDirectory(prefix="gateway-demo-") as tmp:
        state = state_dir or Path(tmp)
        config = demo_config(state, speed)
        gateway = Gateway(config, reporter=None)
        reporter = ConsoleReporter(config.gateway.timezone, gateway.pipeline.pseudonym, out)
        gateway.reporter = reporter
        gateway.sink.out = out
        gateway.identity.load_seed(json.loads(data_file(DEMO_PROFILES).read_text()))
        gateway.refresh()
        trace_path = trace or Path(config.sources.replay.path)
        reporter.line(
            f"Demo bookstore: replaying {trace_path.name} through "
            f"{len(gateway.store_map.zones)} zones, "
            f"{len(gateway.store_map.receivers)} receivers, state in {state}"
        )
        reporter.line("")
        summary = asyncio.run(run_pipeline(gateway, [replay_source(gateway, trace_path, speed)]))
        print_summary(gateway, summary, reporter)
        if state_dir is None:
            gateway.close()
        return summary, gateway


def print_summary(gateway: Gateway, summary: RunSummary, reporter: ConsoleReporter) -> None:
    stats = gateway.pipeline.stats
    span = (summary.last_t or 0) - (summary.first_t or 0)
    p = reporter.line
    p("")
    p("Summary")
    p(
        f"  input        {summary.items} items over {span:.0f} s of store time "
        f"({stats.adverts} adverts, {stats.taps} NFC taps) in {summary.wall_s:.2f} s"
    )
    frames = ", ".join(f"{k} {v}" for k, v in sorted(stats.decode.frames.items())) or "none"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.decode.rejected.items())) or "none"
    p(f"  decoded      {frames}; rejected: {rejected}")
    p(
        f"  anchors      {len(stats.anchor_adverts)} fixed beacons heard "
        f"({sum(stats.anchor_adverts.values())} adverts)"
    )
    presence = ", ".join(f"{k} {v}" for k, v in sorted(gateway.pipeline.presence.rejected.items()))
    p(f"  presence     readings rejected: {presence or 'none'}")
    zones = ", ".join(f"{k} {v}" for k, v in sorted(stats.zone_events.items()))
    p(f"  zone events  {zones}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.decisions.items()))
    p(f"  decisions    {reasons}")
    p(
        f"  offers       {stats.offers_issued} issued, {summary.pushes} pushed, "
        f"{stats.redemptions} redeemed"
    )
    taps = ", ".join(f"{k} {v}" for k, v in sorted(stats.taps_rejected.items()))
    p(f"  NFC          {stats.taps} taps ({taps or 'none ignored'})")
    queued = ", ".join(f"{k} {v}" for k, v in sorted(summary.outbox_added.items()))
    p(f"  outbox       {gateway.outbox.depth()} events waiting for the uplink: {queued}")
    if summary.trace_errors:
        p(f"  trace        {len(summary.trace_errors)} bad lines rejected")
