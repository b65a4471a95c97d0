"""`gateway locate`: the stable interface accuracy checks use."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, shared_data

DEMO_MAP = REPO / "geofences" / "demo-bookstore.geojson"


def _run(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "locate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sightings(
    x: float,
    y: float,
    t0: float,
    steps: int,
    receivers: dict[str, tuple[float, float]],
    power: float = -59.0,
    n: float = 2.5,
) -> list[str]:
    lines = []
    for k in range(steps):
        for rid, (rx, ry) in receivers.items():
            d = max(math.hypot(x - rx, y - ry), 0.1)
            rssi = power - 10 * n * math.log10(d)
            lines.append(
                json.dumps(
                    {"t": t0 + k * 0.5, "receiver": rid, "device": "tag-1", "rssi": round(rssi, 2)}
                )
            )
    return lines


def test_estimates_one_line_per_device_per_instant_with_zones() -> None:
    receivers = {
        "gw-entrance": (10, 0.3),
        "gw-sw": (0.5, 0.5),
        "gw-nw": (0.5, 11.5),
        "gw-ne": (19.5, 11.5),
        "gw-counter": (19.5, 0.5),
    }
    result = _run(
        "\n".join(_sightings(9.5, 8.5, 1000.0, 6, receivers)) + "\n", "--map", str(DEMO_MAP)
    )
    assert result.returncode == 0, result.stderr
    estimates = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(estimates) == 6  # one per instant, not one per receiver line
    last = estimates[-1]
    assert set(last) == {"t", "device", "x", "y", "uncertainty_m", "zones", "method"}
    assert last["device"] == "tag-1" and last["method"] == "max_likelihood" and last["t"] == 1002.5
    assert math.hypot(last["x"] - 9.5, last["y"] - 8.5) < 0.3
    assert last["zones"] == ["aisle-scifi"]


def test_receiver_calibration_from_the_map(tmp_path: Path) -> None:
    receivers = {"a": (0.0, 0.0), "b": (8.0, 0.0), "c": (0.0, 6.0), "d": (8.0, 6.0)}
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": list(pos)},
                "properties": {
                    "kind": "gateway",
                    "id": rid,
                    "measured_power": -40,
                    "path_loss_exponent": 3.0,
                },
            }
            for rid, pos in receivers.items()
        ],
    }
    path = tmp_path / "flat.geojson"
    path.write_text(json.dumps(doc))
    lines = _sightings(2.0, 4.0, 0.0, 4, receivers, power=-40.0, n=3.0)
    estimates = [
        json.loads(x) for x in _run("\n".join(lines) + "\n", "--map", str(path)).stdout.splitlines()
    ]
    assert math.hypot(estimates[-1]["x"] - 2.0, estimates[-1]["y"] - 4.0) < 0.3
    assert estimates[-1]["zones"] == []  # a map without zones is fine for locate


def test_bad_lines_are_reported_and_skipped() -> None:
    good = json.dumps({"t": 5.0, "receiver": "gw-sw", "device": "d", "rssi": -60})
    lines = [
        "{not json",
        json.dumps({"t": 1, "receiver": "gw-sw", "device": "d", "rssi": 12}),
        json.dumps({"t": 2, "receiver": "nowhere", "device": "d", "rssi": -60}),
        json.dumps({"t": float("nan"), "receiver": "gw-sw", "device": "d", "rssi": -60}).replace(
            "NaN", "null"
        ),
        good,
    ]
    result = _run("\n".join(lines) + "\n", "--map", str(DEMO_MAP))
    assert result.returncode == 2  # the good lines are located, the exit code says not all were
    assert [json.loads(x)["t"] for x in result.stdout.splitlines()] == [5.0]
    for needle in (
        "line 1: not JSON",
        "line 2: rejected (rssi_out_of_range)",
        "line 3: rejected (unknown_receiver)",
        "line 4: t: expected",
    ):
        assert needle in result.stderr


def _accuracy(*args: str) -> str:
    """scripts/accuracy.py over the shared real sets; its stdout."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "accuracy.py"),
            "--data",
            str(shared_data("kolakowski-flat/anchors.csv").parent.parent),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return result.stdout


def test_real_flat_with_survey() -> None:
    """Kolakowski flat (6 receivers, robot ground truth), its calibration run as the survey:
    the evaluator runs the locate code for each method, without and with the survey."""
    stdout = _accuracy("--sets", "kolakowski", "--methods", "max_likelihood,nearest,grid")
    medians = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("max_likelihood", "nearest", "grid"):
            medians[(parts[0], parts[1])] = float(parts[2].rstrip("m"))
            assert parts[5] == "719"  # one estimate per instant of the robot run
    assert len(medians) == 6
    # A flat of 9 × 7 m: the surveyed grid filter beats "nearest receiver" and the
    # un-surveyed fit.
    assert medians[("grid", "yes")] < medians[("nearest", "yes")]
    assert medians[("grid", "yes")] < medians[("max_likelihood", "no")]
