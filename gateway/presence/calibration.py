"""Calibration: how loud a known beacon really is at a receiver of this store.

Staff hold (or place) a beacon whose hardware profile is known at a measured distance from a
gateway's receiver for some seconds. The median RSSI, moved to 1 m with the log-distance
model, is the *measured power* of that beacon at that receiver; its difference from the
profile's nominal measured power is the receiver's **offset**: antenna gain, enclosure,
mounting. Every device heard by that receiver is then ranged with its own measured power plus
that offset (presence stage), so one calibration fixes all devices at that receiver.

The result is store-local state, `<state_dir>/calibration.toml`:

    [receivers.gw-entrance]
    offset_db = 3.4
    [beacons.bcn-entrance]
    measured_power_dbm = -55.6   # at gw-entrance, moved to 1 m
    samples = 58
    spread_db = 2.1              # interquartile range of the readings
    calibrated_at = "2026-11-23T10:02:00+00:00"

`gateway calibrate` (and the staff console's helper) run the same `Calibrator`; the file is read
and written by `gateway.store.calibration`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from gateway.store.calibration import MAX_OFFSET_DB

MIN_SAMPLES = 10
# Offsets beyond this are not an antenna but a mistake (wrong beacon, wrong distance).


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    beacon: str
    receiver: str
    distance_m: float
    samples: int
    median_dbm: float
    p10_dbm: float
    p90_dbm: float
    spread_db: float  # interquartile range
    measured_power_dbm: float  # median moved to 1 m
    nominal_power_dbm: float
    offset_db: float  # measured minus nominal: the receiver's own gain

    def problems(self) -> list[str]:
        out = []
        if self.samples < MIN_SAMPLES:
            out.append(f"only {self.samples} readings; measure longer (≥ {MIN_SAMPLES})")
        if abs(self.offset_db) > MAX_OFFSET_DB:
            out.append(
                f"offset {self.offset_db:+.1f} dB is implausible: check the beacon id and "
                "the distance"
            )
        if self.spread_db > 8.0:
            out.append(
                f"readings spread {self.spread_db:.1f} dB: keep still, clear the line of sight"
            )
        return out


@dataclass(slots=True)
class Calibrator:
    beacon: str
    distance_m: float
    nominal_power_dbm: float
    path_loss_exponent: float
    readings: dict[str, list[int]] = field(default_factory=dict)  # receiver → RSSI

    def add(self, receiver: str, rssi: int) -> None:
        self.readings.setdefault(receiver, []).append(rssi)

    def count(self, receiver: str | None = None) -> int:
        if receiver is not None:
            return len(self.readings.get(receiver, []))
        return max((len(v) for v in self.readings.values()), default=0)

    def best_receiver(self) -> str | None:
        """The receiver the beacon is held at: the loudest of those that heard it enough
        (every receiver in the shop hears it; the far ones are not being calibrated)."""
        if not self.readings:
            return None
        enough = [r for r, v in self.readings.items() if len(v) >= MIN_SAMPLES]
        return max(enough or self.readings, key=lambda r: statistics.median(self.readings[r]))

    def result(self, receiver: str | None = None) -> CalibrationResult | None:
        receiver = receiver or self.best_receiver()
        values = sorted(self.readings.get(receiver or "", []))
        if receiver is None or not values:
            return None
        median = float(statistics.median(values))
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [median] * 3
        deciles = statistics.quantiles(values, n=10) if len(values) > 1 else [median] * 9
        at_1m = median + 10.0 * self.path_loss_exponent * math.log10(self.distance_m)
        return CalibrationResult(
            beacon=self.beacon,
            receiver=receiver,
            distance_m=self.distance_m,
            samples=len(values),
            median_dbm=round(median, 1),
            p10_dbm=round(deciles[0], 1),
            p90_dbm=round(deciles[-1], 1),
            spread_db=round(quartiles[2] - quartiles[0], 1),
            measured_power_dbm=round(at_1m, 1),
            nominal_power_dbm=self.nominal_power_dbm,
            offset_db=round(at_1m - self.nominal_power_dbm, 1),
        )
