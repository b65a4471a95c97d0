"""Sightings → smoothed RSSI → distances → a position per device.

Pure and synchronous: the tracker is fed sightings with their own timestamps and answers
with positions; time only moves when a caller says so (`expire`). Nothing here does I/O.

Model
-----
* RSSI per (device, receiver) follows a random walk observed with Gaussian noise: a 1-D
  Kalman filter is the optimal smoother for that and costs a handful of float operations.
  Process noise grows with the time between readings, so sparse and dense advertisers are
  handled alike. Readings beyond `outlier_sigma` of the prediction are rejected (multipath
  nulls, body blocking); three rejections in a row mean the level really moved, and the
  filter restarts there instead of locking out a moving person.
* Distance: log-distance path loss, d = 10 ** ((P1m - RSSI) / (10 n)).
* Position from the receivers' known positions: nearest receiver, weighted centroid, or
  weighted least-squares multilateration (Gauss-Newton), each with an uncertainty.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.config.sections import Config
from gateway.model import Position
from gateway.presence.calibration import receiver_offsets
from gateway.site.hardware import BeaconProfile
from gateway.site.storemap import StoreMap

LN10_OVER_10 = math.log(10) / 10


def rssi_to_distance(rssi: float, measured_power: float, exponent: float) -> float:
    """Log-distance path loss: metres at which `measured_power` (RSSI at 1 m) drops to `rssi`."""
    return float(10 ** ((measured_power - rssi) / (10.0 * exponent)))


def distance_sigma(distance: float, rssi_sigma: float, exponent: float) -> float:
    """First-order propagation of RSSI uncertainty to distance (log-normal shadowing)."""
    return distance * LN10_OVER_10 * rssi_sigma / exponent


@dataclass(slots=True)
class RssiFilter:
    """Random-walk Kalman filter on RSSI in dB."""

    process_noise: float  # dB per sqrt(s)
    measurement_noise: float  # dB
    outlier_sigma: float
    level: float = math.nan
    variance: float = 0.0
    t: float = -math.inf
    rejected_in_row: int = 0

    def update(self, t: float, rssi: float) -> bool:
        """Fold one reading in; False if it was rejected as an outlier."""
        r2 = self.measurement_noise**2
        if math.isnan(self.level):
            self.level, self.variance, self.t = rssi, r2, t
            return True
        dt = max(0.0, t - self.t)
        predicted_var = self.variance + self.process_noise**2 * dt
        innovation = rssi - self.level
        s = predicted_var + r2
        if innovation * innovation > self.outlier_sigma**2 * s:
            self.rejected_in_row += 1
            if self.rejected_in_row < 3:
                self.variance = predicted_var
                self.t = t
                return False
            # The level really moved (a person turned a corner): start again from here.
            self.level, self.variance, self.t, self.rejected_in_row = rssi, r2, t, 0
            return True
        gain = predicted_var / s
        self.level += gain * innovation
        self.variance = (1.0 - gain) * predicted_var
        self.t = t
        self.rejected_in_row = 0
        return True

    @property
    def sigma(self) -> float:
        return math.sqrt(self.variance)


@dataclass(frozen=True, slots=True)
class Range:
    """Where one receiver puts a device: its position and the estimated distance."""

    receiver: str
    x: float
    y: float
    distance: float
    sigma: float  # of the distance, metres
    rssi: float
    sigma_db: float  # of the filtered RSSI plus the model's shadowing, dB
    exponent: float


def nearest(ranges: list[Range]) -> tuple[float, float, float]:
    best = min(ranges, key=lambda r: r.distance)
    return best.x, best.y, best.distance + best.sigma


def weighted_centroid(ranges: list[Range]) -> tuple[float, float, float]:
    weights = [1.0 / max(r.distance, 0.1) ** 2 for r in ranges]
    total = sum(weights)
    x = sum(w * r.x for w, r in zip(weights, ranges, strict=True)) / total
    y = sum(w * r.y for w, r in zip(weights, ranges, strict=True)) / total
    # Spread: how far the estimated ranges disagree with the chosen point, weighted.
    err = sum(
        w * abs(math.hypot(x - r.x, y - r.y) - r.distance)
        for w, r in zip(weights, ranges, strict=True)
    )
    return x, y, err / total + min(r.sigma for r in ranges)


def least_squares(ranges: list[Range], iterations: int = 12) -> tuple[float, float, float]:
    """Weighted Gauss-Newton multilateration started from the weighted centroid."""
    if len(ranges) < 3:
        return weighted_centroid(ranges)
    x, y, _ = weighted_centroid(ranges)
    a11 = a12 = a22 = 0.0
    for _ in range(iterations):
        a11 = a12 = a22 = b1 = b2 = 0.0
        chi2 = 0.0
        for r in ranges:
            dx, dy = x - r.x, y - r.y
            dist = math.hypot(dx, dy) or 1e-6
            w = 1.0 / max(r.sigma, 0.05) ** 2
            res = dist - r.distance
            jx, jy = dx / dist, dy / dist
            a11 += w * jx * jx
            a12 += w * jx * jy
            a22 += w * jy * jy
            b1 += w * jx * res
            b2 += w * jy * res
            chi2 += w * res * res
        det = a11 * a22 - a12 * a12
        if det <= 1e-12:
            break
        step_x = (a22 * b1 - a12 * b2) / det
        step_y = (a11 * b2 - a12 * b1) / det
        x -= step_x
        y -= step_y
        if step_x * step_x + step_y * step_y < 1e-6:
            break
    det = a11 * a22 - a12 * a12
    if det <= 1e-12:
        return weighted_centroid(ranges)
    # Covariance (JᵀWJ)⁻¹, inflated when residuals say the sigmas were optimistic.
    dof = len(ranges) - 2
    chi2 = sum(
        (math.hypot(x - r.x, y - r.y) - r.distance) ** 2 / max(r.sigma, 0.05) ** 2 for r in ranges
    )
    scale = max(1.0, chi2 / dof)
    trace = (a11 + a22) / det * scale
    return x, y, math.sqrt(trace)


def _k(r: Range) -> float:
    """dB per neper of distance for this receiver's path-loss exponent."""
    return 10.0 * r.exponent / math.log(10)


