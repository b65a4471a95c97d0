"""The numpy twin of the maximum-likelihood solver, for many devices due at once (a busy
store): every device's ranges as rows of padded arrays, one Gauss-Newton for all of them.

`gateway.presence.solve` holds the scalar reference; a property test holds this module to
it (the same fixes to the millimetre on a busy simulated floor). The tracker gathers the
filtered levels straight into arrays (`RangeRows`): no `Range` object is built on this path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.presence.solve import (
    MAX_RANGES,
    POWER_OFFSET_PRIOR_DB,
    TRACKING_FIT_LIMIT,
)


def _compiled_kernel() -> Any:
    """The compiled inner loop (`_kernel.c`), or None where the build had no C compiler."""
    try:
        from gateway.presence import _kernel
    except ImportError:
        return None
    return _kernel


KERNEL = _compiled_kernel()

# Where a full search starts besides the weighted centroid: six points on the circle of
# each of the two nearest receivers' estimated range (as `solve._best_starts`).
_START_ANGLES = [math.radians(a) for a in range(0, 360, 60)]


@dataclass(slots=True)
class RangeRows:
    """One row per device, one column per receiver heard (at most `MAX_RANGES`, the loudest;
    padding has weight 0): what the dB-domain fit needs, plus what its fallbacks need."""

    rx: Any  # receiver x, m
    ry: Any  # receiver y, m
    half_k: Any  # dB per neper of distance / 2
    log_est: Any  # ln(estimated distance²)
    weight: Any  # 1 / σ_dB²
    distance: Any  # estimated distance, m (inf in padding)
    distance_sigma: Any  # of the distance, m
    count: Any  # receivers per row


def range_rows(
    row_of: list[int],
    columns: list[int],
    level: list[float],
    variance: list[float],
    learned: list[float],
    receiver_constants: Any,
    row_power: list[float],
    rows: int,
    shadowing_db: float,
) -> RangeRows:
    """Rows of ranges from the fresh filters of `rows` devices, given entry by entry
    (entries of a row contiguous, in the tracker's order): the row, the receiver's column in
    `receiver_constants` (x, y, exponent, power at 1 m or NaN for "the device's", the
    receiver's offset added to the device's power), the filtered level, its variance and the
    receiver's learned offset when the entry was taken. `row_power` is each device's
    measured power. As `PresenceTracker.ranges` then
    `solve._terms`: the loudest `MAX_RANGES` kept, ties in the tracker's order."""
    import numpy as np

    row = np.asarray(row_of, dtype=np.intp)
    counts = np.bincount(row, minlength=rows)
    width = max(int(counts.max()), 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    col = np.arange(len(row_of)) - starts[row]
    levels = np.full((rows, width), -np.inf)
    levels[row, col] = level
    entry = np.zeros((rows, width), dtype=np.intp)
    entry[row, col] = np.arange(len(row_of))
    if width > MAX_RANGES:
        order = np.argsort(-levels, axis=1, kind="stable")[:, :MAX_RANGES]
        levels = np.take_along_axis(levels, order, axis=1)
        entry = np.take_along_axis(entry, order, axis=1)
        counts = np.minimum(counts, MAX_RANGES)
        width = MAX_RANGES
    valid = np.arange(width)[None, :] < counts[:, None]
    constants = receiver_constants[np.asarray(columns, dtype=np.intp)[entry]]
    rx, ry, exponent, fixed_power, offset = np.moveaxis(constants, -1, 0)
    own = np.asarray(row_power)[:, None] + offset
    power = np.where(np.isnan(fixed_power), own, fixed_power) + np.asarray(learned)[entry]
    exponent = np.where(valid, exponent, 1.0)
    levels = np.where(valid, levels, 0.0)
    distance = np.where(valid, 10.0 ** ((power - levels) / (10.0 * exponent)), np.inf)
    rssi_sigma = np.sqrt(np.asarray(variance)[entry])
    distance_sigma = distance * (math.log(10) / 10) * rssi_sigma / exponent
    sigma_db2 = rssi_sigma * rssi_sigma + shadowing_db * shadowing_db
    half_k = np.where(valid, 5.0 * exponent / math.log(10), 0.0)
    log_est = np.where(valid, 2.0 * np.log(np.maximum(distance, 1e-3)), 0.0)
    return RangeRows(
        np.where(valid, rx, 0.0),
        np.where(valid, ry, 0.0),
        half_k,
        log_est,
        np.where(valid, 1.0 / sigma_db2, 0.0),
        distance,
        np.where(valid, distance_sigma, np.inf),
        counts,
    )


def receiver_table(
    names: list[str],
    receivers: dict[str, tuple[float, float]],
    calibration: dict[str, tuple[float | None, float | None]],
    offsets: dict[str, float],
    default_exponent: float,
    power_override: bool,
) -> Any:
    """Per receiver: x, y, path-loss exponent, its own power at 1 m (NaN: the device's) and
    its calibration offset — `receiver_constants` for `range_rows`."""
    import numpy as np

    table = np.empty((len(names), 5))
    for i, name in enumerate(names):
        power, exponent = calibration.get(name, (None, None))
        x, y = receivers[name]
        own = math.nan if power is None or power_override else power
        n = exponent if exponent is not None else default_exponent
        table[i] = (x, y, n, own, offsets.get(name, 0.0))
    return table


def gauss_newton(
    rows: RangeRows, pick: Any, x: Any, y: Any, b: Any, iterations: int, compiled: bool = True
) -> tuple[Any, Any, Any, Any, Any]:
    """`solve._gauss_newton_db` for the rows `pick` of `rows` (an index array; a row may
    appear several times, from several starts) at once: final x, y, b, position variance
    (-1: singular) and cost. Compiled when the kernel was built (`compiled`: unless told
    not to), else in numpy, where rows leave the working set as they converge (most do in a
    few steps; a few wander for all `iterations`)."""
    import numpy as np

    if compiled and KERNEL is not None:
        out = [np.array(v, dtype=np.float64) for v in (x, y, b)]
        var, cost = np.empty(len(pick)), np.empty(len(pick))
        KERNEL.gauss_newton(
            rows.rx[pick],
            rows.ry[pick],
            rows.half_k[pick],
            rows.log_est[pick],
            rows.weight[pick],
            *out,
            var,
            cost,
            rows.rx.shape[1],
            iterations,
            POWER_OFFSET_PRIOR_DB,
        )
        return out[0], out[1], out[2], var, cost
    x, y, b = x.astype(float), y.astype(float), b.astype(float)
    var = np.full(len(pick), -1.0)
    prior = 1.0 / POWER_OFFSET_PRIOR_DB**2
    # the working set: positions in `pick` still moving, and their rows' terms
    at = np.arange(len(pick))
    rx, ry, hk = rows.rx[pick], rows.ry[pick], rows.half_k[pick]
    le, w = rows.log_est[pick], rows.weight[pick]
    abb = w.sum(1) + prior
    wx, wy, wb = x.copy(), y.copy(), b.copy()
    for _ in range(iterations):
        dx, dy = wx[:, None] - rx, wy[:, None] - ry
        d2 = np.maximum(dx * dx + dy * dy, 0.01)
        res = hk * (np.log(d2) - le) - wb[:, None]
        scale2 = 2.0 * hk / d2
        jx, jy = scale2 * dx, scale2 * dy
        wjx, wjy = w * jx, w * jy
        axx, axy, ayy = (wjx * jx).sum(1), (wjx * jy).sum(1), (wjy * jy).sum(1)
        axb, ayb = -wjx.sum(1), -wjy.sum(1)
        gx, gy = (wjx * res).sum(1), (wjy * res).sum(1)
        gb = -(w * res).sum(1) + prior * wb
        c11, c12, c13 = ayy * abb - ayb * ayb, axb * ayb - axy * abb, axy * ayb - axb * ayy
        c22, c23, c33 = axx * abb - axb * axb, axb * axy - axx * ayb, axx * ayy - axy * axy
        det = axx * c11 + axy * c12 + axb * c13
        singular = np.abs(det) < 1e-12
        safe = np.where(singular, 1.0, det)
        var[at] = np.where(singular, -1.0, (c11 + c22) / safe)
        sx = (c11 * gx + c12 * gy + c13 * gb) / safe
        sy = (c12 * gx + c22 * gy + c23 * gb) / safe
        sb = (c13 * gx + c23 * gy + c33 * gb) / safe
        norm = np.hypot(sx, sy)
        step = np.where(singular, 0.0, np.where(norm > 5.0, 5.0 / np.maximum(norm, 1e-12), 1.0))
        wx, wy, wb = wx - sx * step, wy - sy * step, wb - sb * step
        x[at], y[at], b[at] = wx, wy, wb
        moving = ~singular & (norm >= 0.01)
        if not moving.all():
            if not moving.any():
                break
            at, wx, wy, wb = at[moving], wx[moving], wy[moving], wb[moving]
            rx, ry, hk, le, w, abb = (
                rx[moving],
                ry[moving],
                hk[moving],
                le[moving],
                w[moving],
                abb[moving],
            )
    return (
        x,
        y,
        b,
        var,
        _cost(
            rows.rx[pick],
            rows.ry[pick],
            rows.half_k[pick],
            rows.log_est[pick],
            rows.weight[pick],
            x,
            y,
            b,
        ),
    )


def _cost(rx: Any, ry: Any, hk: Any, le: Any, w: Any, x: Any, y: Any, b: Any) -> Any:
    import numpy as np

    dx, dy = x[..., None] - rx, y[..., None] - ry
    res = hk * (np.log(np.maximum(dx * dx + dy * dy, 0.01)) - le) - b[..., None]
    return (b / POWER_OFFSET_PRIOR_DB) ** 2 + (w * res * res).sum(-1)


def weighted_centroids(rows: RangeRows, pick: Any) -> tuple[Any, Any, Any]:
    """`solve.weighted_centroid` for the rows `pick`: x, y, uncertainty."""
    import numpy as np

    d = rows.distance[pick]
    weight = np.where(np.isfinite(d), 1.0 / np.maximum(d, 0.1) ** 2, 0.0)
    total = weight.sum(1)
    rx, ry = rows.rx[pick], rows.ry[pick]
    x = (weight * rx).sum(1) / total
    y = (weight * ry).sum(1) / total
    miss = np.abs(np.hypot(x[:, None] - rx, y[:, None] - ry) - np.where(weight > 0, d, 0.0))
    err = (weight * miss).sum(1)
    return x, y, err / total + rows.distance_sigma[pick].min(1)


def solve_rows(
    rows: RangeRows,
    hint_x: Any,
    hint_y: Any,
    hint_b: Any,
    tracked: Any,
    iterations: int = 15,
    compiled: bool = True,
) -> tuple[Any, Any, Any, Any, Any]:
    """`solve.max_likelihood_fit` for every row: x, y, uncertainty, b, and whether a full
    search was made for a row without a hint (the tracker marks those as searched). Rows with
    fewer than three receivers get the weighted centroid; rows `tracked` start from their
    hint and fall back to the full search when the fit does not explain the readings. The
    last answer marks the rows without a hint (a planned search, as `PresenceTracker._solve`
    marks it)."""
    import numpy as np

    n = len(rows.count)
    x, y, unc = np.zeros(n), np.zeros(n), np.zeros(n)
    b = np.zeros(n)
    dof = np.maximum(1.0, rows.count - 2.0)
    solvable = rows.count >= 3
    few = np.flatnonzero(~solvable)
    if len(few):
        x[few], y[few], unc[few] = weighted_centroids(rows, few)
    search = np.zeros(n, dtype=bool)
    track = np.flatnonzero(solvable & tracked)
    if len(track):
        tx, ty, tb, var, cost = gauss_newton(
            rows, track, hint_x[track], hint_y[track], hint_b[track], iterations, compiled
        )
        per_dof = cost / dof[track]
        good = (var > 0) & np.isfinite(var) & (per_dof < TRACKING_FIT_LIMIT)
        kept = track[good]
        x[kept], y[kept], b[kept] = tx[good], ty[good], tb[good]
        unc[kept] = np.sqrt(np.maximum(1.0, per_dof[good]) * var[good])
        search[track[~good]] = True
    search |= solvable & ~tracked
    todo = np.flatnonzero(search)
    if len(todo):
        _search(rows, todo, dof, iterations, compiled, x, y, unc, b)
    return x, y, unc, b, ~tracked


def _search(
    rows: RangeRows,
    todo: Any,
    dof: Any,
    iterations: int,
    compiled: bool,
    x: Any,
    y: Any,
    unc: Any,
    b: Any,
) -> None:
    """The full multi-start search of `max_likelihood_fit` for the rows `todo`, written into
    x, y, unc, b: the same start points, the three that fit best, Gauss-Newton from each,
    the best end point (the first of equals), the weighted centroid if that is singular."""
    import numpy as np

    cx, cy, cunc = weighted_centroids(rows, todo)
    nearest = np.argsort(rows.distance[todo], axis=1, kind="stable")[:, :2]
    near_x = np.take_along_axis(rows.rx[todo], nearest, axis=1)
    near_y = np.take_along_axis(rows.ry[todo], nearest, axis=1)
    near_d = np.take_along_axis(rows.distance[todo], nearest, axis=1)
    cos, sin = np.cos(_START_ANGLES), np.sin(_START_ANGLES)
    start_x = np.concatenate(
        (cx[:, None], (near_x[:, :, None] + near_d[:, :, None] * cos).reshape(len(todo), -1)),
        axis=1,
    )
    start_y = np.concatenate(
        (cy[:, None], (near_y[:, :, None] + near_d[:, :, None] * sin).reshape(len(todo), -1)),
        axis=1,
    )
    rx, ry = rows.rx[todo][:, None, :], rows.ry[todo][:, None, :]
    hk, le = rows.half_k[todo][:, None, :], rows.log_est[todo][:, None, :]
    w = rows.weight[todo][:, None, :]
    cost = _cost(rx, ry, hk, le, w, start_x, start_y, np.zeros(start_x.shape))
    best3 = np.argsort(cost, axis=1, kind="stable")[:, :3]
    sx = np.take_along_axis(start_x, best3, axis=1).ravel()
    sy = np.take_along_axis(start_y, best3, axis=1).ravel()
    pick = np.repeat(todo, 3)
    zero = np.zeros(len(pick))
    fx, fy, fb, var, fcost = gauss_newton(rows, pick, sx, sy, zero, iterations, compiled)
    winner = np.argmin(fcost.reshape(-1, 3), axis=1) + 3 * np.arange(len(todo))
    fx, fy, fb, var, fcost = fx[winner], fy[winner], fb[winner], var[winner], fcost[winner]
    good = (var > 0) & np.isfinite(var)
    x[todo] = np.where(good, fx, cx)
    y[todo] = np.where(good, fy, cy)
    b[todo] = np.where(good, fb, 0.0)
    scale = np.maximum(1.0, fcost / dof[todo])
    unc[todo] = np.where(good, np.sqrt(scale * np.where(good, var, 1.0)), cunc)
