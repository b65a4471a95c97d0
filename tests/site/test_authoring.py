"""Maps authored by hand or in geojson.io: longitude/latitude refused with the fix, unknown
zone categories refused, unknown properties flagged; docs/maps.md names every property the
loader reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.site.check import check_data
from gateway.site.storemap import (
    FEATURE_PROPERTIES,
    MAP_PROPERTIES,
    ZONE_CATEGORIES,
    MapError,
    parse_map,
)
from tests.conftest import REPO

LON, LAT = 13.40495, 52.52001  # a corner of a shop in Berlin


def _shop(point: Any) -> dict[str, Any]:
    """A 20 × 12 m shop with one zone and three receivers, each coordinate through `point`."""

    def rect(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
        ring = [point(x0, y0), point(x1, y0), point(x1, y1), point(x0, y1), point(x0, y0)]
        return {"type": "Polygon", "coordinates": [ring]}

    def feature(props: dict[str, Any], geometry: dict[str, Any]) -> dict[str, Any]:
        return {"type": "Feature", "properties": props, "geometry": geometry}

    receivers = [
        feature({"kind": "gateway", "id": f"g{i}"}, {"type": "Point", "coordinates": point(x, y)})
        for i, (x, y) in enumerate([(0.5, 0.5), (19.5, 0.5), (10, 11.5)])
    ]
    return {
        "type": "FeatureCollection",
        "features": [
            feature({"kind": "floor"}, rect(0, 0, 20, 12)),
            feature({"kind": "zone", "id": "shelf", "category": "aisle"}, rect(1, 1, 5, 5)),
            *receivers,
        ],
    }


def _degrees(x: float, y: float) -> list[float]:
    return [LON + x / 67_800, LAT + y / 111_200]


def _metres(x: float, y: float) -> list[float]:
    return [x, y]


def _errors(data: dict[str, Any]) -> list[str]:
    _store, findings = check_data(data, "mine.geojson")
    return [f"{f.where}: {f.problem}" for f in findings if f.severity == "error"]


def test_a_shop_drawn_in_longitude_latitude_is_refused_with_the_fix(tmp_path: Path) -> None:
    data = _shop(_degrees)
    (problem,) = _errors(data)
    assert problem.startswith(": the map is in longitude/latitude (the whole map spans")
    assert "properties.wgs84_origin" in problem
    with pytest.raises(MapError, match="longitude/latitude"):
        parse_map(data, "mine.geojson")  # the daemon, sim and locate refuse it too
    path = tmp_path / "mine.geojson"
    path.write_text(json.dumps(data))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "fences", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and ": ok:" not in done.stdout
    assert f"{path}: error: the map is in longitude/latitude" in done.stdout
    assert _errors(_shop(_metres)) == []  # the same shop in metres is fine


@pytest.mark.parametrize(
    "crs",
    [
        {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        {"type": "name", "properties": {"name": "EPSG:4326"}},
    ],
)
def test_a_geographic_crs_is_refused(crs: dict[str, Any]) -> None:
    data = _shop(_metres) | {"crs": crs}
    with pytest.raises(MapError, match="its 'crs' says longitude/latitude"):
        parse_map(data, "mine.geojson")


def test_units_other_than_metres_are_refused() -> None:
    data = _shop(_metres) | {"properties": {"units": "ft"}}
    with pytest.raises(MapError, match="'ft': maps are drawn in metres"):
        parse_map(data, "mine.geojson")


def test_unknown_categories_are_errors_unless_the_map_declares_them() -> None:
    data = _shop(_metres)
    data["features"][1]["properties"]["category"] = "asile"
    (problem,) = _errors(data)
    assert problem.startswith(
        "feature 'shelf': unknown zone category 'asile'; did you mean 'aisle'?"
    )
    data["features"][1]["properties"]["category"] = "bakery"
    assert len(_errors(data)) == 1
    data["properties"] = {"categories": ["bakery"]}
    assert _errors(data) == []


def test_unknown_properties_are_warnings_naming_the_likely_one() -> None:
    data = _shop(_metres)
    data["features"][1]["properties"]["dwel_s"] = 5
    data["properties"] = {"unit": "m"}
    _store, findings = check_data(data, "mine.geojson")
    problems = [(f.severity, f.where, f.problem.split(";")[0]) for f in findings]
    assert (
        "warning",
        "feature 'shelf' (#1)",
        "unknown zone property 'dwel_s' is ignored",
    ) in problems
    assert ("warning", "properties", "unknown map property 'unit'") in problems


def test_the_shipped_maps_use_known_categories_and_properties() -> None:
    for path in sorted((REPO / "geofences").glob("*.geojson")):
        _store, findings = check_data(json.loads(path.read_text()), str(path))
        assert findings == [], path


def test_a_map_in_degrees_converts_to_metres_and_then_checks_clean(tmp_path: Path) -> None:
    source, output = tmp_path / "geojson-io.geojson", tmp_path / "metres.geojson"
    source.write_text(json.dumps(_shop(_degrees)))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "fences", "from-wgs84", str(source), "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    store = parse_map(json.loads(output.read_text()), str(output))
    assert store.wgs84_origin == (LON, LAT)
    floor = store.floors[0].bounds
    # 20 × 12 m drawn at 67,800 m and 111,200 m per degree; WGS84 at 52.52° N has 67,898
    # and 111,269: the converted shop is 20.03 × 12.01 m.
    assert floor[:2] == (0.0, 0.0)
    assert floor[2] == pytest.approx(20 * 67_898 / 67_800, abs=0.02)
    assert floor[3] == pytest.approx(12 * 111_269 / 111_200, abs=0.02)
    assert store.receivers["g2"] == pytest.approx((10 * 67_898 / 67_800, 11.5 * 1.0006), abs=0.02)
    not_degrees = subprocess.run(
        [sys.executable, "-m", "gateway", "fences", "from-wgs84", str(output), "-o", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not_degrees.returncode == 2  # already metres (outside degree range): refused
    assert "not a shop in degrees; is it in metres already?" in not_degrees.stderr


def test_docs_maps_describes_every_kind_property_and_category() -> None:
    text = (REPO / "docs" / "maps.md").read_text()
    documented = set(re.findall(r"`([a-z_0-9]+)`", text))
    for kind, names in FEATURE_PROPERTIES.items():
        assert kind in documented
        missing = set(names) - documented
        assert not missing, (kind, missing)
    assert not set(MAP_PROPERTIES) - documented
    assert not set(ZONE_CATEGORIES) - documented