# Devices differ in transmit power (phones by ±10 dB; the hardware profile is a nominal
# value), so the fit also estimates a common power offset b, with this prior spread (dB).
POWER_OFFSET_PRIOR_DB = 3.0
# The maximum-likelihood fit uses at most this many receivers, the loudest.
MAX_RANGES = 12
# Tracking: solves start from the device's previous fix, with a full multi-start search at
# least this often (trace time) and whenever the tracked fit's mean squared residual per
# degree of freedom exceeds the limit (in σ², 4 = two standard deviations).
FULL_SEARCH_EVERY_S = 2.0
TRACKING_FIT_LIMIT = 4.0


# Per receiver, what the dB-domain fit needs, computed once per solve:
# (x, y, k/2, ln(d_est²), 1/σ²)
_Term = tuple[float, float, float, float, float]


def _terms(ranges: list[Range]) -> list[_Term]:
    return [
        (r.x, r.y, 0.5 * _k(r), 2.0 * math.log(max(r.distance, 1e-3)), 1.0 / r.sigma_db**2)
        for r in ranges
    ]


def _cost(terms: list[_Term], x: float, y: float, b: float) -> float:
    cost = (b / POWER_OFFSET_PRIOR_DB) ** 2
    log = math.log
    for rx, ry, half_k, log_est, w in terms:
        d2 = (x - rx) ** 2 + (y - ry) ** 2
        # measured minus predicted level: 10·n·log10(d_est/d) - b = k/2·ln(d_est²/d²) - b
        res = half_k * (log(d2 if d2 > 0.01 else 0.01) - log_est) - b
        cost += res * res * w
    return cost


def _best_starts(ranges: list[Range], terms: list[_Term]) -> list[tuple[float, float]]:
    """Where a full search starts: the weighted centroid and points around the two nearest
    receivers at their estimated range; the three that fit best."""
    cx, cy, _ = weighted_centroid(ranges)
    starts = [(cx, cy)]
    for r in sorted(ranges, key=lambda r: r.distance)[:2]:
        for angle in range(0, 360, 60):
            a = math.radians(angle)
            starts.append((r.x + r.distance * math.cos(a), r.y + r.distance * math.sin(a)))
    return sorted(starts, key=lambda p: _cost(terms, p[0], p[1], 0.0))[:3]


def max_likelihood(ranges: list[Range], iterations: int = 15) -> tuple[float, float, float]:
    """Maximum-likelihood position under log-normal shadowing (see `max_likelihood_fit`)."""
    x, y, uncertainty, _b = max_likelihood_fit(ranges, iterations)
    return x, y, uncertainty


