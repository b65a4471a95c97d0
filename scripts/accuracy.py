"""Positioning accuracy on a labelled RSSI trace, through the same code as `gateway locate`.

Input: a CSV with per-receiver RSSI columns (`rssi_<receiver id>`, empty/NaN = not heard), a
timestamp column (`ts`, seconds or nanoseconds) and ground truth `x`, `y` in metres; and a
receivers CSV (`id,x,y[,z]`). Prints mean / median / p90 position error per method, with
nominal physics (profile defaults) and, when a calibration CSV of the same shape is given,
with a per-receiver path-loss fit (measured power at 1 m and exponent by least squares of
RSSI on log10 distance).

    .venv/bin/python scripts/accuracy.py --receivers anchors.csv --test test_robot_df.csv \
        [--calibration calibration_df.csv] [--floor layout.csv]

A walk without per-sample ground truth but with its known route (`--path`, a CSV of segments
`x0,y0,x1,y1`) is scored by each estimate's distance to the route: the cross-track error, a
lower bound of the true error (a fix on the route but at the wrong place along it scores 0).

    .venv/bin/python scripts/accuracy.py --receivers anchors.csv --test test_walk_df.csv \
        --path path_reference.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import statistics
import sys
from pathlib import Path

from shapely.geometry import MultiLineString, Point

from gateway.config.sections import Config
from gateway.ops.locate import LocateStats, locate, make_tracker
from gateway.site.storemap import parse_map

METHODS = ["max_likelihood", "least_squares", "weighted_centroid", "nearest"]


def read_receivers(path: Path) -> dict[str, tuple[float, float, float]]:
    with path.open() as f:
        return {
            r["id"]: (float(r["x"]), float(r["y"]), float(r.get("z") or 0))
            for r in csv.DictReader(f)
        }


def read_rows(path: Path) -> list[dict[str, float]]:
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                if k and v not in ("", None):
                    with contextlib.suppress(ValueError):
                        row[k] = float(v)
            rows.append(row)
    return rows


def seconds(ts: float) -> float:
    return ts / 1e9 if ts > 1e14 else ts


def fit_calibration(
    rows: list[dict[str, float]], receivers: dict[str, tuple[float, float, float]], tag_z: float
) -> dict[str, tuple[float, float]]:
    """Per receiver: RSSI = P1m - 10 n log10(d) by least squares on labelled samples."""
    out = {}
    for rid, (rx, ry, rz) in receivers.items():
        xs, ys = [], []
        for row in rows:
            rssi = row.get(f"rssi_{rid}")
            if rssi is None or math.isnan(rssi) or "x" not in row:
                continue
            d = math.sqrt((row["x"] - rx) ** 2 + (row["y"] - ry) ** 2 + (tag_z - rz) ** 2)
            xs.append(math.log10(max(d, 0.1)))
            ys.append(rssi)
        if len(xs) < 10:
            continue
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=False)) / sum(
            (a - mx) ** 2 for a in xs
        )
        n = min(6.0, max(1.0, -slope / 10))
        out[rid] = (my + 10 * n * mx, n)
    return out


def make_map(
    receivers: dict[str, tuple[float, float, float]],
    floor: list[tuple[float, float]] | None,
    calibration: dict[str, tuple[float, float]] | None,
) -> dict[str, object]:
    features: list[dict[str, object]] = []
    if floor:
        ring = [list(p) for p in floor] + [list(floor[0])]
        features.append(
            {
                "type": "Feature",
                "properties": {"kind": "floor"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    for rid, (x, y, _) in receivers.items():
        props: dict[str, object] = {"kind": "gateway", "id": rid}
        if calibration and rid in calibration:
            props["measured_power"], props["path_loss_exponent"] = calibration[rid]
        features.append(
            {
                "type": "Feature",
                "properties": props,
                "geometry": {"type": "Point", "coordinates": [x, y]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def sightings(
    rows: list[dict[str, float]], receivers: dict[str, tuple[float, float, float]]
) -> list[str]:
    lines = []
    for i, row in enumerate(rows):
        t = seconds(row["ts"]) if "ts" in row else float(i)
        for rid in receivers:
            rssi = row.get(f"rssi_{rid}")
            if rssi is not None and not math.isnan(rssi):
                lines.append(
                    json.dumps({"t": t, "receiver": rid, "device": "tag", "rssi": round(rssi, 2)})
                )
    return lines


def evaluate(
    rows: list[dict[str, float]],
    map_doc: dict[str, object],
    method: str,
    receivers: dict[str, tuple[float, float, float]],
    route: MultiLineString | None = None,
) -> list[float]:
    store = parse_map(map_doc, "eval", require_zones=False)
    tracker = make_tracker(Config(), store, method)
    truth = {seconds(r["ts"]): (r["x"], r["y"]) for r in rows if "ts" in r and "x" in r}
    errors: list[float] = []
    for est in locate(sightings(rows, receivers), tracker, None, LocateStats(), []):
        if route is not None:
            errors.append(route.distance(Point(est["x"], est["y"])))
            continue
        gt = truth.get(est["t"])
        if gt is not None:
            errors.append(math.hypot(est["x"] - gt[0], est["y"] - gt[1]))
    return errors


def read_route(path: Path) -> MultiLineString:
    segments = [((r["x0"], r["y0"]), (r["x1"], r["y1"])) for r in read_rows(path) if "x0" in r]
    return MultiLineString(segments)


def summary(errors: list[float]) -> str:
    errors = sorted(errors)
    return (
        f"mean {statistics.fmean(errors):.2f} m  median {statistics.median(errors):.2f} m  "
        f"p90 {errors[int(0.9 * (len(errors) - 1))]:.2f} m  (n={len(errors)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receivers", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--floor", type=Path)
    parser.add_argument("--tag-height", type=float, default=0.3)
    parser.add_argument("--path", type=Path, help="route segments x0,y0,x1,y1 (no per-row x,y)")
    args = parser.parse_args()
    route = read_route(args.path) if args.path else None
    if route is not None:
        print("scoring: distance of each estimate to the known route (cross-track error)")
    receivers = read_receivers(args.receivers)
    rows = read_rows(args.test)
    floor = None
    if args.floor:
        floor = [(r["x"], r["y"]) for r in read_rows(args.floor)]
    runs: list[tuple[str, dict[str, tuple[float, float]] | None]] = [("nominal", None)]
    if args.calibration:
        fit = fit_calibration(read_rows(args.calibration), receivers, args.tag_height)
        print(
            "calibration fit (P1m dBm, n):",
            {k: (round(p, 1), round(n, 2)) for k, (p, n) in fit.items()},
        )
        runs.append(("calibrated", fit))
    for label, calibration in runs:
        for method in METHODS:
            errors = evaluate(
                rows, make_map(receivers, floor, calibration), method, receivers, route
            )
            print(f"{label:<10} {method:<18} {summary(errors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
