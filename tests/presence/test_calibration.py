"""`gateway calibrate`: a simulated beacon 1 m from a receiver whose antenna is 4 dB hot."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import tomllib
from pathlib import Path

from gateway.config.sections import parse_config
from gateway.pipeline.tracking import tracker_for
from gateway.presence.calibration import Calibrator
from gateway.sim.walkers import ANCHOR_UUID, Channel, Walker, ibeacon_ad, simulate
from gateway.site.hardware import load_beacon_profile
from gateway.site.storemap import load_map
from gateway.store.calibration import receiver_offsets
from gateway.trace import advert_line
from tests.conftest import REPO

MAP = REPO / "geofences" / "demo-bookstore.geojson"


def _trace(tmp_path: Path, distance: float, gain_db: float, seconds: float = 40.0) -> Path:
    store = load_map(MAP)
    rx, ry = store.receivers["gw-counter"]
    # bcn-counter's identity (major 1, minor 5), held `distance` m west of gw-counter
    walker = Walker(
        "C0:FF:EE:00:00:05",
        ibeacon_ad(ANCHOR_UUID, 1, 5, -59),
        0.0,
        [(rx - distance, ry, seconds)],
        rate_hz=2.0,
    )
    channel = Channel(measured_power=-59.0 + gain_db, exponent=2.2, shadowing_db=1.5)
    adverts = simulate(
        [walker],
        {"gw-counter": (rx, ry), "gw-nw": store.receivers["gw-nw"]},
        channel,
        random.Random(4),
    )
    path = tmp_path / "calibration-trace.jsonl"
    path.write_text("".join(advert_line(a) + "\n" for a in adverts))
    return path


def _calibrate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "calibrate", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_calibration_finds_the_receiver_gain_and_presence_uses_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n")
    trace = _trace(tmp_path, distance=2.0, gain_db=4.0)
    done = _calibrate(config, "--beacon", "bcn-counter", "--distance", "2.0", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert "gw-counter:" in done.stdout and "saved to" in done.stdout
    saved = tomllib.loads((tmp_path / "state" / "calibration.toml").read_text())
    offset = saved["receivers"]["gw-counter"]["offset_db"]
    assert abs(offset - 4.0) < 1.5  # the receiver's hidden gain, found back
    beacon = saved["beacons"]["bcn-counter"]
    assert beacon["nominal"] is False and beacon["samples"] >= 50
    assert beacon["distance_m"] == 2.0 and abs(beacon["measured_power_dbm"] + 55.0) < 1.5
    # the presence stage now ranges everything at gw-counter with that gain
    loaded = parse_config((config).read_text(), str(config), tmp_path)
    tracker = tracker_for(loaded, load_map(MAP), load_beacon_profile("phone-app-ibeacon"))
    assert (
        tracker.receiver_offsets == receiver_offsets(tmp_path / "state") == {"gw-counter": offset}
    )
    tracker.observe("phone", "gw-counter", 1.0, -65, -59)
    (rng,) = tracker.ranges("phone", 1.0)
    assert math.isclose(rng.distance, 10 ** ((-59 + offset + 65) / (10 * 2.5)), rel_tol=0.15)


def test_bad_measurements_are_not_saved(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n")
    # staff typed 10 m but held it at 1 m: a 22 dB "gain" is refused
    trace = _trace(tmp_path, distance=1.0, gain_db=0.0)
    done = _calibrate(config, "--beacon", "bcn-counter", "--distance", "10", "--trace", str(trace))
    assert done.returncode == 1 and "implausible" in done.stderr
    assert not (tmp_path / "state" / "calibration.toml").exists()
    unknown = _calibrate(config, "--beacon", "bcn-nope", "--trace", str(trace))
    assert unknown.returncode == 2 and "bcn-counter" in unknown.stderr
    unheard = _calibrate(config, "--beacon", "bcn-kids", "--trace", str(trace))
    assert unheard.returncode == 1 and "not heard" in unheard.stderr


def test_calibrator_statistics() -> None:
    calibrator = Calibrator("b", 1.0, -59.0, 2.0)
    for rssi in [-60, -61, -59, -60, -62, -60, -58, -60, -61, -59, -90]:
        calibrator.add("gw", rssi)
    result = calibrator.result()
    assert result is not None and result.median_dbm == -60.0 and result.offset_db == -1.0
    assert result.spread_db <= 2.0  # one body-blocked reading does not move the median
    assert result.problems() == []