def max_likelihood_fit(
    ranges: list[Range], iterations: int = 15, hint: tuple[float, float, float] | None = None
) -> tuple[float, float, float, float]:
    """Maximum-likelihood position under log-normal shadowing: (x, y, uncertainty, b).

    Residuals are in dB (the domain where the noise is Gaussian), so a far receiver's weak
    reading counts as much evidence as a near one's: this is what rules out the mirror image
    of a point across a line of receivers, which range-domain least squares cannot. The
    device's power offset is a third unknown (with a prior), so a phone louder or quieter
    than its profile does not pull the position. The cost has local minima, so Gauss-Newton
    starts from the weighted centroid and from points around the strongest receivers, and
    the best end point wins. With a `hint` (the device's previous fix and power offset, when
    tracking) the fit starts there alone and falls back to the full search only if the result
    does not explain the readings (more than ~2 σ per reading on average).
    """
    if len(ranges) < 3:
        return (*weighted_centroid(ranges), 0.0)
    if len(ranges) > MAX_RANGES:
        # In a big shop a phone is heard by dozens of receivers; the loudest dozen carry
        # nearly all of the information (and each receiver costs every iteration).
        ranges = sorted(ranges, key=lambda r: r.rssi, reverse=True)[:MAX_RANGES]
    terms = _terms(ranges)
    dof = max(1, len(ranges) - 2)
    if hint is not None:
        x, y, b, var = _gauss_newton_db(terms, hint[0], hint[1], iterations, hint[2])
        cost = _cost(terms, x, y, b)
        if var > 0 and math.isfinite(var) and cost / dof < TRACKING_FIT_LIMIT:
            return x, y, math.sqrt(max(1.0, cost / dof) * var), b
    scored = _best_starts(ranges, terms)
    best: tuple[float, float, float, float, float] | None = None
    for sx, sy in scored:
        x, y, b, var = _gauss_newton_db(terms, sx, sy, iterations)
        cost = _cost(terms, x, y, b)
        if best is None or cost < best[0]:
            best = (cost, x, y, var, b)
    assert best is not None
    cost, x, y, var, b = best
    if var <= 0 or not math.isfinite(var):
        return (*weighted_centroid(ranges), 0.0)
    scale = max(1.0, cost / dof)
    return x, y, math.sqrt(scale * var), b


def _solve3(a: list[list[float]], g: list[float]) -> list[float] | None:
    """Solve the symmetric 3×3 system a·s = g (Cramer's rule, written out: this runs for
    every Gauss-Newton step of every position solve)."""
    (a11, a12, a13), (_, a22, a23), (_, _, a33) = a
    c11 = a22 * a33 - a23 * a23
    c12 = a13 * a23 - a12 * a33
    c13 = a12 * a23 - a13 * a22
    det = a11 * c11 + a12 * c12 + a13 * c13
    if abs(det) < 1e-12:
        return None
    c22 = a11 * a33 - a13 * a13
    c23 = a13 * a12 - a11 * a23
    c33 = a11 * a22 - a12 * a12
    g1, g2, g3 = g
    return [
        (c11 * g1 + c12 * g2 + c13 * g3) / det,
        (c12 * g1 + c22 * g2 + c23 * g3) / det,
        (c13 * g1 + c23 * g2 + c33 * g3) / det,
    ]


