"""A device's zone visits as one gateway hands them to another (work sharing in a fleet).

The owner of a shopper device (see `gateway.sync.ownership`) publishes this state whenever the
device's visits or decisions change; a gateway that becomes the owner adopts it, so the visit
goes on where it was: no second `enter`, no second dwell, and the dwell timer keeps its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.zones.tracker import ZoneTracker, _Visit


@dataclass(frozen=True, slots=True)
class VisitState:
    zone: str  # zone id (indexes differ between maps; ids do not)
    first_inside: float
    confirmed: bool
    dwell_done: bool
    outside_since: float | None


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A device's zone visits and today's offers, as its owner last published them."""

    device: str  # the ownership key: the device's identity before any per-visit alias
    tracked: str  # what it is tracked under (a per-visit alias for a shopper who said no)
    profile: str | None
    t: float  # when the owner last changed it
    visits: list[VisitState]
    offers: list[dict[str, Any]]  # offer rows issued to the profile this store day


def visits_of(zones: ZoneTracker, tracked: str) -> list[VisitState]:
    return [
        VisitState(zones.zones[i].id, v.first_inside, v.confirmed, v.dwell_done, v.outside_since)
        for i, v in sorted(zones.visits.get(tracked, {}).items())
    ]


def adopt(zones: ZoneTracker, state: HandedOver) -> None:
    """Continue the handed-over visits (zones no longer on this map are left out)."""
    index = {z.id: i for i, z in enumerate(zones.zones)}
    visits = {
        index[v.zone]: _Visit(v.first_inside, v.confirmed, v.dwell_done, v.outside_since)
        for v in state.visits
        if v.zone in index
    }
    if visits and state.tracked not in zones.visits:
        zones.adopt(state.tracked, visits)
