"""One clock, two time bases: replays moved to the present, queue time for the outbox, and
times for people in the store's zone. None of this may depend on the day the suite runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.cli.status import _status_text
from gateway.clock import Clock, ManualClock, PinnedClock, SystemClock
from gateway.humantime import duration, local_datetime, parse_instant
from gateway.ops.demo import run_demo
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.sources.replay import first_time
from tests.conftest import STORE_MORNING

BERLIN = ZoneInfo("Europe/Berlin")
RECORDED = first_time(data_file("demo-trace.jsonl"))


def _demo(
    state: Path, clock: Clock, *, keep_times: bool = False, start: str = ""
) -> tuple[Gateway, str]:
    out = io.StringIO()
    _, gateway = run_demo(0, state, out, clock=clock, keep_times=keep_times, start=start)
    return gateway, out.getvalue()


def _event_times(gateway: Gateway) -> list[float]:
    return [float(r[0]) for r in gateway.conn.execute("SELECT occurred_at FROM outbox")]


# --- the clocks themselves ------------------------------------------------------------------


def test_pinned_clock_starts_where_told_and_ticks() -> None:
    clock = PinnedClock(STORE_MORNING)
    first = clock.wall()
    assert STORE_MORNING <= first < STORE_MORNING + 5
    assert clock.wall() >= first and clock.monotonic() > 0


def test_manual_clock_steps_wall_time_without_moving_monotonic_time() -> None:
    clock = ManualClock(1000.0, monotonic=5.0)
    clock.advance(2.5)
    assert (clock.wall(), clock.monotonic()) == (1002.5, 7.5)
    clock.set_wall(10.0)  # NTP corrects a box that booted without an RTC
    assert (clock.wall(), clock.monotonic()) == (10.0, 7.5)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_no_module_reads_the_system_clock_on_its_own() -> None:
    """Only gateway/clock.py calls time.time()/time.monotonic(); the rest is handed a Clock."""
    package = Path(__file__).resolve().parent.parent / "gateway"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "clock.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("time.time(", "time.monotonic(", "datetime.now(", "time.localtime("):
            if needle in text:
                offenders.append(f"{path.relative_to(package)}: {needle}")
    assert offenders == []


# --- replays moved to the present -----------------------------------------------------------


def test_demo_is_moved_to_now_and_loses_nothing(tmp_path: Path, clock: PinnedClock) -> None:
    gateway, output = _demo(tmp_path / "s", clock)
    times = _event_times(gateway)
    assert RECORDED is not None and min(times) - RECORDED > 365 * 86400  # really moved
    assert STORE_MORNING <= min(times) < STORE_MORNING + 60
    assert max(times) < STORE_MORNING + 600
    assert gateway.outbox_dropped == {}
    assert "dropped" not in output.split("Summary")[0]  # no drop, no warning, in the story
    assert "1 issued, 1 pushed, 1 redeemed" in output
    assert "replayed as if it began 2031-06-17 10:30" in output
    gateway.close()


def test_demo_summary_adds_up(tmp_path: Path, clock: PinnedClock) -> None:
    state = tmp_path / "s"
    gateway, output = _demo(state, clock)
    waiting = gateway.outbox.depth()
    line = next(x for x in output.splitlines() if x.strip().startswith("outbox"))
    breakdown = next(x for x in output.splitlines() if x.strip().startswith("waiting:"))
    counts = [int(part.rsplit(" ", 1)[1]) for part in breakdown.split(":", 1)[1].split(",")]
    assert sum(counts) == waiting
    assert f"{waiting} events queued by this run" in line and f"{waiting} waiting" in line
    assert "0 dropped" in line
    gateway.close()
    # Again on the same state: the same events (same ids), so nothing new is queued, and
    # what waits is still accounted for.
    again, output = _demo(state, clock)
    line = next(x for x in output.splitlines() if x.strip().startswith("outbox"))
    assert "0 events queued by this run" in line and f"{waiting} waiting" in line
    again.close()


def test_keep_times_replays_the_recording_as_it_was(tmp_path: Path, clock: PinnedClock) -> None:
    gateway, output = _demo(tmp_path / "s", clock, keep_times=True)
    assert RECORDED is not None and min(_event_times(gateway)) == pytest.approx(RECORDED, abs=5)
    # recorded years before the (pinned) wall clock, yet nothing expired: TTLs count from
    # the moment of queueing
    assert gateway.outbox_dropped == {} and "1 issued, 1 pushed" in output
    assert "Replayed at its recorded times" in output
    gateway.close()


def test_a_night_replay_keeps_quiet_hours_and_says_so(tmp_path: Path) -> None:
    night = datetime(2031, 6, 17, 23, 15, tzinfo=BERLIN).timestamp()
    gateway, output = _demo(tmp_path / "s", PinnedClock(night))
    assert "23:15 is inside the store's quiet hours" in output
    assert "--start 10:00" in output
    assert gateway.pipeline.stats.decisions["quiet_hours"] >= 1
    assert gateway.pipeline.stats.offers_issued == 0
    gateway.close()


def test_start_places_the_replay_at_a_chosen_time_of_day(tmp_path: Path) -> None:
    night = datetime(2031, 6, 17, 23, 15, tzinfo=BERLIN).timestamp()
    gateway, output = _demo(tmp_path / "s", PinnedClock(night), start="10:00")
    morning = datetime(2031, 6, 17, 10, 0, tzinfo=BERLIN).timestamp()
    assert min(_event_times(gateway)) == pytest.approx(morning, abs=5)
    assert "1 issued, 1 pushed, 1 redeemed" in output
    gateway.close()


@pytest.mark.parametrize("years", [0, 1, 5, 30])
def test_the_outcome_is_the_same_on_any_date(tmp_path: Path, years: int) -> None:
    when = datetime(2031 + years, 3, 3, 11, 0, tzinfo=BERLIN).timestamp()
    gateway, output = _demo(tmp_path / "s", PinnedClock(when))
    assert "1 issued, 1 pushed, 1 redeemed" in output
    assert gateway.outbox_dropped == {}
    gateway.close()


def test_outbox_bounds_count_queue_time_in_a_running_gateway(tmp_path: Path) -> None:
    """The daemon's own housekeeping: days pass on the wall clock, the beacon events expire
    (1-day TTL); the recording's age never mattered."""
    clock = ManualClock(STORE_MORNING)
    gateway, _ = _demo(tmp_path / "s", clock, keep_times=True)
    assert gateway.outbox.depth_by_type().get("beacon.health") == 6
    clock.advance(86400 + 60)
    gateway.work._last_bound = 0.0
    gateway.work._bound_outbox()
    assert gateway.outbox_dropped == {"expired:beacon": 6, "expired:zone": 36}
    assert "beacon.health" not in gateway.outbox.depth_by_type()
    assert gateway.outbox.depth_by_type()["offer.issued"] == 1  # 30-day TTL
    gateway.close()


