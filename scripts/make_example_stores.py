"""Writes the example store maps in geofences/ (besides the demo bookstore).

    .venv/bin/python scripts/make_example_stores.py

* corner-bookshop: a small 14 × 9 m high-street bookshop with a stock room behind a wall,
  a window display zone on the pavement, two gateways (front and back).
* department-store: two floors of 48 × 32 m, 58 zones (departments, aisles, escalators,
  fitting rooms, a pickup counter, tills), eight gateways and walls per floor, fixed beacons.

The maps are data; this script only keeps them reproducible. Run `gateway fences check` on
the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UUID = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"


def rect(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
    }


def point(x: float, y: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [x, y]}


def line(*points: tuple[float, float]) -> dict[str, Any]:
    return {"type": "LineString", "coordinates": [list(p) for p in points]}


def feature(geometry: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def collection(name: str, features: list[dict[str, Any]], **props: Any) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "properties": {"name": name, "units": "m", **props},
        "features": features,
    }


def corner_bookshop() -> dict[str, Any]:
    f = [
        feature(rect(0, 0, 14, 9), kind="floor", name="Shop floor"),
        # The pavement in front of the window: a zone outside the floor, on purpose.
        feature(
            rect(0, -3, 8, 0),
            kind="zone",
            id="window",
            name="Window display",
            category="window",
            dwell_s=6,
            hysteresis_m=0.5,
        ),
        feature(
            rect(8.5, 0, 11.5, 2.5),
            kind="zone",
            id="entrance",
            name="Entrance",
            category="entrance",
        ),
        feature(
            rect(1, 1, 5, 3.5),
            kind="zone",
            id="new-releases",
            name="New releases table",
            category="aisle",
            dwell_s=20,
        ),
        feature(
            rect(0, 4.5, 1.2, 9), kind="zone", id="fiction", name="Fiction wall", category="aisle"
        ),
        feature(
            rect(2.5, 4.5, 6.5, 7.5),
            kind="zone",
            id="non-fiction",
            name="Non-fiction",
            category="aisle",
        ),
        feature(
            rect(7, 4.5, 10, 7.5),
            kind="zone",
            id="kids",
            name="Children's corner",
            category="aisle",
        ),
        feature(
            rect(11, 3, 14, 6),
            kind="zone",
            id="till",
            name="Till and pickup",
            category="pickup_counter",
            dwell_s=10,
        ),
        # The stock room behind a partition wall (staff only, no zone).
        feature(line((10.5, 6.5), (14, 6.5)), kind="wall", attenuation_db=6),
        feature(line((10.5, 6.5), (10.5, 9)), kind="wall", attenuation_db=6),
        feature(point(10, 0.3), kind="gateway", id="gw-front"),
        feature(point(13.6, 5.8), kind="gateway", id="gw-till"),
        feature(point(0.3, 8.7), kind="gateway", id="gw-back"),
        feature(
            point(3, 0.2),
            kind="beacon",
            id="bcn-window",
            ibeacon=f"{UUID}:10:1",
            profile="generic-ibeacon",
            height_m=1.8,
        ),
        feature(
            point(0.3, 6.5),
            kind="beacon",
            id="bcn-fiction",
            ibeacon=f"{UUID}:10:2",
            profile="generic-ibeacon",
            height_m=2.0,
        ),
        feature(
            point(12.5, 3.2),
            kind="beacon",
            id="bcn-till",
            eddystone_uid="a1b2c3d4e5f6a7b8c9d0:000000000a03",
            profile="generic-eddystone",
            height_m=1.2,
        ),
    ]
    return collection(
        "Corner bookshop",
        f,
        origin="south-west corner, street side",
        wgs84_origin=[13.40495, 52.52001],
        bearing_deg=20.0,
    )


DEPARTMENTS = [
    # (id, name, category) per floor, laid out on a grid of 4 columns x 3 rows of blocks,
    # each block split into three aisles.
    [
        "womens",
        "mens",
        "shoes",
        "accessories",
        "beauty",
        "fragrance",
        "watches",
        "bags",
        "sunglasses",
        "jewellery",
        "hosiery",
        "lingerie",
    ],
    [
        "home",
        "kitchen",
        "bedding",
        "lighting",
        "toys",
        "books",
        "stationery",
        "electronics",
        "audio",
        "gaming",
        "sports",
        "outdoor",
    ],
]


def department_store() -> dict[str, Any]:
    width, depth = 48.0, 32.0
    f: list[dict[str, Any]] = []
    beacon = 0
    for level in (0, 1):
        f.append(
            feature(rect(0, 0, width, depth), kind="floor", name=f"Level {level}", level=level)
        )
        # Central aisle (walkway) as a low-priority zone under everything on it.
        f.append(
            feature(
                rect(0, 14, width, 18),
                kind="zone",
                id=f"L{level}-walkway",
                name="Main walkway",
                category="aisle",
                level=level,
                priority=0,
            )
        )
        # Escalators in the middle of the walkway: higher priority than the walkway.
        f.append(
            feature(
                rect(22, 14.5, 26, 17.5),
                kind="zone",
                id=f"L{level}-escalators",
                name="Escalators",
                category="transit",
                level=level,
                priority=1,
            )
        )
        blocks_x = [(1, 11), (13, 23), (25, 35), (37, 47)]
        blocks_y = [(4, 13), (19, 31)]
        names = iter(DEPARTMENTS[level])
        for bx0, bx1 in blocks_x:
            for by0, by1 in blocks_y:
                name = next(names, None)
                if name is None:
                    break
                # Each department: three aisles side by side, 0.5 m gondolas between them.
                third = (bx1 - bx0) / 3
                aisles = [
                    (
                        side,
                        (
                            bx0 + i * third + (0.25 if i else 0),
                            bx0 + (i + 1) * third - (0.25 if i < 2 else 0),
                        ),
                    )
                    for i, side in enumerate("abc")
                ]
                for side, (x0, x1) in aisles:
                    f.append(
                        feature(
                            rect(x0, by0, x1, by1),
                            kind="zone",
                            id=f"L{level}-{name}-{side}",
                            name=f"{name.title()} {side.upper()}",
                            category="aisle",
                            level=level,
                            dwell_s=25,
                        )
                    )
        # Walls: the back-of-house corridor on each floor.
        f.append(feature(line((0, 31.5), (20, 31.5)), kind="wall", attenuation_db=8, level=level))
        for i, (gx, gy) in enumerate(
            [
                (0.5, 0.5),
                (24, 0.5),
                (47.5, 0.5),
                (0.5, 31.5),
                (24, 31.5),
                (47.5, 31.5),
                (0.5, 16),
                (47.5, 16),
            ]
        ):
            f.append(feature(point(gx, gy), kind="gateway", id=f"gw-L{level}-{i + 1}", level=level))
        for bx, by in [(6, 16), (18, 16), (30, 16), (42, 16)]:
            beacon += 1
            f.append(
                feature(
                    point(bx, by),
                    kind="beacon",
                    id=f"bcn-{beacon:02d}",
                    ibeacon=f"{UUID}:20:{beacon}",
                    profile="generic-ibeacon",
                    height_m=3.0,
                    level=level,
                )
            )
    # Ground floor specials.
    f += [
        feature(
            rect(20, -2, 28, 0),
            kind="zone",
            id="L0-window",
            name="Window displays",
            category="window",
            dwell_s=6,
        ),
        feature(
            rect(21, 0, 27, 3),
            kind="zone",
            id="L0-entrance",
            name="Main entrance",
            category="entrance",
            priority=2,
        ),
        feature(
            rect(40, 14, 48, 18),
            kind="zone",
            id="L0-pickup",
            name="Click & collect",
            category="pickup_counter",
            priority=2,
            dwell_s=10,
        ),
        feature(
            rect(0, 14, 6, 18),
            kind="zone",
            id="L0-tills",
            name="Tills",
            category="checkout",
            priority=2,
        ),
        feature(
            rect(40, 14, 48, 18),
            kind="zone",
            id="L1-fitting",
            name="Fitting rooms",
            category="fitting_rooms",
            level=1,
            priority=2,
        ),
        feature(
            rect(0, 14, 6, 18),
            kind="zone",
            id="L1-cafe",
            name="Café",
            category="cafe",
            level=1,
            priority=2,
        ),
    ]
    return collection(
        "Department store",
        f,
        origin="south-west corner of the building",
        levels="0 ground floor, 1 first floor",
    )


def main() -> None:
    for name, data in (
        ("corner-bookshop", corner_bookshop()),
        ("department-store", department_store()),
    ):
        path = ROOT / "geofences" / f"{name}.geojson"
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        zones = sum(1 for x in data["features"] if x["properties"]["kind"] == "zone")
        print(f"wrote {path.relative_to(ROOT)}: {zones} zones")


if __name__ == "__main__":
    main()
