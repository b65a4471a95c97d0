"""Positioning accuracy on real labelled walks, through the same code as `gateway locate`.

For every method (`gateway locate --method`), without and with a site survey (`gateway
survey`, fitted in-process by the same code), prints the median and 90th-percentile position
error and the zone accuracy: how often the estimate falls in the right cell of a 3 × 3 grid
over the floor (cells of a few metres, about a shop's zone).

* Kolakowski flat (`../shared/data/kolakowski-flat`): survey = its calibration run (robot
  with LiDAR ground truth), test = its robot test run.
* Daniş hall (`../shared/data/danis-tetam`): the three camera-annotated walks,
  leave-one-walk-out — survey on two, test on the third, errors pooled.

    .venv/bin/python scripts/accuracy.py [--data ../shared/data] [--methods grid,max_likelihood]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.config.sections import METHOD_NAMES, Config
from gateway.ops.locate import LocateStats, locate, make_tracker
from gateway.presence.survey import Reading, Survey, fit_survey
from gateway.site.storemap import StoreMap, parse_map

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass
class Dataset:
    name: str
    receivers: dict[str, tuple[float, float]]
    floor: list[tuple[float, float]]
    # (survey walks, test walk) pairs; errors are pooled over the pairs
    folds: list[tuple[list[list[Reading]], list[Reading]]]


def make_map(
    receivers: dict[str, tuple[float, float]], floor: list[tuple[float, float]]
) -> StoreMap:
    ring = [list(p) for p in floor] + [list(floor[0])]
    features: list[dict[str, object]] = [
        {
            "type": "Feature",
            "properties": {"kind": "floor"},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }
    ]
    for rid, (x, y) in receivers.items():
        features.append(
            {
                "type": "Feature",
                "properties": {"kind": "gateway", "id": rid},
                "geometry": {"type": "Point", "coordinates": [x, y]},
            }
        )
    return parse_map(
        {"type": "FeatureCollection", "features": features}, "eval", require_zones=False
    )


def kolakowski(root: Path) -> Dataset:
    def rows(name: str) -> list[dict[str, str]]:
        with (root / name).open() as f:
            return list(csv.DictReader(f))

    receivers = {r["id"]: (float(r["x"]), float(r["y"])) for r in rows("anchors.csv")}
    floor = [(float(r["x"]), float(r["y"])) for r in rows("layout.csv")]

    def readings(name: str, walk: int) -> list[Reading]:
        out = []
        for r in rows(name):
            t = float(r["ts"]) / 1e9
            for rid in receivers:
                v = r.get(f"rssi_{rid}") or ""
                if v and not math.isnan(float(v)):
                    out.append(Reading(t, rid, "tag", float(v), float(r["x"]), float(r["y"]), walk))
        return out

    return Dataset(
        "kolakowski-flat (survey: calibration run; test: robot run)",
        receivers,
        floor,
        [([readings("calibration_df.csv", 0)], readings("test_robot_df.csv", 1))],
    )


def danis(root: Path) -> Dataset:
    dev = (root / "tetam.dev").read_text()
    dongles = json.loads(dev.split("Dongles:", 1)[1].splitlines()[0])
    receivers = {mac: (float(v[0][0]), float(v[0][1])) for mac, v in dongles.items()}
    limits = json.loads((root / "tetam.par").read_text())["limits"]
    x0, y0, x1, y1 = (float(v) for v in limits)
    floor = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    walks = []
    for index, path in enumerate(sorted(root.glob("*_all_sensors.mbd"))):
        walk = []
        for line in path.read_text().splitlines():
            f = line.split(",")
            if len(f) >= 6:
                walk.append(
                    Reading(float(f[0]), f[1], f[2], float(f[3]), float(f[4]), float(f[5]), index)
                )
        walks.append(walk)
    folds = [([w for j, w in enumerate(walks) if j != k], walks[k]) for k in range(len(walks))]
    return Dataset("danis-tetam hall (leave-one-walk-out over 3 walks)", receivers, floor, folds)


def sightings(readings: Iterable[Reading]) -> list[str]:
    return [
        json.dumps({"t": r.t, "receiver": r.receiver, "device": r.device, "rssi": r.rssi})
        for r in readings
    ]


def run(
    data: Dataset, store: StoreMap, method: str, surveys: list[Survey] | None
) -> tuple[list[float], list[bool], float]:
    b = store.bounds
    cells = 3

    def cell(x: float, y: float) -> tuple[int, int]:
        cx = min(cells - 1, max(0, int(cells * (x - b[0]) / (b[2] - b[0]))))
        cy = min(cells - 1, max(0, int(cells * (y - b[1]) / (b[3] - b[1]))))
        return cx, cy

    errors: list[float] = []
    zones: list[bool] = []
    spent = 0.0
    for k, (_, test) in enumerate(data.folds):
        survey = surveys[k] if surveys is not None else None
        tracker = make_tracker(Config(), store, method, survey)
        truth = {r.t: (r.x, r.y) for r in test}
        start = time.perf_counter()
        for est in locate(sightings(test), tracker, None, LocateStats(), []):
            gx, gy = truth[est["t"]]
            errors.append(math.hypot(est["x"] - gx, est["y"] - gy))
            zones.append(cell(est["x"], est["y"]) == cell(gx, gy))
        spent += time.perf_counter() - start
    return errors, zones, spent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--sets", default="danis,kolakowski")
    args = parser.parse_args()
    loaders = {"danis": (danis, "danis-tetam"), "kolakowski": (kolakowski, "kolakowski-flat")}
    for key in args.sets.split(","):
        load, folder = loaders[key]
        data = load(args.data / folder)
        store = make_map(data.receivers, data.floor)
        print(f"\n{data.name}")
        print(
            f"{'method':<18} {'survey':<7} {'median':>7} {'p90':>7} {'zone':>6} {'n':>6} "
            f"{'µs/reading':>10}"
        )
        surveys = []
        for k, (walks, _) in enumerate(data.folds):
            flat = [r for walk in walks for r in walk]
            surveys.append(fit_survey(flat, store.receivers, store.bounds))
            held = ", ".join(f"{m} {v:.1f} dB" for m, v in surveys[-1].held_out.items())
            print(
                f"survey {k + 1}: {surveys[-1].readings} readings; held-out RMS {held}; "
                f"kernel {surveys[-1].bandwidth:g} m"
            )
        for method in args.methods.split(","):
            for surveyed in (False, True):
                errors, zones, spent = run(data, store, method, surveys if surveyed else None)
                errors.sort()
                p90 = errors[int(0.9 * (len(errors) - 1))]
                print(
                    f"{method:<18} {'yes' if surveyed else 'no':<7} "
                    f"{statistics.median(errors):6.2f}m {p90:6.2f}m "
                    f"{100 * sum(zones) / len(zones):5.1f}% {len(errors):6d} "
                    f"{1e6 * spent / len(errors):10.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
