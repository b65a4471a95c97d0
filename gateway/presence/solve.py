"""Position from ranges to receivers at known places: the scalar reference solvers.

Nearest receiver, weighted centroid, weighted least-squares multilateration (Gauss-Newton),
and the maximum-likelihood fit in the dB domain that also estimates the device's power
offset; each answers (x, y, uncertainty). `gateway.presence.batch` holds their numpy twins.
"""

from __future__ import annotations

import math

from gateway.presence.filter import Range


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


METHODS = {
    "max_likelihood": max_likelihood,
    "nearest": nearest,
    "weighted_centroid": weighted_centroid,
    "least_squares": least_squares,
}
