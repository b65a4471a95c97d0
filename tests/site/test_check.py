"""`gateway fences check` / `render`, multi-storey maps and walls."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config.sections import Config
from gateway.ops.tracks import trace_tracks
from gateway.pipeline.tracking import tracker_for
from gateway.sim.walkers import Channel, Walker, ibeacon_ad, simulate
from gateway.site.check import check_data
from gateway.site.hardware import load_beacon_profile
from gateway.site.render import plan_scene, to_svg, write_png
from gateway.site.storemap import load_map
from gateway.zones.index import ZoneIndex
from gateway.zones.tracker import ZoneTracker
from tests.conftest import REPO

MAPS = sorted((REPO / "geofences").glob("*.geojson"))


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120
    )


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "geofences" / name).read_text())
    return data


def _feature(data: dict[str, Any], fid: str) -> dict[str, Any]:
    return next(f for f in data["features"] if f["properties"].get("id") == fid)


def test_every_shipped_map_passes_the_check() -> None:
    assert len(MAPS) >= 3
    done = _gateway("fences", "check", *map(str, MAPS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": ok: ") == len(MAPS)
    big = load_map(REPO / "geofences" / "department-store.geojson")
    assert len(big.zones) >= 50 and big.levels == [0, 1]


def test_check_reports_every_problem_with_its_feature_and_exits_2(tmp_path: Path) -> None:
    data = _load("demo-bookstore.geojson")
    # five independent mistakes in one map
    _feature(data, "aisle-kids")["geometry"]["coordinates"] = [
        [[14, 4], [19, 9], [19, 4], [14, 9], [14, 4]]
    ]
    _feature(data, "bcn-fiction")["geometry"]["coordinates"] = [-4.0, 6.0]
    _feature(data, "bcn-scifi")["properties"]["profile"] = "no-such-beacon"
    _feature(data, "aisle-fiction")["geometry"]["coordinates"] = [
        [[1, 4], [8, 4], [8, 11], [1, 11], [1, 4]]
    ]  # now overlaps aisle-scifi (x 7.5..), both priority 0
    _feature(data, "entrance")["properties"]["kind"] = "zoen"
    path = tmp_path / "broken.geojson"
    path.write_text(json.dumps(data))
    done = _gateway("fences", "check", str(path))
    assert done.returncode == 2
    out = done.stdout
    for fid, words in [
        ("aisle-kids", "Self-intersection"),
        ("bcn-fiction", "outside the level 0 floor"),
        ("bcn-scifi", "no-such-beacon"),
        ("aisle-fiction", "overlaps zone 'aisle-scifi'"),
        ("entrance", "unknown kind 'zoen'"),
    ]:
        line = next((x for x in out.splitlines() if f"'{fid}'" in x and words in x), None)
        assert line is not None, f"{fid}: {words!r} not reported in:\n{out}"
        assert line.startswith(f"{path}: error: ")
    assert "5 errors" in done.stderr


def test_overlap_with_priorities_is_fine_and_touching_edges_are_not_overlaps() -> None:
    data = _load("demo-bookstore.geojson")
    _feature(data, "aisle-fiction")["geometry"]["coordinates"] = [
        [[1, 4], [8, 4], [8, 11], [1, 11], [1, 4]]
    ]
    _feature(data, "aisle-fiction")["properties"]["priority"] = 1
    _, findings = check_data(data, "m.geojson")
    assert [f for f in findings if f.severity == "error"] == []
    touching = _load("demo-bookstore.geojson")
    scifi = _feature(touching, "aisle-scifi")["geometry"]["coordinates"][0]
    min_x = min(p[0] for p in scifi)
    _feature(touching, "aisle-fiction")["geometry"]["coordinates"] = [
        [[1, 4], [min_x, 4], [min_x, 11], [1, 11], [1, 4]]
    ]
    _, findings = check_data(touching, "m.geojson")
    assert not any("overlaps" in f.problem for f in findings)


def test_level_with_zones_but_no_gateway_is_an_error() -> None:
    data = _load("demo-bookstore.geojson")
    _feature(data, "pickup-counter")["properties"]["level"] = 1
    _, findings = check_data(data, "m.geojson")
    assert any(f.where == "level 1" and "no gateway" in f.problem for f in findings)


def test_render_svg_and_png_with_tracks(tmp_path: Path) -> None:
    store = load_map(REPO / "geofences" / "demo-bookstore.geojson")
    tracks = trace_tracks(Config(), store, REPO / "gateway" / "data" / "demo-trace.jsonl")
    # the demo trace has three shoppers; fixed beacons are not tracks
    assert sorted(tracks) == ["device 1", "device 2", "device 3"]
    assert all(len(track) > 50 for track in tracks.values())
    scene = plan_scene(store, tracks)
    svg = ET.fromstring(to_svg(scene))
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    # a zone name may be printed on two lines where its zone is narrow (site.labels)
    words = {w for t in texts if t for w in t.split()}
    assert all(set(z.name.split()) <= words for z in store.zones)
    assert {a.id for a in store.anchors} <= texts and set(store.receivers) <= texts
    assert "device 1" in texts
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) >= 3
    png = tmp_path / "plan.png"
    write_png(scene, png)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (scene.width, scene.height)


def test_render_command_draws_each_level(tmp_path: Path) -> None:
    out = tmp_path / "store.svg"
    done = _gateway(
        "fences", "render", str(REPO / "geofences" / "department-store.geojson"), "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "level 0" in text and "level 1" in text and "Click &amp; collect" in text
    bad = _gateway(
        "fences",
        "render",
        str(REPO / "geofences" / "corner-bookshop.geojson"),
        "-o",
        str(tmp_path / "x.gif"),
    )
    assert bad.returncode == 2 and ".svg or .png" in bad.stderr


def test_a_shopper_upstairs_is_placed_on_level_1_and_only_enters_its_zones() -> None:
    store = load_map(REPO / "geofences" / "department-store.geojson")
    tracker = tracker_for(Config(), store, load_beacon_profile("phone-app-ibeacon"))
    zones = ZoneTracker(store.zones, hysteresis_m=1.0, dwell_s=30, min_inside_s=2.0)
    # Stands in the level-1 café, then walks to the books aisles; the same spot on level 0
    # holds the tills, which must never be entered.
    walker = Walker(
        "AA:00:00:00:00:01",
        ibeacon_ad("5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b", 1, 1, -59),
        0.0,
        [(3.0, 16.0, 30.0), (30.0, 24.0, 30.0)],
        level=1,
    )
    entered: set[str] = set()
    levels: list[int] = []
    adverts = simulate(
        [walker],
        store.receivers,
        Channel(),
        random.Random(5),
        walls=store.walls,
        receiver_levels=store.receiver_levels,
    )
    for advert in adverts:
        position = tracker.observe("phone", advert.receiver, advert.t, advert.rssi, -59)
        if position is None:
            continue
        levels.append(position.level)
        entered |= {e.zone for e in zones.update(position) if e.kind == "enter"}
    assert levels.count(1) / len(levels) > 0.97
    assert entered and all(z.startswith("L1-") for z in entered), entered
    assert "L1-walkway" in entered  # the café sits on the walkway


def test_walls_attenuate_in_the_simulator() -> None:
    store = load_map(REPO / "geofences" / "corner-bookshop.geojson")
    wall = store.walls[0]  # y = 6.5 from x 10.5 to 14, 6 dB
    assert wall.loss_db((12, 5), (12, 8)) == 6.0
    assert wall.loss_db((12, 5), (13, 6)) == 0.0
    walker = Walker("AA:00:00:00:00:02", b"", 0.0, [(12.0, 8.0, 60.0)])
    quiet = Channel(shadowing_db=0.0, fading_db=0.0, body_loss_p=0.0, drop_p=0.0)
    receivers = {"gw-till": store.receivers["gw-till"]}
    with_walls = [
        a.rssi for a in simulate([walker], receivers, quiet, random.Random(1), walls=store.walls)
    ]
    without = [a.rssi for a in simulate([walker], receivers, quiet, random.Random(1))]
    assert with_walls and len(with_walls) == len(without)
    # gw-till at (13.6, 5.8) hears the stock room through one 6 dB wall
    assert all(w == n - 6 for w, n in zip(with_walls, without, strict=True))


def test_a_map_broken_beyond_its_features_is_still_checked_not_crashed() -> None:
    empty = {"type": "FeatureCollection", "features": [{"type": "Feature"}, {"kind": "zone"}]}
    store, findings = check_data(empty, "m.geojson")
    assert store is not None and store.zones == []
    problems = [f.problem for f in findings]
    assert any("not a GeoJSON Feature" in p for p in problems)
    assert any("no zone features" in p for p in problems)
    assert any("no gateway" in p for p in problems)


def test_the_busy_benchmark_store_is_a_valid_map() -> None:
    from gateway.sim import busystore

    store, findings = check_data(busystore.store_map(), "busy.geojson")
    assert store is not None and [f for f in findings if f.severity == "error"] == []
    assert (len(store.zones), len(store.receivers), len(store.anchors)) == (200, 24, 20)
    adverts = list(busystore.adverts(devices=5, seconds=5.0))
    assert {a.receiver for a in adverts} <= set(store.receivers)
    # 5 phones at 2 Hz and 20 beacons at 1 Hz for 5 s, each heard by several receivers
    assert 200 < len(adverts) < 5 * 2 * 5 * 24 + 20 * 5 * 24
    profiles = list(busystore.profiles(10, 5))
    assert len(profiles) == 10 and profiles[0]["identifiers"][0]["kind"] == "ibeacon"


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    return value * factor if isinstance(value, (int, float)) else value


def test_a_map_in_other_units_is_flagged_and_still_loads_fast() -> None:
    for factor, hint, severity in (
        (1000.0, "millimetres", "warning"),
        (100.0, "millimetres", "warning"),  # centimetres: the same warning names the cause
        (1e-5, "longitude/latitude", "error"),  # or kilometres: refused (§24)
    ):
        data = _load("demo-bookstore.geojson")
        for feature in data["features"]:
            geometry = feature["geometry"]
            geometry["coordinates"] = _scaled(geometry["coordinates"], factor)
        store, findings = check_data(data, "scaled.geojson")
        assert store is not None
        flagged = [f.line("scaled.geojson") for f in findings if f.severity == severity]
        assert any(hint in line for line in flagged), flagged
        assert len([f for f in findings if f.severity == "error"]) == (severity == "error")
        ZoneIndex(store.zones)  # builds within its grid budget
    _store, plain = check_data(_load("demo-bookstore.geojson"), "demo.geojson")
    assert not [f for f in plain if "rescale" in f.problem]


def _first(data: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(f for f in data["features"] if f["properties"].get("kind") == kind)


@pytest.mark.parametrize(
    ("breaks", "words"),
    [
        (lambda d: d.__setitem__("properties", "shop"), "expected an object"),
        (lambda d: _first(d, "beacon")["geometry"].__setitem__("coordinates", []), "empty Point"),
        (lambda d: _first(d, "beacon")["properties"].__setitem__("profile", "p" * 300), "name"),
        (
            lambda d: _first(d, "beacon")["properties"].__setitem__("profile", "../../etc/passwd"),
            "not a profile name",
        ),
        (
            lambda d: _first(d, "zone")["geometry"].__setitem__(
                "coordinates", [[[0, 0], [1e300, 1], [1, 1], [0, 0]]]
            ),
            "within 1000 km",
        ),
    ],
)
def test_hostile_maps_are_refused_with_a_reason_not_a_traceback(
    breaks: Callable[[dict[str, Any]], None], words: str
) -> None:
    data = _load("demo-bookstore.geojson")
    breaks(data)
    _store, findings = check_data(data, "hostile.geojson")
    errors = [f.line("hostile.geojson") for f in findings if f.severity == "error"]
    assert any(words in line for line in errors), errors


def test_a_level_with_fewer_than_three_receivers_is_flagged() -> None:
    data = _load("demo-bookstore.geojson")
    gateways = [f for f in data["features"] if f["properties"].get("kind") == "gateway"]
    data["features"] = [f for f in data["features"] if f not in gateways[2:]]
    _store, findings = check_data(data, "two.geojson")
    lines = [f.line("two.geojson") for f in findings if f.severity == "warning"]
    assert any("has 2 gateway (receiver) feature(s)" in line for line in lines), lines
    _store, plain = check_data(_load("demo-bookstore.geojson"), "demo.geojson")
    assert not [f for f in plain if "receiver) feature(s)" in f.problem]
