"""Fleet health of the store's fixed beacons: last seen, interval, battery, missing.

Pure: fed with sightings and telemetry, asked for status changes at a given time. An
Eddystone beacon interleaves UID and TLM frames from the same address, so telemetry is
attributed through the address that most recently sent the anchor's identifying frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.model import BeaconHealth, EddystoneTLM, Frame
from gateway.site.hardware import BeaconProfile, load_beacon_profile
from gateway.site.storemap import Anchor

# Adverts of one anchor closer together than this are one advert heard by several receivers.
SAME_ADVERT_S = 0.05


class BeaconStatus(StrEnum):
    """A fixed beacon's health, as `beacon.health` events and the console report it."""

    UNKNOWN = "unknown"  # not heard yet
    OK = "ok"
    MISSING = "missing"
    LOW_BATTERY = "low_battery"
    SLOW = "slow"  # advertising slower than its profile says


@dataclass(frozen=True, slots=True)
class Expectation:
    interval_s: float
    battery_min_mv: int
    battery_max_mv: int


@dataclass(slots=True)
class _State:
    last_seen: float | None = None
    last_advert: float = -math.inf
    interval: float | None = None  # EWMA of distinct advert spacing
    battery_mv: int | None = None
    temperature: float | None = None
    status: BeaconStatus = BeaconStatus.UNKNOWN


@dataclass(slots=True)
class FleetHealth:
    anchors: list[Anchor]
    expectations: dict[str, Expectation] = field(default_factory=dict)
    missing_after_s: float = 60.0
    low_battery_pct: float = 15.0
    # An observed interval this many times the nominal one means most adverts are not heard.
    slow_factor: float = 4.0
    states: dict[str, _State] = field(default_factory=dict)
    by_address: dict[str, str] = field(default_factory=dict)
    started: float | None = None

    def __post_init__(self) -> None:
        self.states = {a.id: _State() for a in self.anchors}

    def seen(self, anchor: str, address: str, t: float) -> None:
        state = self.states[anchor]
        self.by_address[address] = anchor
        if self.started is None:
            self.started = t
        if t - state.last_advert > SAME_ADVERT_S:
            gap = t - state.last_advert
            # An outage is not an advertising interval: only gaps short of "missing" count.
            if gap < self.missing_after_s:
                state.interval = gap if state.interval is None else 0.9 * state.interval + 0.1 * gap
            state.last_advert = t
        state.last_seen = t if state.last_seen is None else max(state.last_seen, t)

    def telemetry(self, address: str, t: float, frame: Frame) -> None:
        anchor = self.by_address.get(address)
        if anchor is None or not isinstance(frame, EddystoneTLM):
            return
        state = self.states[anchor]
        state.battery_mv = frame.voltage or None
        state.temperature = frame.temperature

    def _battery_pct(self, anchor: str, mv: int | None) -> float | None:
        exp = self.expectations.get(anchor)
        if mv is None or exp is None or exp.battery_max_mv <= exp.battery_min_mv:
            return None
        span = exp.battery_max_mv - exp.battery_min_mv
        return max(0.0, min(100.0, 100.0 * (mv - exp.battery_min_mv) / span))

    def _status(self, anchor: str, state: _State, now: float) -> BeaconStatus:
        reference = state.last_seen if state.last_seen is not None else self.started
        if reference is None:
            return BeaconStatus.UNKNOWN
        if now - reference > self.missing_after_s:
            return BeaconStatus.MISSING
        if state.last_seen is None:
            return BeaconStatus.UNKNOWN
        pct = self._battery_pct(anchor, state.battery_mv)
        if pct is not None and pct < self.low_battery_pct:
            return BeaconStatus.LOW_BATTERY
        exp = self.expectations.get(anchor)
        interval = state.interval
        limit = None if exp is None else self.slow_factor * max(exp.interval_s, 0.1)
        if interval is not None and limit is not None and interval > limit:
            return BeaconStatus.SLOW
        return BeaconStatus.OK

    def check(self, now: float) -> list[BeaconHealth]:
        """Status changes since the last check."""
        changes = []
        for anchor, state in self.states.items():
            status = self._status(anchor, state, now)
            if status != state.status and status != "unknown":
                state.status = status
                changes.append(self.report(anchor, now))
        return changes

    def report(self, anchor: str, now: float) -> BeaconHealth:
        state = self.states[anchor]
        return BeaconHealth(
            now,
            anchor,
            state.status,
            state.last_seen,
            state.interval,
            state.battery_mv,
            self._battery_pct(anchor, state.battery_mv),
            state.temperature,
        )


def expectations_for(anchors: list[Anchor]) -> dict[str, Expectation]:
    """What each fixed beacon's hardware profile says it should do."""
    profiles: dict[str, BeaconProfile] = {}
    out = {}
    for anchor in anchors:
        if anchor.profile not in profiles:
            profiles[anchor.profile] = load_beacon_profile(anchor.profile)
        p = profiles[anchor.profile]
        out[anchor.id] = Expectation(
            p.advertising_interval_ms / 1000.0, p.battery_min_mv, p.battery_max_mv
        )
    return out
