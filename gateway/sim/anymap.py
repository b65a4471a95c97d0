"""Shoppers walking through *your* store map (`gateway sim --map FILE`).

The same physics as the demo (`walkers.simulate`: path loss, shadowing, fading, body loss,
drops, the map's walls and storeys), on any map: each shopper enters at an entrance zone (a
zone whose category is `entrance`, else the first zone of the level), visits a few zones of
one level in a seeded random order, lingers in each a little longer than its dwell time so
dwell events fire, walks back to the entrance and out. Paths are straight lines between zone
centres (they cross shelves; walls only attenuate).

Shopper i (1, 2, …) advertises the store app's iBeacon `APP_UUID:100:i`: the demo's profiles
are 100:1 (Alice, consenting) and 100:2 (Bob, not), so after `gateway profiles import
demo-profiles.json` and stock placed in your zones the offers fire on your map too. The map's
fixed iBeacon anchors advertise from where they stand.
"""

from __future__ import annotations

import math
import random

from gateway.model import Advert
from gateway.sim.walkers import APP_UUID, DEMO_T0, Channel, Walker, ibeacon_ad, simulate
from gateway.site.storemap import StoreMap, Zone
from gateway.trace import advert_line

DEFAULT_DWELL_S = 20.0  # [zones] dwell_s, the default for a zone that sets none


def _centre(zone: Zone) -> tuple[float, float]:
    point = zone.shape.representative_point()
    return round(point.x, 2), round(point.y, 2)


def _way_out(store: StoreMap, door: tuple[float, float], level: int) -> tuple[float, float]:
    """A point 12 m beyond the door, away from the middle of the level's floor."""
    floor = store.floors.get(level)
    if floor is not None:
        mid = floor.centroid
        cx, cy = mid.x, mid.y
    else:
        minx, miny, maxx, maxy = store.bounds
        cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    dx, dy = door[0] - cx, door[1] - cy
    length = math.hypot(dx, dy) or 1.0
    return round(door[0] + 12 * dx / length, 2), round(door[1] + 12 * dy / length, 2)


def shopper_walks(
    store: StoreMap, shoppers: int, rng: random.Random, t0: float
) -> tuple[list[Walker], float]:
    """The shoppers' walkers and when the last one has left."""
    levels = sorted({zone.level for zone in store.zones})
    walkers: list[Walker] = []
    end = t0
    for i in range(1, shoppers + 1):
        level = levels[(i - 1) % len(levels)]
        zones = [z for z in store.zones if z.level == level]
        doors = [z for z in zones if z.category == "entrance"] or zones[:1]
        door = _centre(rng.choice(doors))
        outside = _way_out(store, door, level)
        others = [z for z in zones if _centre(z) != door] or zones
        visits = rng.sample(others, min(len(others), rng.randint(2, 4)))
        waypoints = [(outside[0], outside[1], 0.0), (door[0], door[1], 2.0)]
        for zone in visits:
            x, y = _centre(zone)
            stay = (zone.dwell_s if zone.dwell_s is not None else DEFAULT_DWELL_S) + 8.0
            waypoints.append((x, y, stay + rng.uniform(0, 10)))
        waypoints += [(door[0], door[1], 0.0), (outside[0], outside[1], 0.0)]
        start = t0 + 5 + 15 * (i - 1)
        address = ":".join(
            f"{b:02X}" for b in [0x40 | (rng.randrange(256) & 0x3F), *rng.randbytes(5)]
        )
        walker = Walker(
            address,
            ibeacon_ad(APP_UUID, 100, i, -59),
            start,
            waypoints,
            speed=rng.uniform(0.8, 1.2),
            level=level,
        )
        walkers.append(walker)
        end = max(end, walker.end)
    return walkers, end


def map_scenario(store: StoreMap, seed: int, shoppers: int = 3) -> list[str]:
    """Trace lines (adverts only) of `shoppers` walking through `store`, in time order."""
    if not store.zones:
        raise ValueError("the map has no zones to walk through")
    rng = random.Random(seed)
    t0 = DEMO_T0
    walkers, end = shopper_walks(store, shoppers, rng, t0)
    for n, anchor in enumerate(store.anchors):
        kind, _, identity = anchor.identity.partition(":")
        if kind != "ibeacon":
            continue  # only iBeacon anchors are simulated
        uuid, major, minor = identity.split(":")
        walkers.append(
            Walker(
                f"C0:FF:EE:{n >> 16 & 0xFF:02X}:{n >> 8 & 0xFF:02X}:{n & 0xFF:02X}",
                ibeacon_ad(uuid, int(major), int(minor), -59),
                t0,
                [(anchor.x, anchor.y, 0), (anchor.x, anchor.y, end - t0)],
                rate_hz=0.5,
                level=anchor.level,
            )
        )
    adverts: list[Advert] = list(
        simulate(
            walkers,
            store.receivers,
            Channel(),
            rng,
            end=end,
            walls=store.walls,
            receiver_levels=store.receiver_levels,
        )
    )
    return [advert_line(a) for a in adverts]
