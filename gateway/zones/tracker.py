"""Positions → zone enter / exit / dwell events.

Pure and synchronous. Flapping on a zone boundary is what makes zone events useless, so:
  * enter needs the position inside the polygon for `min_inside_s` (a single noisy fix
    does not count);
  * exit needs the position more than the zone's hysteresis margin *outside* the polygon
    for `min_outside_s` (standing on the line, or one fix thrown out by a passing body,
    produces nothing);
  * dwell fires once per visit, `dwell_s` after the enter.
Candidate zones come from `ZoneIndex` (a grid of cells), so the cost stays flat with many zones.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import shapely

from gateway.model import Position, ZoneEvent, ZoneEventKind
from gateway.site.storemap import Zone
from gateway.zones.index import ZoneIndex


@dataclass(slots=True)
class _Visit:
    first_inside: float
    confirmed: bool = False
    dwell_done: bool = False
    outside_since: float | None = None  # first fix beyond the exit margin, if any


def _confidence(depth: float, uncertainty: float) -> float:
    """P(true position inside) for a Gaussian error of `uncertainty` metres at `depth`
    metres inside the boundary (negative depth: outside)."""
    sigma = max(uncertainty, 0.1)
    return round(0.5 * (1.0 + math.erf(depth / (sigma * math.sqrt(2.0)))), 3)


class ZoneTracker:
    def __init__(
        self,
        zones: list[Zone],
        *,
        hysteresis_m: float,
        dwell_s: float,
        min_inside_s: float,
        min_outside_s: float = 0.0,
    ) -> None:
        self.zones = zones
        self.default_hysteresis = hysteresis_m
        self.default_dwell = dwell_s
        self.min_inside_s = min_inside_s
        self.min_outside_s = min_outside_s
        self.index = ZoneIndex(zones)
        self.visits: dict[str, dict[int, _Visit]] = {}
        # (due time, device, zone index, visit start) of every confirmed visit's dwell
        self._dwell_due: list[tuple[float, str, int, float]] = []

    def _hysteresis(self, zone: Zone) -> float:
        return self.default_hysteresis if zone.hysteresis_m is None else zone.hysteresis_m

    def _dwell(self, zone: Zone) -> float:
        return self.default_dwell if zone.dwell_s is None else zone.dwell_s

    def containing(self, x: float, y: float, level: int = 0) -> list[int]:
        """Indices of the zones of `level` containing the point, highest priority first."""
        return self.index.containing(x, y, level)

    def update(self, pos: Position) -> list[ZoneEvent]:
        events: list[ZoneEvent] = []
        visits = self.visits.setdefault(pos.device, {})
        inside = set(self.containing(pos.x, pos.y, pos.level))
        point = None  # built only for a distance (most fixes need none)
        for index in inside:
            zone = self.zones[index]
            visit = visits.get(index)
            if visit is None:
                visit = visits[index] = _Visit(first_inside=pos.t)
            visit.outside_since = None
            if not visit.confirmed and pos.t - visit.first_inside >= self.min_inside_s:
                visit.confirmed = True
                due = visit.first_inside + self._dwell(zone)
                heapq.heappush(self._dwell_due, (due, pos.device, index, visit.first_inside))
                point = point or shapely.Point(pos.x, pos.y)
                depth = (
                    zone.shape.exterior.distance(point)
                    if zone.shape.geom_type == "Polygon"
                    else 0.0
                )
                events.append(
                    ZoneEvent(
                        ZoneEventKind.ENTER,
                        pos.device,
                        zone.id,
                        pos.t,
                        visit.first_inside,
                        _confidence(depth, pos.uncertainty_m),
                    )
                )
        for index in [i for i in visits if i not in inside]:
            zone = self.zones[index]
            visit = visits[index]
            if not visit.confirmed:
                del visits[index]  # never entered for real: forget the pending visit
                continue
            # Another level is "outside" however close the footprint.
            if zone.level == pos.level:
                point = point or shapely.Point(pos.x, pos.y)
                outside_by = zone.shape.distance(point)
            else:
                outside_by = math.inf
            if outside_by <= self._hysteresis(zone):
                visit.outside_since = None
                continue
            if visit.outside_since is None:
                visit.outside_since = pos.t
            if pos.t - visit.outside_since >= self.min_outside_s:
                del visits[index]
                events.append(
                    ZoneEvent(
                        ZoneEventKind.EXIT,
                        pos.device,
                        zone.id,
                        pos.t,
                        visit.first_inside,
                        _confidence(outside_by, pos.uncertainty_m),
                    )
                )
        events.extend(self.dwells(pos.device, pos.t))
        return events

    def adopt(self, device: str, visits: dict[int, _Visit]) -> None:
        """Take over visits from a previous tracker (a reload), dwell timers included."""
        self.visits[device] = visits
        for index, visit in visits.items():
            if visit.confirmed and not visit.dwell_done:
                due = visit.first_inside + self._dwell(self.zones[index])
                heapq.heappush(self._dwell_due, (due, device, index, visit.first_inside))

    def dwell_due(self, now: float) -> bool:
        """Whether `due_dwells(now)` has a dwell to fire."""
        return bool(self._dwell_due) and self._dwell_due[0][0] <= now

    def due_dwells(self, now: float) -> list[ZoneEvent]:
        """Dwell events of every device whose dwell time has come (time passing without a
        fix): a heap of deadlines, so the cost does not grow with the people in the shop."""
        events = []
        heap = self._dwell_due
        while heap and heap[0][0] <= now:
            _due, device, index, first_inside = heapq.heappop(heap)
            visit = self.visits.get(device, {}).get(index)
            if visit is None or visit.dwell_done or visit.first_inside != first_inside:
                continue  # left, already fired, or a later visit (it has its own entry)
            visit.dwell_done = True
            zone = self.zones[index]
            events.append(
                ZoneEvent(ZoneEventKind.DWELL, device, zone.id, now, visit.first_inside, 1.0)
            )
        return events

    def dwells(self, device: str, now: float) -> list[ZoneEvent]:
        events = []
        for index, visit in self.visits.get(device, {}).items():
            zone = self.zones[index]
            due = visit.confirmed and not visit.dwell_done
            if due and now - visit.first_inside >= self._dwell(zone):
                visit.dwell_done = True
                events.append(
                    ZoneEvent(ZoneEventKind.DWELL, device, zone.id, now, visit.first_inside, 1.0)
                )
        return events

    def leave_all(self, device: str, t: float) -> list[ZoneEvent]:
        """The device is gone (stale): close every confirmed visit."""
        events = [
            ZoneEvent(ZoneEventKind.EXIT, device, self.zones[i].id, t, v.first_inside, 1.0)
            for i, v in sorted(self.visits.pop(device, {}).items())
            if v.confirmed
        ]
        return events

    def zones_of(self, device: str) -> list[str]:
        return [self.zones[i].id for i, v in self.visits.get(device, {}).items() if v.confirmed]
