"""Self-calibration from what never moves: per-receiver offsets learned online from the
store's fixed beacons.

Each fixed beacon of the map sits at a known place, so every receiver hearing it knows what it
*should* read (`expected`: the log-distance model with the beacon's profile power, or the
survey's radio map). The residual, heard minus expected, is the receiver's offset plus noise:
a receiver that drifts, or was moved behind a shelf, reads consistently off.

* **Robust**: the offset follows the *median* of the residuals, by steps of `STEP_DB` towards
  each new residual's side (a stochastic median: a burst of outliers moves it by at most
  one step each, never by their size).
* **Slow**: `STEP_DB` per reading; with a beacon every second, about a decibel a minute.
  Nothing is applied to positioning before `MIN_SAMPLES` readings.
* **Bounded**: within ±`BOUND_DB`; a receiver pinned at the bound is reported, not trusted
  further.
* **Relative with a survey**: the survey's map is in the survey beacon's units, so a fixed
  beacon's own power is unknown: each beacon's common residual over its receivers is learned
  alongside and removed (a beacon's battery sag is not blamed on the receivers).

Only beacons within `MAX_DISTANCE_M` of a receiver teach it (far away the model is weakest).
Pure: `gateway.pipeline` feeds it and hands the offsets to the tracker.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

STEP_DB = 0.02
MIN_SAMPLES = 200
BOUND_DB = 10.0
MAX_DISTANCE_M = 12.0

# (receiver, beacon x, beacon y, beacon id) → expected RSSI without learned offsets, or None
Expected = Callable[[str, float, float, str], float | None]


@dataclass(slots=True)
class SelfCalibration:
    beacons: dict[str, tuple[float, float]]  # fixed beacon id → position
    receivers: dict[str, tuple[float, float]]
    expected: Expected
    relative: bool = False  # a survey: beacon powers unknown, learned alongside
    learned: dict[str, float] = field(default_factory=dict)  # receiver → offset, dB
    samples: Counter[str] = field(default_factory=Counter)
    beacon_bias: dict[str, float] = field(default_factory=dict)
    # what the tracker applies: offsets of receivers with enough samples
    applied: dict[str, float] = field(default_factory=dict)

    def observe(self, beacon: str, receiver: str, rssi: float) -> None:
        at = self.beacons.get(beacon)
        where = self.receivers.get(receiver)
        if at is None or where is None or not -127.0 <= rssi < 0.0:
            return
        if math.hypot(at[0] - where[0], at[1] - where[1]) > MAX_DISTANCE_M:
            return
        expected = self.expected(receiver, at[0], at[1], beacon)
        if expected is None or not math.isfinite(expected):
            return
        residual = rssi - expected
        offset = self.learned.get(receiver, 0.0)
        bias = self.beacon_bias.get(beacon, 0.0)
        if self.relative:
            step = STEP_DB * 5 if self.samples[f"beacon:{beacon}"] < MIN_SAMPLES else STEP_DB
            self.samples[f"beacon:{beacon}"] += 1
            bias += step if residual - offset > bias else -step
            self.beacon_bias[beacon] = bias
        offset += STEP_DB if residual - bias > offset else -STEP_DB
        offset = min(max(offset, -BOUND_DB), BOUND_DB)
        self.learned[receiver] = offset
        self.samples[receiver] += 1
        if self.samples[receiver] >= MIN_SAMPLES:
            self.applied[receiver] = offset

    def report(self) -> dict[str, dict[str, float | int | bool]]:
        """Per receiver: the learned offset, its readings, whether positioning applies it
        and whether it sits at the bound (check that receiver)."""
        return {
            r: {
                "offset_db": round(self.learned[r], 2),
                "samples": self.samples[r],
                "applied": r in self.applied,
                "at_bound": abs(self.learned[r]) >= BOUND_DB,
            }
            for r in sorted(self.learned)
        }
