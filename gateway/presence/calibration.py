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

`gateway calibrate` (and the staff console's helper) run the same `Calibrator`.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE = "calibration.toml"
MIN_SAMPLES = 10
# Offsets beyond this are not an antenna but a mistake (wrong beacon, wrong distance).
MAX_OFFSET_DB = 20.0


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


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def load(state_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    path = state_dir / FILE
    if not path.exists():
        return {"receivers": {}, "beacons": {}}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {"receivers": data.get("receivers", {}), "beacons": data.get("beacons", {})}


def receiver_offsets(state_dir: Path) -> dict[str, float]:
    """Receiver → offset in dB from the store-local calibration (empty when none)."""
    try:
        data = load(state_dir)
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    out = {}
    for receiver, values in data["receivers"].items():
        offset = values.get("offset_db") if isinstance(values, dict) else None
        if isinstance(offset, (int, float)) and abs(offset) <= MAX_OFFSET_DB:
            out[str(receiver)] = float(offset)
    return out


def save(state_dir: Path, result: CalibrationResult, now: float) -> Path:
    """Merge one result into calibration.toml (atomically: write, then rename); `now` is the
    wall time of the measurement, kept in UTC."""
    data = load(state_dir)
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    data["receivers"][result.receiver] = {
        "offset_db": result.offset_db,
        "beacon": result.beacon,
        "calibrated_at": stamp,
    }
    data["beacons"][result.beacon] = {
        "measured_power_dbm": result.measured_power_dbm,
        "nominal": False,
        "receiver": result.receiver,
        "distance_m": result.distance_m,
        "samples": result.samples,
        "median_dbm": result.median_dbm,
        "spread_db": result.spread_db,
        "calibrated_at": stamp,
    }
    lines = [
        "# Store-local calibration written by `gateway calibrate`; the presence stage adds",
        "# each receiver's offset_db to every device's measured power at that receiver.",
    ]
    for table in ("receivers", "beacons"):
        for name, values in sorted(data[table].items()):
            lines.append("")
            lines.append(f'[{table}."{name}"]')
            lines.extend(f"{k} = {_toml(v)}" for k, v in values.items())
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
