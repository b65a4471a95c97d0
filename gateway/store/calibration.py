"""The store-local calibration file, `<state_dir>/calibration.toml` (format in
`gateway.presence.calibration`): read for the receivers' offsets, merged one result at a time."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

FILE = "calibration.toml"
# Offsets beyond this are a wrong beacon id or distance, not a receiver's gain: ignored.
MAX_OFFSET_DB = 20.0


class Measurement(Protocol):
    """What a calibration result records (`gateway.presence.calibration.CalibrationResult`)."""

    @property
    def beacon(self) -> str: ...
    @property
    def receiver(self) -> str: ...
    @property
    def distance_m(self) -> float: ...
    @property
    def samples(self) -> int: ...
    @property
    def median_dbm(self) -> float: ...
    @property
    def spread_db(self) -> float: ...
    @property
    def measured_power_dbm(self) -> float: ...
    @property
    def offset_db(self) -> float: ...


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


def save(state_dir: Path, result: Measurement, now: float) -> Path:
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
