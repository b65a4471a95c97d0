"""Sightings → smoothed RSSI → distances → a position per device.

Pure and synchronous: the tracker is fed sightings with their own timestamps and answers
with positions; time only moves when a caller says so (`expire`). Nothing here does I/O:
the receivers' calibration offsets come in as data (read by
`gateway.pipeline.tracking.tracker_for`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from gateway.model import Position
from gateway.presence.batch import range_rows, receiver_table, solve_rows
from gateway.presence.filter import Range, RssiFilter, distance_sigma, rssi_to_distance
from gateway.presence.grid import GridDevice, GridModel
from gateway.presence.solve import (
    FULL_SEARCH_EVERY_S,
    MAX_RANGES,
    METHODS,
    max_likelihood_fit,
    weighted_centroid,
)
from gateway.presence.survey import Survey


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    process_noise_db: float
    measurement_noise_db: float
    outlier_sigma: float
    stale_after_s: float
    method: str
    path_loss_exponent: float
    default_measured_power: float
    measured_power_override: float | None = None
    # Slow shadowing the filter cannot remove (shelves, bodies): the model's own error, dB.
    shadowing_db: float = 3.0
    # Floor bounds (min_x, min_y, max_x, max_y): positions are clamped inside.
    bounds: tuple[float, float, float, float] | None = None
    # Solve a device's position at most this often (trace time): every sighting still
    # updates its receiver's filter, but a person moves ~0.3 m in 0.25 s.
    min_solve_interval_s: float = 0.0


@dataclass(slots=True)
class _Device:
    filters: dict[str, RssiFilter] = field(default_factory=dict)
    measured_power: float = -59.0
    last_seen: float = -math.inf
    last_solved: float = -math.inf
    last_fix: tuple[float, float, float, int] | None = None  # x, y, power offset, level
    last_search: float = -math.inf  # last full multi-start search (max likelihood)
    last_position: Position | None = None  # what the console shows
    grid: GridDevice | None = None  # method "grid": the map-aware forward filter


@dataclass(slots=True)
class _Deferred:
    """Solves taken by `PresenceTracker.defer`, waiting for one vectorised fit: per solve
    (device, t, state, measured power), hint and whether it tracks; per fresh filter its
    solve's row, receiver column, level, variance and the receiver's learned offset then."""

    solves: list[tuple[str, float, _Device, float]] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    hints: list[tuple[float, float, float]] = field(default_factory=list)
    tracked: list[bool] = field(default_factory=list)
    row_of: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)  # the receiver's, `PresenceTracker._columns`
    levels: list[float] = field(default_factory=list)
    variances: list[float] = field(default_factory=list)
    learned: list[float] = field(default_factory=list)


class PresenceTracker:
    """Tracks every device heard by the store's receivers and positions it."""

    def __init__(
        self,
        settings: PresenceSettings,
        receivers: dict[str, tuple[float, float]],
        calibration: dict[str, tuple[float | None, float | None]] | None = None,
        receiver_levels: dict[str, int] | None = None,
        receiver_offsets: dict[str, float] | None = None,
        grid: GridModel | None = None,
    ):
        self.settings = settings
        self.receivers = receivers
        # Only a multi-storey store needs levels: receiver → floor number.
        levels = receiver_levels or {}
        self.receiver_levels = levels if len(set(levels.values())) > 1 else {}
        # Store-local calibration (`gateway calibrate`): each receiver's gain in dB, added to
        # every device's measured power heard there.
        self.receiver_offsets = receiver_offsets or {}
        # receiver → (RSSI at 1 m, path-loss exponent), each None for "use the default"
        self.calibration = calibration or {}
        self.devices: dict[str, _Device] = {}
        self.rejected: Counter[str] = Counter()
        self._locate = METHODS.get(settings.method, weighted_centroid)
        # method "grid": the walkable grid and radio map of every level (`gateway.pipeline`)
        self.grid = grid if settings.method == "grid" else None
        # Offsets learned online from the fixed beacons (`gateway.presence.selfcal`), dB:
        # on top of everything else, at every receiver.
        self.learned_offsets: dict[str, float] = {}
        self.survey: Survey | None = None  # the site survey in use, if any
        self._deferred = _Deferred()  # solves waiting for one vectorised fit (`defer`)
        self._columns: dict[str, int] = {}  # receiver → its column in the solver's tables

    def observe(
        self, device: str, receiver: str, t: float, rssi: float, measured_power: float | None
    ) -> Position | None:
        """Fold one sighting in and return the device's new position (None if rejected, or
        if no solve is due yet)."""
        if not self.fold(device, receiver, t, rssi, measured_power):
            return None
        return self.position(device, t)

    def fold(
        self, device: str, receiver: str, t: float, rssi: float, measured_power: float | None
    ) -> bool:
        """Fold one sighting into the device's filters; True when a position solve is due
        (at most every `min_solve_interval_s`), False when folded in or rejected."""
        s = self.settings
        if receiver not in self.receivers:
            self.rejected["unknown_receiver"] += 1
            return False
        if not -127.0 <= rssi < 0.0:  # NaN fails every comparison
            self.rejected["rssi_out_of_range"] += 1
            return False
        state = self.devices.get(device)
        if state is None:
            state = self.devices[device] = _Device()
        if t < state.last_seen - s.stale_after_s:
            self.rejected["clock_backwards"] += 1
            return False
        power = s.measured_power_override
        if power is None:
            power = measured_power if measured_power else s.default_measured_power
        state.measured_power = power
        flt = state.filters.get(receiver)
        if flt is None:
            flt = state.filters[receiver] = RssiFilter(
                s.process_noise_db, s.measurement_noise_db, s.outlier_sigma
            )
        if not flt.update(t, rssi):
            self.rejected["rssi_outlier"] += 1
        if self.grid is not None:
            # the forward filter takes every raw reading (its likelihood is robust itself)
            level = self.receiver_levels.get(receiver, 0)
            if state.grid is None:
                state.grid = self.grid.device(level)
            state.grid.update(t, receiver, rssi - self.learned_offsets.get(receiver, 0.0), level)
        if t > state.last_seen:
            state.last_seen = t
        if t - state.last_solved < s.min_solve_interval_s:
            return False  # folded in; the next solve uses it
        state.last_solved = t
        return True

    def ranges(self, device: str, t: float) -> list[Range]:
        s = self.settings
        state = self.devices.get(device)
        if state is None:
            return []
        out = []
        fresh = [(r, f) for r, f in state.filters.items() if t - f.t <= s.stale_after_s]
        if len(fresh) > MAX_RANGES and s.method == "max_likelihood" and not self.receiver_levels:
            # the fit keeps only the loudest (see MAX_RANGES): do not range the others
            fresh.sort(key=lambda item: item[1].level, reverse=True)
            del fresh[MAX_RANGES:]
        for receiver, flt in fresh:
            rx, ry = self.receivers[receiver]
            power, exponent = self.calibration.get(receiver, (None, None))
            if power is None or s.measured_power_override is not None:
                power = state.measured_power + self.receiver_offsets.get(receiver, 0.0)
            power += self.learned_offsets.get(receiver, 0.0)
            n = exponent if exponent is not None else s.path_loss_exponent
            d = rssi_to_distance(flt.level, power, n)
            sigma = distance_sigma(d, flt.sigma, n)
            sigma_db = math.hypot(flt.sigma, s.shadowing_db)
            out.append(Range(receiver, rx, ry, d, sigma, flt.level, sigma_db, n))
        return out

    def _prepare(
        self, device: str, t: float
    ) -> tuple[list[Range], int, tuple[float, float, float] | None] | None:
        """The ranges to solve with, the device's level and (max likelihood) the tracking
        hint; None when nothing fresh is heard."""
        ranges = self.ranges(device, t)
        if not ranges:
            return None
        level = 0
        if self.receiver_levels:
            # Floors attenuate 15-25 dB: the loudest receiver is on the device's level, and
            # receivers of other levels would drag the fix towards their own footprint.
            level = self.receiver_levels.get(max(ranges, key=lambda r: r.rssi).receiver, 0)
            ranges = [r for r in ranges if self.receiver_levels.get(r.receiver, 0) == level]
        hint = None
        if self.settings.method == "max_likelihood":
            # Track from the last fix; search every start point only now and then (a device
            # moves ~1 m/s), or when tracking does not fit (see `max_likelihood_fit`).
            state = self.devices[device]
            fix = state.last_fix
            if fix is not None and fix[3] == level and t - state.last_search < FULL_SEARCH_EVERY_S:
                hint = (fix[0], fix[1], fix[2])
        return ranges, level, hint

    def _solve(
        self, device: str, t: float, ranges: list[Range], hint: tuple[float, float, float] | None
    ) -> tuple[float, float, float, float]:
        state = self.devices[device]
        if state.grid is not None:
            estimate = state.grid.filter.estimate()
            if estimate is not None:
                return (*estimate, 0.0)
        if self.settings.method != "max_likelihood":
            x, y, uncertainty = self._locate(ranges)
            return x, y, uncertainty, 0.0
        if hint is None:
            self.devices[device].last_search = t
        return max_likelihood_fit(ranges, hint=hint)

    def _finish(
        self,
        device: str,
        t: float,
        heard: int,
        level: int,
        fit: tuple[float, float, float, float],
    ) -> Position:
        x, y, uncertainty, b = fit
        state = self.devices[device]
        if state.grid is not None:
            level = state.grid.level
        state.last_fix = (x, y, b, level)
        if self.settings.bounds is not None:
            min_x, min_y, max_x, max_y = self.settings.bounds
            x, y = min(max(x, min_x), max_x), min(max(y, min_y), max_y)
        position = Position(device, t, x, y, uncertainty, self.settings.method, heard, level)
        state.last_position = position
        return position

    def position(self, device: str, t: float) -> Position | None:
        prepared = self._prepare(device, t)
        if prepared is None:
            return None
        ranges, level, hint = prepared
        grid = self.devices[device].grid
        if grid is not None:
            grid.move_to(level)  # refused away from stairs
        return self._finish(device, t, len(ranges), level, self._solve(device, t, ranges, hint))

    @property
    def deferrable(self) -> bool:
        """Whether due solves can wait for one vectorised fit (`defer`): the maximum-
        likelihood method on one level, a busy store's case; the others solve at once."""
        return self.settings.method == "max_likelihood" and not self.receiver_levels

    def defer(self, device: str, t: float) -> bool:
        """Take what the solve of `device` at `t` needs *now* — its fresh filters, power,
        the learned offsets and the tracking hint — for the next `solve_deferred`, so that
        the fix is the one `position(device, t)` gives now, whenever it is solved. False
        (nothing taken) when the device's previous solve still waits: its fix is this
        one's hint, so `solve_deferred` first. True also when nothing fresh is heard (no
        fix, as `position` gives none)."""
        waiting = self._deferred
        if device in waiting.devices:
            return False
        state = self.devices.get(device)
        if state is None:
            return True
        stale = self.settings.stale_after_s
        learned = self.learned_offsets.get
        columns = self._columns
        row = len(waiting.solves)
        before = len(waiting.row_of)
        # bound once: this loop runs for every fresh filter of every solve due
        add_row, add_column = waiting.row_of.append, waiting.columns.append
        add_level, add_variance = waiting.levels.append, waiting.variances.append
        add_learned = waiting.learned.append
        for receiver, flt in state.filters.items():
            if t - flt.t <= stale:
                column = columns.get(receiver)
                if column is None:
                    column = columns[receiver] = len(columns)
                add_row(row)
                add_column(column)
                add_level(flt.level)
                add_variance(flt.variance)
                add_learned(learned(receiver, 0.0))
        if len(waiting.row_of) == before:
            return True
        waiting.devices.add(device)
        waiting.solves.append((device, t, state, state.measured_power))
        fix = state.last_fix
        if fix is not None and fix[3] == 0 and t - state.last_search < FULL_SEARCH_EVERY_S:
            waiting.hints.append((fix[0], fix[1], fix[2]))
            waiting.tracked.append(True)
        else:
            waiting.hints.append((0.0, 0.0, 0.0))
            waiting.tracked.append(False)
        return True

    @property
    def deferred(self) -> int:
        """Solves waiting for `solve_deferred`."""
        return len(self._deferred.solves)

    def solve_deferred(self) -> list[Position]:
        """Every waiting solve in one vectorised fit (`gateway.presence.batch`), in the
        order they became due: the fixes `position` gave at each one's time."""
        import numpy as np

        waiting, self._deferred = self._deferred, _Deferred()
        if not waiting.solves:
            return []
        s = self.settings
        table = receiver_table(
            list(self._columns),  # built afresh: a reload may have moved a receiver
            self.receivers,
            self.calibration,
            self.receiver_offsets,
            s.path_loss_exponent,
            s.measured_power_override is not None,
        )
        rows = range_rows(
            waiting.row_of,
            waiting.columns,
            waiting.levels,
            waiting.variances,
            waiting.learned,
            table,
            [power for *_, power in waiting.solves],
            len(waiting.solves),
            s.shadowing_db,
        )
        hint = np.array(waiting.hints)
        x, y, unc, b, searched = solve_rows(
            rows, hint[:, 0], hint[:, 1], hint[:, 2], np.array(waiting.tracked)
        )
        out = []
        counts = rows.count.tolist()
        fits = zip(x.tolist(), y.tolist(), unc.tolist(), b.tolist(), searched.tolist(), strict=True)
        for i, (fx, fy, fu, fb, planned) in enumerate(fits):
            device, t, state, _power = waiting.solves[i]
            if planned:
                state.last_search = t
            out.append(self._finish(device, t, counts[i], 0, (fx, fy, fu, fb)))
        return out

    def positions_many(self, due: list[tuple[str, float]]) -> list[Position]:
        """Solve several devices due now: deferred and solved together where the method
        allows it (`defer`), else one by one — the same fixes as `position`, device by
        device."""
        if not self.deferrable:
            return [p for p in (self.position(d, t) for d, t in due) if p is not None]
        out: list[Position] = []
        for device, t in due:
            if not self.defer(device, t):
                out += self.solve_deferred()
                self.defer(device, t)
        return out + self.solve_deferred()

    def any_silent(self, now: float) -> bool:
        """Whether `expire(now)` would forget a device."""
        limit = now - self.settings.stale_after_s
        return any(state.last_seen < limit for state in self.devices.values())

    def expire(self, now: float) -> list[str]:
        """Forget devices silent for longer than the stale timeout; return their ids."""
        limit = now - self.settings.stale_after_s
        gone = [d for d, state in self.devices.items() if state.last_seen < limit]
        for device in gone:
            del self.devices[device]
        return gone


# Positions may fall this far outside the floor: a shopper walking away from the door must be
