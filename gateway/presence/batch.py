"""The numpy twins of the solvers, for many devices due at once (a busy store).

A property test holds them to the scalar solvers in `gateway.presence.solve`.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.presence.filter import Range
from gateway.presence.solve import (
    MAX_RANGES,
    POWER_OFFSET_PRIOR_DB,
    TRACKING_FIT_LIMIT,
    _best_starts,
    _Term,
    _terms,
    weighted_centroid,
)

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