def _gauss_newton_db(
    terms: list[_Term], x: float, y: float, iterations: int, b: float = 0.0
) -> tuple[float, float, float, float]:
    """Refine (x, y, b); also return the position variance (trace of the xy covariance).

    The normal equations are accumulated entry by entry (the matrix is symmetric): this is
    the positioning hot path, run for every solve of every tracked device."""
    prior = 1.0 / POWER_OFFSET_PRIOR_DB**2
    log = math.log
    a: list[list[float]] = [[prior, 0.0, 0.0], [0.0, prior, 0.0], [0.0, 0.0, prior]]
    for _ in range(iterations):
        axx = axy = axb = ayy = ayb = abb = 0.0
        gx = gy = gb = 0.0
        for rx, ry, half_k, log_est, w in terms:
            dx, dy = x - rx, y - ry
            d2 = dx * dx + dy * dy
            if d2 < 0.01:
                d2 = 0.01
            res = half_k * (log(d2) - log_est) - b
            # Jacobian of the residual: (k·dx/d², k·dy/d², -1), k = 2·half_k
            jx = 2.0 * half_k * dx / d2
            jy = 2.0 * half_k * dy / d2
            wjx, wjy = w * jx, w * jy
            axx += wjx * jx
            axy += wjx * jy
            ayy += wjy * jy
            axb -= wjx
            ayb -= wjy
            abb += w
            gx += wjx * res
            gy += wjy * res
            gb -= w * res
        abb += prior
        gb += prior * b
        a = [[axx, axy, axb], [axy, ayy, ayb], [axb, ayb, abb]]
        step = _solve3(a, [gx, gy, gb])
        if step is None:
            return x, y, b, -1.0
        sx, sy, sb = step
        norm = math.hypot(sx, sy)
        if norm > 5.0:  # damp wild steps far from the receivers
            sx, sy, sb = sx * 5.0 / norm, sy * 5.0 / norm, sb * 5.0 / norm
        x, y, b = x - sx, y - sy, b - sb
        if norm < 0.01:  # a centimetre: far below what RSSI can resolve
            break
    cov = _solve3(a, [1.0, 0.0, 0.0]), _solve3(a, [0.0, 1.0, 0.0])
    if cov[0] is None or cov[1] is None:
        return x, y, b, -1.0
    return x, y, b, cov[0][0] + cov[1][1]


# Below this many devices due at once, solving one by one is cheaper than array set-up.
BATCH_TRACK_MIN = 8


