"""The unit of work keeps the outbox within its quota at every commit, and the shedding it
does reports itself: cumulative counts in /status and /metrics, and a notice that stays."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gateway.clock import PinnedClock
from gateway.config.sections import Config, parse_config
from gateway.model import Advert, Tap
from gateway.resources import data_file
from gateway.runtime.commit import Item
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import Runtime, exposition
from gateway.runtime.status import StatusView
from gateway.trace import parse_line

QUOTA = 12


def _config(tmp_path: Path) -> Config:
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n",
        "test.toml",
        tmp_path,
    )
    # Below the configurable minimum (1000), so that the demo trace overflows it.
    return dataclasses.replace(config, outbox=dataclasses.replace(config.outbox, max_events=QUOTA))


def _items(clock: PinnedClock) -> list[Item]:
    lines = data_file("demo-trace.jsonl").read_text().splitlines()
    parsed = [parse_line(text, n) for n, text in enumerate(lines, start=1)]
    items: list[Item] = [i for i in parsed if isinstance(i, (Advert, Tap))]
    shift = clock.wall() - items[0].t
    return [dataclasses.replace(i, t=i.t + shift) for i in items]


def test_the_quota_holds_at_every_commit_and_shedding_is_reported(
    tmp_path: Path, clock: PinnedClock
) -> None:
    gateway = Gateway(_config(tmp_path), quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    items = _items(clock)
    worst = 0
    for start in range(0, len(items), 16):
        gateway.process(items[start : start + 16])
        kept = gateway.outbox.depth_by_type()
        protected = sum(n for t, n in kept.items() if t.startswith("redemption."))
        protected += kept.get("gateway.outbox_dropped", 0)
        worst = max(worst, gateway.outbox.depth() - protected)
    assert worst <= QUOTA  # never over the quota after a commit, not only every 10 s
    dropped = dict(gateway.outbox_dropped)
    assert sum(dropped.values()) > 0 and all(k.startswith("shed:") for k in dropped)
    # every pass's notice is still waiting for the uplink: shedding never sheds its report
    notices = gateway.outbox.depth_by_type().get("gateway.outbox_dropped", 0)
    assert notices >= 1
    view = StatusView(gateway, Runtime(clock=clock))
    assert view.document()["outbox"]["dropped"] == dict(sorted(dropped.items()))
    metrics = exposition(view)
    for key, n in dropped.items():
        reason, _, stream = key.partition(":")
        line = f'gateway_outbox_dropped_total{{reason="{reason}",stream="{stream}"}} {n}'
        assert line in metrics
    gateway.close()


def test_a_reload_moves_the_push_lines_to_the_new_time_zone(
    tmp_path: Path, clock: PinnedClock
) -> None:
    gateway = Gateway(_config(tmp_path), quiet_sink=True, clock=clock)
    assert str(gateway.shop_floor.tz) == "Europe/Berlin"
    new = dataclasses.replace(
        gateway.config,
        gateway=dataclasses.replace(gateway.config.gateway, timezone="America/Toronto"),
    )
    assert gateway.reload(new) == []
    assert str(gateway.shop_floor.tz) == "America/Toronto"
    assert str(gateway.offers.tz) == "America/Toronto"
    gateway.close()
