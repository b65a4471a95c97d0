"""`gateway locate`: sightings (JSON lines) → position estimates (JSON lines).

Input, one per line: {"t": unix_s, "receiver": id, "device": id, "rssi": dBm}, or a trace line
as `gateway sim` and the recorder write them (docs/trace-format.md: `address` for the device,
`adapter` for the receiver; NFC taps and `#` comments are skipped). Receivers are
the map's `gateway` features (positions, optional `measured_power` and
`path_loss_exponent`). Sightings with the same `t` are folded in together, then one estimate
is written per device they touched: {"t", "device", "x", "y", "uncertainty_m", "zones",
"method"}. `zones` are the map zones containing the estimate. Bad lines are reported on
stderr with their line number and skipped; the run goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.config.sections import Config
from gateway.pipeline.tracking import tracker_for
from gateway.presence.survey import Survey
from gateway.presence.tracker import PresenceTracker
from gateway.site.hardware import load_beacon_profile
from gateway.site.storemap import StoreMap
from gateway.zones.tracker import ZoneTracker


@dataclass(slots=True)
class LocateStats:
    lines: int = 0
    estimates: int = 0
    skipped: int = 0  # trace lines that are not sightings (NFC taps)
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def make_tracker(
    config: Config, store: StoreMap, method: str | None = None, survey: Survey | None = None
) -> PresenceTracker:
    """Every sighting gets an estimate (no solve throttling: the output is per sighting)."""
    profile = load_beacon_profile(config.presence.device_profile)
    return tracker_for(config, store, profile, method, survey=survey)


def _sighting(text: str) -> tuple[float, str, str, float] | str | None:
    """The sighting on a line, the reason it is not one, or None for a trace line that is
    no sighting (an NFC tap)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "not JSON"
    if not isinstance(obj, dict):
        return "expected a JSON object"
    kind = obj.get("kind", "ble")
    if kind == "nfc":
        return None
    if kind != "ble":
        return f"kind: {kind!r} is neither a BLE sighting nor an NFC tap"
    t, rssi = obj.get("t"), obj.get("rssi")
    receiver = obj.get("receiver", obj.get("adapter"))
    device = obj.get("device", obj.get("address"))
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        return "t: expected a number of seconds"
    if not isinstance(receiver, str) or not receiver:
        return "receiver: expected a string (a gateway feature id of the map)"
    if not isinstance(device, (str, int)) or device == "":
        return "device: expected a string (or 'address', as in a trace)"
    if isinstance(rssi, bool) or not isinstance(rssi, (int, float)) or not math.isfinite(rssi):
        return "rssi: expected a number (dBm)"
    return float(t), receiver, str(device), float(rssi)


def locate(
    lines: Iterable[str],
    tracker: PresenceTracker,
    zones: ZoneTracker | None,
    stats: LocateStats,
    errors: list[str],
) -> Iterator[dict[str, Any]]:
    pending: dict[str, None] = {}  # devices touched at the current t, in order
    current_t: float | None = None

    def flush() -> Iterator[dict[str, Any]]:
        assert current_t is not None
        for device in pending:
            pos = tracker.position(device, current_t)
            if pos is None:
                continue
            stats.estimates += 1
            zone_ids = (
                [zones.zones[i].id for i in zones.containing(pos.x, pos.y, pos.level)]
                if zones
                else []
            )
            estimate: dict[str, Any] = {
                "t": current_t,
                "device": device,
                "x": round(pos.x, 3),
                "y": round(pos.y, 3),
                "uncertainty_m": round(pos.uncertainty_m, 3),
                "zones": sorted(zone_ids),
                "method": pos.method,
            }
            if tracker.receiver_levels:  # multi-storey maps only: the format stays as it was
                estimate["level"] = pos.level
            yield estimate
        pending.clear()

    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        stats.lines += 1
        parsed = _sighting(text)
        if parsed is None:
            stats.skipped += 1
            continue
        if isinstance(parsed, str):
            stats.reject("malformed")
            errors.append(f"line {number}: {parsed}")
            continue
        t, receiver, device, rssi = parsed
        if current_t is not None and t != current_t:
            yield from flush()
        current_t = t
        before = dict(tracker.rejected)
        observed = tracker.observe(device, receiver, t, rssi, None)
        changed = [r for r, n in tracker.rejected.items() if n != before.get(r, 0)]
        if observed is None and changed:
            reason = changed[0]
            stats.reject(reason)
            errors.append(f"line {number}: rejected ({reason})")
            continue
        pending[device] = None
    if current_t is not None:
        yield from flush()
