"""A busy store for benchmarks and load tests, from the simulator's physics.

A 120 × 72 m sales floor cut into 200 zones (a grid of shelving blocks and aisles, a few
promotion areas on top), 24 receivers on a 6 × 4 grid, 20 fixed beacons, and `devices`
shoppers walking between random shelves at walking pace with pauses, each phone advertising
an iBeacon frame at 2 Hz. Every advert is heard by each receiver whose signal clears the
sensitivity floor (shadowing, fading, body loss and drops as in `sim.Channel`).

`profiles(n)` writes a profile cache of `n` shoppers in the import format where the first
`devices` of them are the walkers (consenting, with a saved item in stock on some shelf).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.model import Advert
from gateway.sim.walkers import APP_UUID, Channel, Walker, ibeacon_ad, simulate

WIDTH, DEPTH = 120.0, 72.0
ANCHOR_UUID = "0b5e55ed-0000-4000-8000-00000000b055"
T0 = 1795424400.0


def _rect(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def store_map() -> dict[str, Any]:
    features: list[dict[str, Any]] = [
        {"type": "Feature", "properties": {"kind": "floor"}, "geometry": _rect(0, 0, WIDTH, DEPTH)}
    ]
    zone = 0
    # 20 × 9 grid of shelving zones (180), 6 × 3.5 m, aisles between them
    for col in range(20):
        for row in range(9):
            x, y = 0.5 + col * 6.0, 0.5 + row * 8.0
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "kind": "zone",
                        "id": f"shelf-{zone:03d}",
                        "category": "aisle",
                        "dwell_s": 20,
                    },
                    "geometry": _rect(x, y, x + 5.5, y + 3.5),
                }
            )
            zone += 1
    # 20 promotion areas over the aisles, higher priority
    for i in range(20):
        x, y = 3.0 + (i % 10) * 12.0, 4.5 + (i // 10) * 40.0
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "kind": "zone",
                    "id": f"promo-{i:02d}",
                    "category": "promotion",
                    "priority": 1,
                },
                "geometry": _rect(x, y, x + 4.0, y + 3.5),
            }
        )
    for i in range(24):
        gx, gy = 10.0 + (i % 6) * 20.0, 9.0 + (i // 6) * 18.0
        features.append(
            {
                "type": "Feature",
                "properties": {"kind": "gateway", "id": f"rx-{i:02d}"},
                "geometry": {"type": "Point", "coordinates": [gx, gy]},
            }
        )
    for i in range(20):
        bx, by = 6.0 + (i % 10) * 12.0, 20.0 + (i // 10) * 32.0
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "kind": "beacon",
                    "id": f"bcn-{i:02d}",
                    "ibeacon": f"{ANCHOR_UUID}:7:{i + 1}",
                    "profile": "generic-ibeacon",
                },
                "geometry": {"type": "Point", "coordinates": [bx, by]},
            }
        )
    return {"type": "FeatureCollection", "properties": {"name": "Busy store"}, "features": features}


def receivers() -> dict[str, tuple[float, float]]:
    out = {}
    for feature in store_map()["features"]:
        props = feature["properties"]
        if props["kind"] == "gateway":
            x, y = feature["geometry"]["coordinates"]
            out[props["id"]] = (float(x), float(y))
    return out


def adverts(devices: int, seconds: float, seed: int = 1) -> Iterator[Advert]:
    rng = random.Random(seed)
    walkers = []
    for d in range(devices):
        stops = [
            (rng.uniform(1, WIDTH - 1), rng.uniform(1, DEPTH - 1), rng.uniform(5, 40))
            for _ in range(6)
        ]
        walkers.append(
            Walker(
                f"4{d // 4096:01X}:{(d // 256) % 16:02X}:{d % 256:02X}:00:00:01",
                ibeacon_ad(APP_UUID, 200 + d // 65536, d % 65536, -59),
                T0 + rng.uniform(0, 5),
                stops,
                speed=rng.uniform(0.8, 1.3),
                rate_hz=2.0,
            )
        )
    for i in range(20):
        bx, by = 6.0 + (i % 10) * 12.0, 20.0 + (i // 10) * 32.0
        walkers.append(
            Walker(
                f"C0:FF:EE:00:01:{i:02X}",
                ibeacon_ad(ANCHOR_UUID, 7, i + 1, -59),
                T0,
                [(bx, by, 0), (bx, by, seconds + 10)],
                rate_hz=1.0,
            )
        )
    return simulate(walkers, receivers(), Channel(), rng, end=T0 + seconds)


def profiles(n: int, devices: int, seed: int = 2) -> Iterator[dict[str, Any]]:
    """`n` shopper profiles; the first `devices` are the walking phones of `adverts`."""
    rng = random.Random(seed)
    for i in range(n):
        walker = i < devices
        yield {
            "profile_id": f"p-{i:06d}",
            "consent": {"proximity_offers": rng.random() < 0.7, "at": "2026-10-01T10:00:00Z"},
            "language": rng.choice(["en", "de", "fr"]),
            "identifiers": [
                {"kind": "ibeacon", "value": f"{APP_UUID}:{200 + i // 65536}:{i % 65536}"}
            ]
            if walker
            else [{"kind": "nfc_uid", "value": f"04{i:012x}"}],
            "cart": [
                {
                    "sku": f"sku-{rng.randrange(500):04d}",
                    "title": f"Book {i}",
                    "price": 9.99,
                    "added_at": "2026-11-20T10:00:00Z",
                }
            ],
        }


def stock() -> list[dict[str, Any]]:
    return [
        {
            "sku": f"sku-{s:04d}",
            "title": f"Book {s}",
            "quantity": 3,
            "zone_id": f"shelf-{s % 180:03d}",
        }
        for s in range(500)
    ]


def write_profiles(path: str, n: int, devices: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for document in profiles(n, devices):
            out.write(json.dumps(document) + "\n")


def seed_state(folder: Path, n_profiles: int, devices: int) -> None:
    """The busy store in `folder`: its map (busy.geojson), `n_profiles` cached profiles (the
    first `devices` the walking phones' of `adverts`) and its stock in state/gateway.db."""
    from gateway.identity.bulk import import_profiles
    from gateway.store import db

    (folder / "busy.geojson").write_text(json.dumps(store_map()))
    profiles_file = folder / "profiles.jsonl"
    write_profiles(str(profiles_file), n_profiles, devices)
    conn = db.connect(folder / "state" / "gateway.db")
    import_profiles(conn, profiles_file)
    conn.executemany(
        "INSERT OR REPLACE INTO stock (sku, title, quantity, zone_id) VALUES (?,?,?,?)",
        [(s["sku"], s["title"], s["quantity"], s["zone_id"]) for s in stock()],
    )
    conn.close()
