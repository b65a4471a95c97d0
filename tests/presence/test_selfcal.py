"""Self-calibration from the fixed beacons: robust, slow, bounded, and applied."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import PinnedClock
from gateway.ops.demo import run_demo
from gateway.presence.selfcal import BOUND_DB, MIN_SAMPLES, STEP_DB, SelfCalibration
from tests.conftest import STORE_MORNING

RECEIVERS = {"r1": (0.0, 0.0), "r2": (10.0, 0.0), "r3": (10.0, 8.0), "r4": (0.0, 8.0)}
BEACONS = {"b1": (3.0, 2.0), "b2": (7.0, 6.0), "b3": (5.0, 4.0)}


def _model(receiver: str, x: float, y: float, beacon: str) -> float:
    rx, ry = RECEIVERS[receiver]
    return -59.0 - 25.0 * math.log10(math.hypot(x - rx, y - ry) + 0.5)


def _feed(
    cal: SelfCalibration,
    drift: dict[str, float],
    n: int,
    seed: int = 1,
    beacon_bias: dict[str, float] | None = None,
) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        for beacon, (bx, by) in BEACONS.items():
            for receiver in RECEIVERS:
                rssi = _model(receiver, bx, by, beacon) + drift.get(receiver, 0.0)
                rssi += (beacon_bias or {}).get(beacon, 0.0) + rng.gauss(0, 4)
                if rng.random() < 0.1:
                    rssi -= 25.0  # a body in the way: a deep fade
                cal.observe(beacon, receiver, max(-120.0, rssi))


def test_a_drifting_receiver_is_found_and_the_others_stay_put() -> None:
    cal = SelfCalibration(BEACONS, RECEIVERS, _model)
    _feed(cal, {"r2": 6.0}, n=800)
    assert cal.learned["r2"] == pytest.approx(6.0, abs=1.0)
    for r in ("r1", "r3", "r4"):
        assert cal.learned[r] == pytest.approx(0.0, abs=1.0)  # 10 % deep fades do not drag
    assert set(cal.applied) == set(RECEIVERS)
    assert cal.report()["r2"]["applied"] is True


def test_it_is_slow_and_applied_only_once_settled() -> None:
    cal = SelfCalibration(BEACONS, RECEIVERS, _model)
    _feed(cal, {"r1": 8.0}, n=20)  # 60 readings per receiver
    assert cal.learned["r1"] <= 60 * STEP_DB + 1e-9
    assert cal.applied == {}
    assert cal.samples["r1"] < MIN_SAMPLES


def test_it_is_bounded() -> None:
    cal = SelfCalibration(BEACONS, RECEIVERS, _model)
    _feed(cal, {"r3": -30.0}, n=1500)
    assert cal.learned["r3"] == -BOUND_DB
    assert cal.report()["r3"]["at_bound"] is True


def test_with_a_survey_a_beacons_own_power_is_not_blamed_on_receivers() -> None:
    """Relative mode: beacon b2 is 7 dB louder than the survey beacon; r4 drifts −5 dB."""
    cal = SelfCalibration(BEACONS, RECEIVERS, _model, relative=True)
    _feed(cal, {"r4": -5.0}, n=1500, beacon_bias={"b2": 7.0})
    spread = [cal.learned[r] - cal.learned["r1"] for r in RECEIVERS]
    assert spread[3] == pytest.approx(-5.0, abs=1.2)
    assert max(abs(v) for v in spread[:3]) < 1.2
    assert cal.beacon_bias["b2"] - cal.beacon_bias["b1"] == pytest.approx(7.0, abs=1.2)


def test_unknown_and_far_beacons_teach_nothing() -> None:
    cal = SelfCalibration({"far": (100.0, 100.0)}, RECEIVERS, _model)
    cal.observe("far", "r1", -80.0)
    cal.observe("nope", "r1", -80.0)
    cal.observe("far", "nope", -80.0)
    assert cal.learned == {}


def test_the_running_pipeline_learns_from_the_demo_stores_beacons(tmp_path: Path) -> None:
    """The demo trace through the real pipeline: its fixed beacons teach the receivers, and
    staff see the offsets in the status document, `gateway status` and /metrics."""
    from gateway.cli.status import _status_text
    from gateway.runtime.metrics import Runtime, exposition
    from gateway.runtime.status import StatusView

    clock = PinnedClock(STORE_MORNING)
    _, gateway = run_demo(0, tmp_path / "state", io.StringIO(), None, clock=clock)
    try:
        selfcal = gateway.pipeline.selfcal
        assert sum(selfcal.samples[r] for r in gateway.store_map.receivers) > 0
        assert gateway.pipeline.presence.learned_offsets is selfcal.applied
        view = StatusView(gateway, Runtime(clock=clock))
        doc = view.document()
        offsets = doc["sources"]["receiver_offsets"]
        assert offsets and all(abs(o["offset_db"]) <= BOUND_DB for o in offsets.values())
        text = _status_text(dict(doc), ZoneInfo("UTC"))
        assert "from fixed beacons" in text
        scrape = exposition(view)
        for receiver in gateway.store_map.receivers:
            assert f'gateway_receiver_offset_db{{receiver="{receiver}"}}' in scrape
    finally:
        gateway.close()
