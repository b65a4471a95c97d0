"""Which zones contain a point: the question the zone stage asks for every position.

Two paths, one answer (a test and the benchmark hold them to it):

* `containing(x, y, level)` — one point, from plain Python: a uniform grid of cells, each
  listing the zones whose bounding box touches it, pre-sorted by priority. A lookup is a dict
  hit plus a bounding-box compare per candidate; only candidates that are not axis-aligned
  rectangles (most shelving zones are) need Shapely's exact `intersects_xy` on the prepared
  polygon. No geometry object is created per point.
* `containing_many(xs, ys, level)` — a batch, vectorised: one STRtree bounding-box query for
  all points, then one vectorised exact test for the non-rectangle candidates.

A point on a zone's boundary is inside (Shapely's `intersects`), on both paths.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely import STRtree

from gateway.site.storemap import Zone

# Grid cells per zone, roughly: more cells mean fewer candidates per lookup and more memory.
_CELL_MIN_M, _CELL_MAX_M = 0.5, 8.0
# Whatever the map's units or extent, the grid holds at most this many (cell, zone) entries
# (a few MB): a map drawn in millimetres coarsens the cells instead of exhausting memory.
MAX_GRID_ENTRIES = 200_000

# (zone index, min x, min y, max x, max y, exact-by-bounding-box, shape)
_Candidate = tuple[int, float, float, float, float, bool, Any]


def _is_rectangle(shape: Any) -> bool:
    return bool(abs(shape.envelope.area - shape.area) < 1e-9)


class ZoneIndex:
    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        for zone in zones:
            shapely.prepare(zone.shape)
        rect = [_is_rectangle(z.shape) for z in zones]
        # Cell size: about the typical zone's shorter side, so a cell sees few zones.
        sides = sorted(min(b[2] - b[0], b[3] - b[1]) for b in (z.shape.bounds for z in zones)) or [
            1.0
        ]
        self.cell = float(min(_CELL_MAX_M, max(_CELL_MIN_M, sides[len(sides) // 2])))
        boxes = [z.shape.bounds for z in zones]
        while True:
            entries, widest = self._entries(boxes)
            if entries <= MAX_GRID_ENTRIES or widest <= 4:
                break  # within budget, or as coarse as helps (every zone in ≤ 2×2 cells)
            self.cell *= 2.0
        grid: dict[tuple[int, int, int], list[_Candidate]] = defaultdict(list)
        order = sorted(range(len(zones)), key=lambda i: (-zones[i].priority, i))
        for i in order:
            zone = zones[i]
            minx, miny, maxx, maxy = zone.shape.bounds
            candidate = (i, minx, miny, maxx, maxy, rect[i], zone.shape)
            for cx in range(self._c(minx), self._c(maxx) + 1):
                for cy in range(self._c(miny), self._c(maxy) + 1):
                    grid[(zone.level, cx, cy)].append(candidate)
        self._grid = {key: tuple(value) for key, value in grid.items()}

        # Batched path: per level an STRtree, the shapes, rectangle flags, global indices.
        self._priority = np.array([z.priority for z in zones], dtype=np.int64)
        self._levels: dict[
            int, tuple[STRtree, npt.NDArray[Any], npt.NDArray[np.bool_], npt.NDArray[np.intp]]
        ] = {}
        for level in sorted({z.level for z in zones}):
            indices = [i for i, z in enumerate(zones) if z.level == level]
            shapes = np.array([zones[i].shape for i in indices], dtype=object)
            self._levels[level] = (
                STRtree(shapes),
                shapes,
                np.array([rect[i] for i in indices], dtype=bool),
                np.array(indices, dtype=np.intp),
            )

    def _c(self, value: float) -> int:
        return math.floor(value / self.cell)

    def _entries(self, boxes: list[tuple[float, float, float, float]]) -> tuple[int, int]:
        """(grid entries, most cells of one zone) at the current cell size."""
        total = widest = 0
        for minx, miny, maxx, maxy in boxes:
            cells = (self._c(maxx) - self._c(minx) + 1) * (self._c(maxy) - self._c(miny) + 1)
            total += cells
            widest = max(widest, cells)
        return total, widest

    def containing(self, x: float, y: float, level: int = 0) -> list[int]:
        """Indices of the zones of `level` containing the point, highest priority first."""
        cell = self.cell
        candidates = self._grid.get((level, math.floor(x / cell), math.floor(y / cell)))
        if candidates is None:
            return []
        hits = []
        for i, minx, miny, maxx, maxy, exact, shape in candidates:
            inside_box = minx <= x <= maxx and miny <= y <= maxy
            if inside_box and (exact or shapely.intersects_xy(shape, x, y)):
                hits.append(i)
        return hits

    def containing_many(
        self, xs: Any, ys: Any, level: int = 0
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(point index, zone index) pairs for a batch: by point, highest priority first."""
        empty = np.empty(0, dtype=np.intp)
        found = self._levels.get(level)
        if found is None or len(xs) == 0:
            return empty, empty
        tree, shapes, is_rect, zone_index = found
        points = shapely.points(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
        which, hit = tree.query(points)
        keep = is_rect[hit]
        if not keep.all():
            todo = ~keep
            keep[todo] = shapely.intersects(shapes[hit[todo]], points[which[todo]])
            which, hit = which[keep], hit[keep]
        zones = zone_index[hit]
        order = np.lexsort((zones, -self._priority[zones], which))
        return which[order], zones[order]