def _gauss_newton_rows(
    rows: list[list[_Term]], x: Any, y: Any, b: Any, iterations: int
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """`_gauss_newton_db` for many (terms, start) rows at once, receivers padded with zero
    weight: final x, y, b, position variance (-1: singular), cost, and degrees of freedom."""
    import numpy as np

    n = len(rows)
    width = max(len(r) for r in rows)
    rx, ry, hk, le, w = (np.zeros((n, width)) for _ in range(5))
    counts = np.zeros(n)
    for i, terms in enumerate(rows):
        k = len(terms)
        counts[i] = k
        rx[i, :k], ry[i, :k], hk[i, :k], le[i, :k], w[i, :k] = zip(*terms, strict=True)
    prior = 1.0 / POWER_OFFSET_PRIOR_DB**2
    active = np.ones(n, dtype=bool)
    var = np.full(n, -1.0)
    for _ in range(iterations):
        dx, dy = x[:, None] - rx, y[:, None] - ry
        d2 = np.maximum(dx * dx + dy * dy, 0.01)
        res = hk * (np.log(d2) - le) - b[:, None]
        jx, jy = 2.0 * hk * dx / d2, 2.0 * hk * dy / d2
        wjx, wjy = w * jx, w * jy
        axx, axy, ayy = (wjx * jx).sum(1), (wjx * jy).sum(1), (wjy * jy).sum(1)
        axb, ayb, abb = -wjx.sum(1), -wjy.sum(1), w.sum(1) + prior
        gx, gy = (wjx * res).sum(1), (wjy * res).sum(1)
        gb = -(w * res).sum(1) + prior * b
        c11, c12, c13 = ayy * abb - ayb * ayb, axb * ayb - axy * abb, axy * ayb - axb * ayy
        c22, c23, c33 = axx * abb - axb * axb, axb * axy - axx * ayb, axx * ayy - axy * axy
        det = axx * c11 + axy * c12 + axb * c13
        singular = np.abs(det) < 1e-12
        safe = np.where(singular, 1.0, det)
        var = np.where(active & ~singular, (c11 + c22) / safe, np.where(active, -1.0, var))
        sx = (c11 * gx + c12 * gy + c13 * gb) / safe
        sy = (c12 * gx + c22 * gy + c23 * gb) / safe
        sb = (c13 * gx + c23 * gy + c33 * gb) / safe
        norm = np.hypot(sx, sy)
        scale = np.where(norm > 5.0, 5.0 / np.maximum(norm, 1e-12), 1.0)
        move = active & ~singular
        x = np.where(move, x - sx * scale, x)
        y = np.where(move, y - sy * scale, y)
        b = np.where(move, b - sb * scale, b)
        active &= ~singular & (norm >= 0.01)
        if not active.any():
            break
    dx, dy = x[:, None] - rx, y[:, None] - ry
    d2 = np.maximum(dx * dx + dy * dy, 0.01)
    res = hk * (np.log(d2) - le) - b[:, None]
    cost = (b / POWER_OFFSET_PRIOR_DB) ** 2 + (w * res * res).sum(1)
    return x, y, b, var, cost, np.maximum(1.0, counts - 2)


def _loudest(ranges: list[Range]) -> list[Range]:
    if len(ranges) > MAX_RANGES:
        return sorted(ranges, key=lambda r: r.rssi, reverse=True)[:MAX_RANGES]
    return ranges


def track_batch(
    batch: list[list[Range]], hints: list[tuple[float, float, float]], iterations: int = 15
) -> list[tuple[float, float, float, float] | None]:
    """Tracking fits from each hint for many devices at once: per device (x, y,
    uncertainty, b), or None where the fit does not explain the readings (the caller then
    runs the full search) — as `max_likelihood_fit` with a hint decides."""
    import numpy as np

    rows = [_terms(_loudest(r)) for r in batch]
    x, y, b, var, cost, dof = _gauss_newton_rows(
        rows,
        np.array([h[0] for h in hints]),
        np.array([h[1] for h in hints]),
        np.array([h[2] for h in hints]),
        iterations,
    )
    out: list[tuple[float, float, float, float] | None] = []
    for i in range(len(rows)):
        per_dof = float(cost[i] / dof[i])
        if var[i] > 0 and math.isfinite(var[i]) and per_dof < TRACKING_FIT_LIMIT:
            uncertainty = math.sqrt(max(1.0, per_dof) * float(var[i]))
            out.append((float(x[i]), float(y[i]), uncertainty, float(b[i])))
        else:
            out.append(None)
    return out


def search_batch(
    batch: list[list[Range]], iterations: int = 15
) -> list[tuple[float, float, float, float]]:
    """The full multi-start search of `max_likelihood_fit` for many devices at once: the
    same start points, the same three best, Gauss-Newton from each, the best end point."""
    import numpy as np

    rows: list[list[_Term]] = []
    owners: list[int] = []
    start_x: list[float] = []
    start_y: list[float] = []
    for index, ranges in enumerate(batch):
        ranges = _loudest(ranges)
        terms = _terms(ranges)
        for sx, sy in _best_starts(ranges, terms):
            rows.append(terms)
            owners.append(index)
            start_x.append(sx)
            start_y.append(sy)
    x, y, b, var, cost, dof = _gauss_newton_rows(
        rows, np.array(start_x), np.array(start_y), np.zeros(len(rows)), iterations
    )
    best: dict[int, int] = {}
    for row, owner in enumerate(owners):
        if owner not in best or cost[row] < cost[best[owner]]:
            best[owner] = row
    out = []
    for index, ranges in enumerate(batch):
        row = best[index]
        if var[row] <= 0 or not math.isfinite(var[row]):
            out.append((*weighted_centroid(_loudest(ranges)), 0.0))
            continue
        scale = max(1.0, float(cost[row] / dof[row]))
        out.append(
            (float(x[row]), float(y[row]), math.sqrt(scale * float(var[row])), float(b[row]))
        )
    return out


METHODS = {
    "max_likelihood": max_likelihood,
    "nearest": nearest,
    "weighted_centroid": weighted_centroid,
    "least_squares": least_squares,
}


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


class PresenceTracker:
    """Tracks every device heard by the store's receivers and positions it."""

    def __init__(
        self,
        settings: PresenceSettings,
        receivers: dict[str, tuple[float, float]],
        calibration: dict[str, tuple[float | None, float | None]] | None = None,
        receiver_levels: dict[str, int] | None = None,
        receiver_offsets: dict[str, float] | None = None,
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
        self._locate = METHODS[settings.method]

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
        if not (-127.0 <= rssi < 0.0) or math.isnan(rssi):
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
        state.last_seen = max(state.last_seen, t)
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
        ranges: list[Range],
        level: int,
        fit: tuple[float, float, float, float],
    ) -> Position:
        x, y, uncertainty, b = fit
        state = self.devices[device]
        state.last_fix = (x, y, b, level)
        if self.settings.bounds is not None:
            min_x, min_y, max_x, max_y = self.settings.bounds
            x, y = min(max(x, min_x), max_x), min(max(y, min_y), max_y)
        position = Position(device, t, x, y, uncertainty, self.settings.method, len(ranges), level)
        state.last_position = position
        return position

    def position(self, device: str, t: float) -> Position | None:
        prepared = self._prepare(device, t)
        if prepared is None:
            return None
        ranges, level, hint = prepared
        return self._finish(device, t, ranges, level, self._solve(device, t, ranges, hint))

    def positions_many(self, due: list[tuple[str, float]]) -> list[Position]:
        """Solve several devices at once: the tracked ones (most of them) in one vectorised
        Gauss-Newton (`track_batch`), the rest — and any the tracked fit does not explain —
        one by one. The same fits as `position` would give, device by device."""
        prepared = []
        for device, t in due:
            p = self._prepare(device, t)
            if p is not None:
                prepared.append((device, t, *p))
        tracked = [
            i
            for i, (_, _, ranges, _, hint) in enumerate(prepared)
            if hint is not None and len(ranges) >= 3
        ]
        fits: dict[int, tuple[float, float, float, float]] = {}
        batched = set(tracked) if len(tracked) >= BATCH_TRACK_MIN else set()
        if batched:
            results = track_batch(
                [prepared[i][2] for i in tracked],
                [prepared[i][4] for i in tracked],  # type: ignore[misc]
            )
            for i, fit in zip(tracked, results, strict=True):
                if fit is not None:
                    fits[i] = fit
        if self.settings.method == "max_likelihood":
            # Full searches (untracked devices, and tracked fits that did not explain the
            # readings), vectorised too when there are enough of them.
            search = [
                i
                for i, p in enumerate(prepared)
                if i not in fits and len(p[2]) >= 3 and (i in batched or p[4] is None)
            ]
            if len(search) >= BATCH_TRACK_MIN:
                for i, fit in zip(
                    search, search_batch([prepared[i][2] for i in search]), strict=True
                ):
                    fits[i] = fit
                    if prepared[i][4] is None:  # as `_solve` does: a planned full search
                        self.devices[prepared[i][0]].last_search = prepared[i][1]
        out = []
        for i, (device, t, ranges, level, hint) in enumerate(prepared):
            fit = fits.get(i)
            if fit is None and i in batched:
                # the tracked fit did not explain the readings: the full search, exactly as
                # `max_likelihood_fit` does after a failed hint (no planned-search mark)
                fit = max_likelihood_fit(ranges)
            elif fit is None:
                fit = self._solve(device, t, ranges, hint)
            out.append(self._finish(device, t, ranges, level, fit))
        return out

    def expire(self, now: float) -> list[str]:
        """Forget devices silent for longer than the stale timeout; return their ids."""
        limit = now - self.settings.stale_after_s
        gone = [d for d, state in self.devices.items() if state.last_seen < limit]
        for device in gone:
            del self.devices[device]
        return gone


# Positions may fall this far outside the floor: a shopper walking away from the door must be
# placed outside (and leave the entrance zone), not clamped onto the threshold.
OUTSIDE_MARGIN_M = 15.0


def tracker_for(
    config: Config,
    store: StoreMap,
    device_profile: BeaconProfile,
    method: str | None = None,
    solve_interval_s: float = 0.0,
) -> PresenceTracker:
    """The one place a tracker is built from the config and the store map (pipeline,
    `gateway locate`, accuracy evaluation and the floor-plan renderer all use it)."""
    p = config.presence
    b = store.bounds
    settings = PresenceSettings(
        process_noise_db=p.process_noise_db,
        measurement_noise_db=p.measurement_noise_db,
        outlier_sigma=p.outlier_sigma,
        stale_after_s=p.stale_after_s,
        method=method or p.method,
        path_loss_exponent=p.path_loss_exponent or device_profile.path_loss_exponent,
        default_measured_power=device_profile.measured_power_dbm,
        measured_power_override=p.measured_power,
        shadowing_db=p.shadowing_db,
        bounds=(
            b[0] - OUTSIDE_MARGIN_M,
            b[1] - OUTSIDE_MARGIN_M,
            b[2] + OUTSIDE_MARGIN_M,
            b[3] + OUTSIDE_MARGIN_M,
        ),
        min_solve_interval_s=solve_interval_s,
    )
    return PresenceTracker(
        settings,
        store.receivers,
        store.calibration,
        store.receiver_levels,
        receiver_offsets(config.state_path),
    )
