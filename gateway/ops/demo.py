"""`gateway demo`: the bookstore scenario through the whole pipeline, no broker, no radio.

The recorded scenario is moved to the present (see `sources.replay`), so what it shows is
what a live shop would do now: the store's quiet hours and store day apply to the replayed
times, and every line is stamped in the store's time zone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.config.edges import ReplaySection, SourcesSection
from gateway.config.sections import Config
from gateway.humantime import local, local_datetime
from gateway.offers.holds import list_holds
from gateway.offers.rules import in_quiet_hours
from gateway.resources import data_file
from gateway.runtime.commit import RunSummary
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_pipeline
from gateway.runtime.sources import replay_rebase, replay_source
from gateway.sinks.terminal import ConsoleReporter
from gateway.sources.replay import first_time

DEMO_TRACE = "demo-trace.jsonl"
DEMO_PROFILES = "demo-profiles.json"
# `gateway demo --last-copy` (issue 20): the shop has one copy of the book in Alice's cart,
# on the fiction table, and the walker the demo otherwise does not know (iBeacon minor 77)
# is Carol, who saved it too. Offers are valid 70 s, so Alice's hold lapses within the
# recording: Carol, lingering at the fiction table while it is held for Alice, hears
# held_for_other; walking out past the entrance after it lapsed, she is offered the copy.
LAST_COPY_SKU = "978-0441478125"
LAST_COPY_VALIDITY_S = 70
LAST_COPY = {
    "profiles": [
        {
            "profile_id": "p-carol-5e1a",
            "language": "de",
            "consent": {"proximity_offers": True, "at": "2026-10-02T09:00:00Z", "source": "app"},
            "identifiers": [
                {"kind": "ibeacon", "value": "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:77"}
            ],
            "cart": [
                {
                    "sku": LAST_COPY_SKU,
                    "title": "The Left Hand of Darkness",
                    "price": 9.99,
                    "added_at": "2026-11-20T18:00:00Z",
                }
            ],
        }
    ],
    "stock": [
        {
            "sku": LAST_COPY_SKU,
            "title": "The Left Hand of Darkness",
            "quantity": 1,
            "zone_id": "aisle-fiction",
        }
    ],
}


def demo_config(state_dir: Path, speed: float, last_copy: bool = False) -> Config:
    base = Config(base_dir=state_dir)
    config = dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, state_dir=str(state_dir)),
        sources=SourcesSection(replay=ReplaySection(path=str(data_file(DEMO_TRACE)), speed=speed)),
    )
    if last_copy:
        offers = config.offers
        rule = dataclasses.replace(offers.pickup_discount, validity_s=LAST_COPY_VALIDITY_S)
        config = dataclasses.replace(
            config, offers=dataclasses.replace(offers, pickup_discount=rule)
        )
    return config


def run_demo(
    speed: float,
    state_dir: Path | None,
    out: TextIO,
    trace: Path | None = None,
    *,
    clock: Clock,
    keep_times: bool = False,
    start: str = "",
    last_copy: bool = False,
) -> tuple[RunSummary, Gateway]:
    """Raises ValueError for a `start` that cannot be read."""
    with tempfile.TemporaryDirectory(prefix="gateway-demo-") as tmp:
        state = state_dir or Path(tmp)
        config = demo_config(state, speed, last_copy)
        gateway = Gateway(config, reporter=None, clock=clock)
        try:
            rebase = replay_rebase(gateway, keep_times, start)
        except ValueError:
            gateway.close()
            raise
        reporter = ConsoleReporter(config.gateway.timezone, gateway.pipeline.pseudonym, out)
        gateway.report_to(reporter, out)
        gateway.identity.load_seed(json.loads(data_file(DEMO_PROFILES).read_text()))
        if last_copy:
            gateway.identity.load_seed(LAST_COPY)
            reporter.line(
                "Last copy: one copy of The Left Hand of Darkness (on the fiction table), "
                f"saved by Alice and by Carol; offers are valid {LAST_COPY_VALIDITY_S} s"
            )
        gateway.refresh()
        trace_path = trace or Path(config.sources.replay.path)
        reporter.line(
            f"Demo bookstore: replaying {trace_path.name} through "
            f"{len(gateway.store_map.zones)} zones, "
            f"{len(gateway.store_map.receivers)} receivers, state in {state}"
        )
        recorded = first_time(trace_path)
        if recorded is not None:
            _say_when(gateway, reporter, recorded, rebase.shift_for(recorded))
        reporter.line("")
        summary = asyncio.run(
            run_pipeline(gateway, [replay_source(gateway, trace_path, speed, rebase)])
        )
        print_summary(gateway, summary, reporter)
        if state_dir is None:
            gateway.close()
        return summary, gateway


def _say_when(gateway: Gateway, reporter: ConsoleReporter, recorded: float, shift: float) -> None:
    """The one time base of the lines below, said once: store-local, with the date."""
    tz = ZoneInfo(gateway.config.gateway.timezone)
    starts = recorded + shift
    if shift:
        reporter.line(
            f"Recorded {local_datetime(recorded, tz)}, replayed as if it began "
            f"{local_datetime(starts, tz)} (times below: {tz.key})"
        )
    else:
        reporter.line(f"Replayed at its recorded times from {local_datetime(starts, tz)}")
    quiet = gateway.config.offers.limits.quiet_hours
    moment = local(starts, tz)
    if in_quiet_hours(quiet, moment.hour * 60 + moment.minute):
        reporter.line(
            f"{moment:%H:%M} is inside the store's quiet hours ({quiet[0]}–{quiet[1]}): "
            "offers are decided but none is pushed. To watch one, replay it as at opening "
            "time: gateway demo --start 10:00"
        )


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
    ended = Counter(r.status for r in list_holds(gateway.conn))
    if ended:
        placed = sum(ended.values())
        states = ", ".join(f"{k} {v}" for k, v in sorted(ended.items()))
        p(f"  holds        {placed} placed; now {states}")
    taps = ", ".join(f"{k} {v}" for k, v in sorted(stats.taps_rejected.items()))
    p(f"  NFC          {stats.taps} taps ({taps or 'none ignored'})")
    queued = sum(summary.outbox_added.values())
    dropped = sum(gateway.outbox_dropped.values())
    delivered = gateway.uplink.stats.delivered if gateway.uplink is not None else 0
    waiting = gateway.outbox.depth_by_type()
    p(
        f"  outbox       {queued} events queued by this run; {delivered} delivered "
        f"(no uplink in the demo), {dropped} dropped; {sum(waiting.values())} waiting"
    )
    breakdown = ", ".join(f"{k} {v}" for k, v in waiting.items()) or "nothing"
    p(f"               waiting: {breakdown}")
    if dropped:
        p(f"               dropped: {dict(sorted(gateway.outbox_dropped.items()))}")
    if summary.trace_errors:
        p(f"  trace        {len(summary.trace_errors)} bad lines rejected")