# --- times for people -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (42.9, "42 s"),
        (303, "5 min 3 s"),
        (3600, "1 h"),
        (3 * 3600 + 12 * 60 + 5, "3 h 12 min"),
        (749730.1, "8 d 16 h"),
        (-90, "-1 min 30 s"),
    ],
)
def test_durations_in_words(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_local_datetime_is_the_store_zone_with_its_abbreviation() -> None:
    summer = datetime(2031, 6, 17, 8, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert local_datetime(summer, BERLIN) == "2031-06-17 10:30:00 CEST"
    assert local_datetime(summer, ZoneInfo("America/New_York")) == "2031-06-17 04:30:00 EDT"


def test_parse_instant() -> None:
    now = datetime(2031, 6, 17, 8, 0, tzinfo=BERLIN).timestamp()
    # the latest 10:00 not in the future: yesterday's
    assert (
        parse_instant("10:00", BERLIN, now)
        == datetime(2031, 6, 16, 10, 0, tzinfo=BERLIN).timestamp()
    )
    assert parse_instant("07:59:30", BERLIN, now) == now - 30
    assert (
        parse_instant("2031-01-02T03:04:05+00:00", BERLIN, now)
        == datetime(2031, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("UTC")).timestamp()
    )
    # no zone given: the store's
    assert (
        parse_instant("2031-01-02T10:00", BERLIN, now)
        == datetime(2031, 1, 2, 10, 0, tzinfo=BERLIN).timestamp()
    )
    for bad in ("25:00", "10h", "tomorrow", ""):
        with pytest.raises(ValueError):
            parse_instant(bad, BERLIN, now)


def test_status_speaks_the_store_time() -> None:
    started = datetime(2031, 6, 17, 8, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    data = {
        "gateway": "gw-1",
        "store": "s",
        "version": "0",
        "ready": True,
        "started_at": started,
        "uptime_s": 3 * 3600 + 12 * 60,
        "sources": {"rates_per_s": {}, "ble_adapters": {}, "nfc_readers": {}},
        "tracked_devices": 0,
        "zones": {},
        "last_offers": [
            {
                "t": started + 600,
                "profile": "p-1",
                "trigger": "enter:entrance",
                "issued": True,
                "reason": "cart_item_in_stock",
            }
        ],
        "outbox": {"depth": {"zone": 3}, "oldest_age_s": 749730.1},
        "mqtt": {"enabled": False},
        "loop_lag_ms": 0.1,
    }
    text = _status_text(data, BERLIN)
    assert "up 3 h 12 min (since 2031-06-17 10:00:00 CEST)" in text
    assert "2031-06-17 10:10:00 CEST p-1 enter:entrance: ISSUED" in text
    assert "oldest waiting 8 d 16 h" in text
    assert str(started) not in text and "749730" not in text


def test_offers_why_prints_store_time_not_epoch_seconds(tmp_path: Path) -> None:
    """A subprocess on the real clock: the state is written there, read by `offers why`."""
    config = tmp_path / "gw.toml"
    config.write_text(f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n")
    out = io.StringIO()
    _, gateway = run_demo(0, tmp_path / "state", out, clock=SystemClock(), start="10:00")
    gateway.close()
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "offers", "why", "p-alice-3f9c", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines and all(" CET " in x or " CEST " in x for x in lines), lines
    first = lines[0].split()
    assert first[1].startswith("10:00:")  # the replay began at 10:00 store time
    assert not any(part.replace(".", "").isdigit() and len(part) >= 10 for part in first)


# --- line-per-line filters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "blank"),
    [
        (["decode"], {"frame": None, "reason": "empty"}),
        (["nfc", "parse"], {"records": [], "error": "message_empty"}),
    ],
)
def test_filters_answer_every_line(command: list[str], blank: dict[str, object]) -> None:
    lines = ["", "zz", "   ", "0201061aff4c000215" + "00" * 21, ""]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(out) == len(lines)  # zip-able with the input
    assert out[0] == out[2] == out[4]
    assert blank.items() <= out[0].items()
