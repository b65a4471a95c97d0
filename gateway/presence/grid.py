"""Map-aware tracking: a grid forward filter (HMM) over the floor's walkable cells.

The state is the probability of the device being in each cell of a `CELL_M` grid over the
floor (coarser on big floors: at most `MAX_CELLS` cells a level, so a hypermarket costs what
a shop does; positions are good to a metre or so anyway). Cells outside the floor outline or
inside an obstacle (shelves, counters) are not walkable; moves between neighbouring cells
that cross a wall are not allowed. Between two readings the probability diffuses over the
allowed moves as a walking person would (a random walk of `WALK_M2_PER_S` m²/s: about a
metre in a second, never through a wall). Every reading then multiplies in its likelihood:
the receiver's expected RSSI at each cell (the survey's radio map, or without a survey the
log-distance model) against the heard RSSI, a Gaussian of the cell's spread with a floor of
outliers (`OUTLIER_P`: body blocking and multipath nulls do not wipe out the posterior). The
estimate is the posterior mean, its uncertainty the posterior's RMS radius.

Raw readings are not independent (the shadowing of a body lasts seconds): each reading's
log-likelihood is tempered by `TEMPER`, so a burst of readings does not overcommit.
The device's own power offset (a phone louder than the survey beacon) is tracked slowly from
the residuals and bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

CELL_M = 0.5
MAX_CELLS = 2500
WALK_M2_PER_S = 0.8  # diffusion: variance per axis grows by this per second
OUTLIER_P = 0.05
TEMPER = 0.5
EXTRA_SIGMA_DB = 1.5  # the filter's own noise on top of the map's spread
OFFSET_GAIN = 0.01
OFFSET_BOUND_DB = 15.0

Expect = Callable[
    [str, NDArray[np.float64], NDArray[np.float64]], tuple[NDArray[np.float64], NDArray[np.float64]]
]


@dataclass(slots=True)
class GridSpace:
    """The walkable cells of one level and the allowed moves between neighbours."""

    origin: tuple[float, float]
    shape: tuple[int, int]
    cell: float
    walkable: NDArray[np.bool_]  # (nx, ny)
    open_x: NDArray[np.bool_]  # (nx-1, ny): move between (i, j) and (i+1, j) allowed
    open_y: NDArray[np.bool_]  # (nx, ny-1)
    xs: NDArray[np.float64] = field(init=False)  # cell centres, flattened walkable-or-not
    ys: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        nx, ny = self.shape
        gx, gy = np.meshgrid(
            self.origin[0] + self.cell * (np.arange(nx) + 0.5),
            self.origin[1] + self.cell * (np.arange(ny) + 0.5),
            indexing="ij",
        )
        self.xs, self.ys = gx, gy

    @classmethod
    def build(
        cls,
        bounds: tuple[float, float, float, float],
        floor: BaseGeometry | None = None,
        walls: list[BaseGeometry] | None = None,
        obstacles: list[BaseGeometry] | None = None,
    ) -> GridSpace:
        min_x, min_y, max_x, max_y = bounds
        cell = max(CELL_M, math.sqrt((max_x - min_x) * (max_y - min_y) / MAX_CELLS))
        nx = max(1, math.ceil((max_x - min_x) / cell))
        ny = max(1, math.ceil((max_y - min_y) / cell))
        gx, gy = np.meshgrid(
            min_x + cell * (np.arange(nx) + 0.5),
            min_y + cell * (np.arange(ny) + 0.5),
            indexing="ij",
        )
        points = shapely.points(gx.ravel(), gy.ravel())
        walkable = np.ones(nx * ny, dtype=bool)
        if floor is not None:
            walkable &= shapely.covers(floor.buffer(cell / 2), points)
        for obstacle in obstacles or []:
            walkable &= ~shapely.contains(obstacle, points)
        walkable_2d = walkable.reshape(nx, ny)
        open_x = walkable_2d[:-1, :] & walkable_2d[1:, :]
        open_y = walkable_2d[:, :-1] & walkable_2d[:, 1:]
        barrier = shapely.union_all(walls) if walls else None
        if barrier is not None and not barrier.is_empty:
            for mask, (di, dj) in ((open_x, (1, 0)), (open_y, (0, 1))):
                ii, jj = np.nonzero(mask)
                if not len(ii):
                    continue
                segs = shapely.linestrings(
                    np.stack(
                        [
                            np.stack([gx[ii, jj], gy[ii, jj]], axis=1),
                            np.stack([gx[ii + di, jj + dj], gy[ii + di, jj + dj]], axis=1),
                        ],
                        axis=1,
                    )
                )
                crossing = shapely.intersects(barrier, segs)
                mask[ii[crossing], jj[crossing]] = False
        return cls((min_x, min_y), (nx, ny), cell, walkable_2d, open_x, open_y)

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        i = int((x - self.origin[0]) / self.cell)
        j = int((y - self.origin[1]) / self.cell)
        return min(max(i, 0), self.shape[0] - 1), min(max(j, 0), self.shape[1] - 1)

    def diffuse(self, p: NDArray[np.float64], variance_m2: float) -> NDArray[np.float64]:
        """Spread `p` by a random walk of `variance_m2` per axis over the allowed moves
        (explicit diffusion steps; probability mass is kept)."""
        steps = math.ceil(variance_m2 / (0.4 * self.cell * self.cell))
        if steps <= 0:
            return p
        a = variance_m2 / (2.0 * steps * self.cell * self.cell)  # <= 0.2: stable
        ox, oy = self.open_x, self.open_y
        for _ in range(steps):
            flow_x = np.where(ox, a * (p[1:, :] - p[:-1, :]), 0.0)
            flow_y = np.where(oy, a * (p[:, 1:] - p[:, :-1]), 0.0)
            q = p.copy()
            q[:-1, :] += flow_x
            q[1:, :] -= flow_x
            q[:, :-1] += flow_y
            q[:, 1:] -= flow_y
            p = q
        return p


@dataclass(slots=True)
class RadioMap:
    """Expected RSSI and spread per receiver at every cell of a grid space (cached)."""

    space: GridSpace
    expect: Expect
    _cache: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = field(default_factory=dict)

    def at(self, receiver: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        got = self._cache.get(receiver)
        if got is None:
            mu, sigma = self.expect(receiver, self.space.xs, self.space.ys)
            got = self._cache[receiver] = (
                np.asarray(mu, dtype=float),
                np.hypot(np.asarray(sigma, dtype=float), EXTRA_SIGMA_DB),
            )
        return got


@dataclass(slots=True)
class GridFilter:
    """One device's forward filter."""

    radio: RadioMap
    p: NDArray[np.float64] | None = None
    t: float = -math.inf
    offset_db: float = 0.0
    pending_variance: float = 0.0

    def _start(self) -> NDArray[np.float64]:
        w: NDArray[np.float64] = self.radio.space.walkable.astype(float)
        return w / float(w.sum())

    def update(self, t: float, receiver: str, rssi: float) -> None:
        space = self.radio.space
        if self.p is None:
            self.p = self._start()
            self.t = t
        dt = max(0.0, t - self.t)
        self.t = max(self.t, t)
        self.pending_variance += WALK_M2_PER_S * dt
        if self.pending_variance >= 0.05:
            self.p = space.diffuse(self.p, self.pending_variance)
            self.pending_variance = 0.0
        mu, sigma = self.radio.at(receiver)
        z = (rssi - self.offset_db - mu) / sigma
        like = (1.0 - OUTLIER_P) * np.exp(-0.5 * z * z) / sigma + OUTLIER_P / 40.0
        post = self.p * like**TEMPER
        total = float(post.sum())
        if not total > 0 or not math.isfinite(total):
            self.p = self._start()
            return
        self.p = post / total
        residual = float((self.p * (rssi - mu)).sum())
        self.offset_db += OFFSET_GAIN * (residual - self.offset_db)
        self.offset_db = min(max(self.offset_db, -OFFSET_BOUND_DB), OFFSET_BOUND_DB)

    def estimate(self) -> tuple[float, float, float] | None:
        if self.p is None:
            return None
        space = self.radio.space
        x = float((self.p * space.xs).sum())
        y = float((self.p * space.ys).sum())
        var = float((self.p * ((space.xs - x) ** 2 + (space.ys - y) ** 2)).sum())
        return x, y, math.sqrt(max(var, 0.0))


