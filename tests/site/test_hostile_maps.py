"""Maps as input from someone else: ids limited to a safe alphabet at load (and reported by
`fences check`), and the SVG plan encoded by construction whatever a name or id holds."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from gateway.site.render import Shape, plan_scene, to_svg
from gateway.site.storemap import MapError, Zone, load_map, parse_map
from tests.conftest import REPO

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = [
    'entrance" tabindex="1" autofocus onfocus="alert(document.cookie)',
    "entrance' onfocus='alert(1)",
    "<script>alert(1)</script>",
    "a b",
    "zone\n",
    "é-zone",
    "-leading-dash",
    "x" * 65,
]


def _demo() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "geofences" / "demo-bookstore.geojson").read_text())
    return data


def _with_id(kind: str, new_id: str) -> dict[str, Any]:
    data = _demo()
    feature = next(f for f in data["features"] if f["properties"]["kind"] == kind)
    feature["properties"]["id"] = new_id
    return data


@pytest.mark.parametrize("kind", ["zone", "gateway", "beacon"])
@pytest.mark.parametrize("bad", HOSTILE)
def test_ids_outside_the_safe_alphabet_are_refused_naming_feature_and_property(
    kind: str, bad: str
) -> None:
    with pytest.raises(MapError) as caught:
        parse_map(_with_id(kind, bad), "shop.geojson")
    error = caught.value
    assert error.where.startswith("feature #") and "property 'id'" in error.problem
    assert "letters, digits and . _ : -" in error.problem
    assert "<" not in error.where and '"' not in error.where


def test_safe_ids_still_load() -> None:
    for good in ["entrance", "L0-shoes-a", "gw_1.hci0", "bcn:7", "A" * 64]:
        store = parse_map(_with_id("zone", good), "shop.geojson")
        assert store.zones[0].id == good


def test_fences_check_reports_a_hostile_id(tmp_path: Path) -> None:
    path = tmp_path / "hostile.geojson"
    path.write_text(json.dumps(_with_id("zone", HOSTILE[0])))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "fences", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    line = next(x for x in done.stdout.splitlines() if "property 'id'" in x)
    assert line.startswith(f"{path}: error: feature #")


def test_svg_quotes_every_attribute_and_text_whatever_it_holds() -> None:
    """Even with validation bypassed (ids built in code), nothing becomes markup."""
    store = load_map(REPO / "geofences" / "demo-bookstore.geojson")
    store.name = "</text><script>alert(1)</script>"
    zone = store.zones[0]
    store.zones[0] = Zone(
        id=HOSTILE[0],
        name="Fiction & \"Sci-Fi\" <b>'new'</b>",
        category=zone.category,
        shape=zone.shape,
        dwell_s=None,
        hysteresis_m=None,
        priority=0,
    )
    scene = plan_scene(store)
    scene.shapes.append(Shape("circle", ((1.0, 2.0),), "#000000", radius=3, ident=HOSTILE[1]))
    svg = to_svg(scene)
    root = ET.fromstring(svg)  # well-formed XML
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    assert f"zone-{HOSTILE[0]}" in ids and HOSTILE[1] in ids
    assert not [e for e in root.iter() if e.tag != f"{SVG}svg" and not e.tag.startswith(SVG)]
    assert not [e for e in root.iter() if any(a.startswith("on") for a in e.attrib)]
    assert not [e for e in root.iter() if "script" in e.tag]
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert store.name in texts and "Fiction & \"Sci-Fi\" <b>'new'</b>" in texts
    assert "onfocus='" not in svg and 'onfocus="' not in svg and "<script" not in svg


def test_svg_of_every_shipped_map_is_well_formed() -> None:
    for path in sorted((REPO / "geofences").glob("*.geojson")):
        ET.fromstring(to_svg(plan_scene(load_map(path))))
