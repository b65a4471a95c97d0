"""The zone index stays small whatever the map's units, and answers like Shapely does."""

from __future__ import annotations

import random

import shapely
from shapely.geometry import Polygon, box

from gateway.site.storemap import Zone
from gateway.zones.index import MAX_GRID_ENTRIES, ZoneIndex


def _zones(scale: float, count: int = 40, seed: int = 7) -> list[Zone]:
    """Shelf-like rectangles and a few triangles over a 40 m × 30 m floor, in `scale` units
    per metre (1000: a map drawn in millimetres)."""
    rng = random.Random(seed)
    zones = []
    for i in range(count):
        x, y = rng.uniform(0, 36) * scale, rng.uniform(0, 26) * scale
        w, h = rng.uniform(0.5, 6) * scale, rng.uniform(0.5, 4) * scale
        shape: Polygon = (
            box(x, y, x + w, y + h) if i % 5 else Polygon([(x, y), (x + w, y), (x, y + h)])
        )
        zones.append(Zone(f"z{i}", f"zone {i}", "aisle", shape, None, None, priority=i % 3))
    return zones


def _naive(zones: list[Zone], x: float, y: float) -> list[int]:
    hits = [i for i, z in enumerate(zones) if shapely.intersects_xy(z.shape, x, y)]
    return sorted(hits, key=lambda i: (-zones[i].priority, i))


def test_a_map_in_millimetres_keeps_the_grid_bounded_and_the_answers_right() -> None:
    for scale in (1.0, 1000.0, 1e6):
        zones = _zones(scale)
        index = ZoneIndex(zones)
        entries = sum(len(cell) for cell in index._grid.values())
        assert entries <= MAX_GRID_ENTRIES, (scale, entries)
        rng = random.Random(scale)
        for _ in range(300):
            x, y = rng.uniform(-2, 42) * scale, rng.uniform(-2, 32) * scale
            assert index.containing(x, y) == _naive(zones, x, y), (scale, x, y)


def test_one_huge_zone_among_small_ones_does_not_blow_up_the_grid() -> None:
    zones = _zones(1.0)
    huge = box(-1e7, -1e7, 1e7, 1e7)
    zones.append(Zone("site", "whole site", "outdoor", huge, None, None, priority=-1))
    index = ZoneIndex(zones)
    assert sum(len(cell) for cell in index._grid.values()) <= MAX_GRID_ENTRIES
    assert index.containing(5e6, 5e6) == [len(zones) - 1]
    assert index.containing(1.0, 1.0)[-1] == len(zones) - 1  # lowest priority last
