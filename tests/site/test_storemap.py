"""Store maps: the shipped one loads, broken ones are rejected with the feature named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.site.storemap import MapError, load_map, parse_map
from tests.conftest import REPO


def _demo() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REPO / "geofences" / "demo-bookstore.geojson").read_text())
    return doc


def test_demo_map_loads(demo_map: Any) -> None:
    assert {z.id for z in demo_map.zones} >= {"entrance", "aisle-scifi", "pickup-counter"}
    assert len(demo_map.anchors) >= 6
    assert len(demo_map.receivers) >= 3
    assert demo_map.bounds == (0.0, 0.0, 20.0, 12.0)


def _feature(data: dict[str, Any], fid: str) -> dict[str, Any]:
    return next(f for f in data["features"] if f["properties"].get("id") == fid)


def _rejects(data: Any, *words: str) -> None:
    with pytest.raises(MapError) as info:
        parse_map(data, "store.geojson")
    for word in words:
        assert word in str(info.value)


def test_bow_tie_polygon_is_rejected_by_name() -> None:
    data = _demo()
    _feature(data, "aisle-kids")["geometry"]["coordinates"] = [
        [[0, 0], [4, 4], [4, 0], [0, 4], [0, 0]]
    ]
    _rejects(data, "aisle-kids", "invalid polygon", "Self-intersection")


def test_non_finite_coordinates_are_rejected() -> None:
    data = _demo()
    _feature(data, "entrance")["geometry"]["coordinates"][0][1] = [float("nan"), 0]
    _rejects(data, "entrance", "not finite")


def test_unknown_kind_and_duplicate_id() -> None:
    data = _demo()
    bad = copy.deepcopy(data)
    _feature(bad, "entrance")["properties"]["kind"] = "zoen"
    _rejects(bad, "entrance", "unknown kind 'zoen'")
    dup = copy.deepcopy(data)
    _feature(dup, "aisle-kids")["properties"]["id"] = "entrance"
    _rejects(dup, "duplicate id")


def test_bad_properties_and_structure() -> None:
    data = _demo()
    _feature(data, "entrance")["properties"]["dwell_s"] = "long"
    _rejects(data, "entrance", "dwell_s")
    _rejects({"type": "Feature"}, "FeatureCollection")
    _rejects({"type": "FeatureCollection", "features": []}, "no zone")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(MapError, match="file not found"):
        load_map(tmp_path / "missing.geojson")
    (tmp_path / "x.geojson").write_text("{not json")
    with pytest.raises(MapError, match="not readable JSON"):
        load_map(tmp_path / "x.geojson")


def test_anchor_identities_of_every_format() -> None:
    data = _demo()
    beacons = [f for f in data["features"] if f["properties"]["kind"] == "beacon"]
    del beacons[0]["properties"]["ibeacon"]
    beacons[0]["properties"]["eddystone_uid"] = "00112233445566778899:AABBCCDDEEFF"
    del beacons[1]["properties"]["ibeacon"]
    beacons[1]["properties"]["altbeacon"] = "2F234454CF6D4A0FADF2F4911BA9FFA600010002"
    beacons[2]["properties"]["ibeacon"] = "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9:01:003"
    store = parse_map(data, "store.geojson")
    identities = [a.identity for a in store.anchors[:3]]
    assert identities == [
        "eddystone_uid:00112233445566778899:aabbccddeeff",
        "altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010002",
        "ibeacon:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9:1:3",  # as the decoder spells it
    ]


def test_bad_anchor_identities() -> None:
    data = _demo()
    beacon = next(f for f in data["features"] if f["properties"]["kind"] == "beacon")
    beacon["properties"]["ibeacon"] = "not-a-uuid:1:2"
    _rejects(copy.deepcopy(data), beacon["properties"]["id"], "uuid:major:minor")
    beacon["properties"]["eddystone_uid"] = "0011:2233"
    _rejects(copy.deepcopy(data), "exactly one of")


def test_wgs84_origin_is_optional_and_checked() -> None:
    data = _demo()
    data["properties"]["wgs84_origin"] = [13.4, 52.5]
    data["properties"]["bearing_deg"] = 380
    store = parse_map(data, "store.geojson")
    assert store.wgs84_origin == (13.4, 52.5) and store.bearing_deg == 20.0
    data["properties"]["wgs84_origin"] = [52.5, 200]
    _rejects(data, "properties.wgs84_origin", "longitude, latitude")
