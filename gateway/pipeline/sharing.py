"""Work sharing in a fleet, the pipeline's side (docs/fleet.md, gateway.sync.ownership).

A gateway that hears a shopper device it does not own forwards the reading to the owner,
decoded (the device key and its power: `Pipeline.forward`), and goes no further with it; the
owner folds forwarded readings straight into its filters (`on_forwarded`), solving them with
its own after a jitter buffer of one share interval (`solve_delay_s`), so that the readings
peers send every interval are not late for the solve they belong to. A device that has just
become ours goes on from the state its previous owner published (`take_over`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway.model import Advert, PipelineEvent
from gateway.zones import handover

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline

# The owner's jitter buffer releases its solves in steps of this much store time.
RELEASE_STEP_S = 0.1

Forwarded = tuple[str, int | None, list[tuple[float, str, int]]]


def owned(p: Pipeline, device: str, advert: Advert, power: int | None) -> bool:
    """Ours to solve? If not, only forward it to the owner (decoded, or the raw advert
    without a forwarder); if it has just become ours, go on from the state its previous
    owner published."""
    assert p.owns is not None
    if not p.owns(device):
        p.stats.not_owned += 1
        if declined(p, device):
            return False
        if p.forward is not None:
            p.forward(device, power, advert.t, advert.receiver, advert.rssi)
        elif p.share is not None:
            p.share(advert)
        return False
    take_over(p, device)
    return True


def take_over(p: Pipeline, device: str) -> None:
    """A device we own seen for the first time: its previous owner's state, if any."""
    if device not in p.visit_aliases and device not in p.profiles:
        state = p.handed_over.pop(device, None)
        if state is not None:
            if state.tracked != device:
                p.visit_aliases[device] = state.tracked
            p.profiles[state.tracked] = state.profile
            handover.adopt(p.zones, state)
            p.stats.taken_over += 1


def on_forwarded(p: Pipeline, devices: list[Forwarded]) -> list[PipelineEvent]:
    """Readings the store's other gateways heard of devices we own, already decoded (the
    device key and its power): folded into the filters, solved with ours. A device we
    do not own (the hearer's membership differed for a moment) is left out, counted."""
    events: list[PipelineEvent] = []
    if not devices:
        return events
    assert p.owns is not None
    newest = max(rs[-1][0] for _, _, rs in devices)
    events.extend(p.advance(newest))
    due: dict[str, float] = {}
    fold = p.presence.fold
    for device, power, readings in devices:
        if not p.owns(device):
            p.stats.misrouted += len(readings)
            continue
        p.stats.forwarded_in += len(readings)
        take_over(p, device)
        tracked = p.visit_aliases.get(device)
        if tracked is None:
            tracked = device
            if device not in p.profiles:
                match = p._resolve(device, readings[0][0])
                events.append(match)
                tracked = match.device
        for t, receiver, rssi in readings:
            if fold(tracked, receiver, t, rssi, power):
                due[tracked] = t
    events.extend(p._solve_due(due))
    return events


def jitter(p: Pipeline, due: dict[str, float]) -> dict[str, float]:
    """The owner's jitter buffer: solves due at least `solve_delay_s` ago, now; the
    others wait (readings forwarded by peers arrive up to one share interval late)."""
    deferred = p._waiting_peers
    for device, t in due.items():
        deferred.setdefault(device, t)
    # Released in steps of store time, not at every call (each batch, each peer frame):
    # one vectorised solve per step for all that became ready, not many small ones.
    horizon = math.floor((p.now - p.solve_delay_s) / RELEASE_STEP_S) * RELEASE_STEP_S
    if horizon <= p.released_to:
        return {}
    p.released_to = horizon
    devices = p.presence.devices
    ready = {d: t for d, t in deferred.items() if t <= horizon and d in devices}
    if ready or len(deferred) > len(devices):
        p._waiting_peers = {d: t for d, t in deferred.items() if t > horizon and d in devices}
    return ready


def declined(p: Pipeline, device: str) -> bool:
    """Did this device's shopper decline (no consent, opted out)? Her sightings are not
    forwarded to the owner: peers would see her beacon id on the broker."""
    known = p.declined.get(device)
    if known is None:
        kind, _, value = device.partition(":")
        known = kind != "profile" and p.identity.resolve_consenting(kind, value)[1]
        if len(p.declined) >= 10_000:
            p.declined.clear()  # bounded: random addresses must not grow it
        p.declined[device] = known
    return known