STAIRS_MASS = 0.3  # posterior share near stairs needed to accept a level change


@dataclass(slots=True)
class GridModel:
    """The grid spaces and radio maps of every level, and where levels connect."""

    radios: dict[int, RadioMap]
    stairs: dict[int, NDArray[np.bool_]] = field(default_factory=dict)  # level → cells

    def device(self, level: int) -> GridDevice:
        level = level if level in self.radios else min(self.radios)
        return GridDevice(self, level, GridFilter(self.radios[level]))


@dataclass(slots=True)
class GridDevice:
    """A device's filter on its current level. A level change (the loudest receivers are on
    another floor) is accepted only when the device is probably near stairs; without stairs
    on the map, whenever the receivers say so."""

    model: GridModel
    level: int
    filter: GridFilter

    def update(self, t: float, receiver: str, rssi: float, level: int) -> None:
        if level == self.level:
            self.filter.update(t, receiver, rssi)

    def move_to(self, level: int) -> bool:
        if level == self.level or level not in self.model.radios:
            return False
        here = self.model.stairs.get(self.level)
        p = self.filter.p
        if here is not None and p is not None and float(p[here].sum()) < STAIRS_MASS:
            return False
        radio = self.model.radios[level]
        fresh = GridFilter(radio, t=self.filter.t, offset_db=self.filter.offset_db)
        there = self.model.stairs.get(level)
        if there is not None and there.any():
            start = (there & radio.space.walkable).astype(float)
            if start.sum() > 0:
                fresh.p = start / start.sum()
        self.level, self.filter = level, fresh
        return True
