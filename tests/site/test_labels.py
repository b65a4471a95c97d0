"""The floor plan's labels: none on another, on a marker or outside its panel; zone names
inside their zone and clear of the zones drawn inside it; nothing drawn under the legend."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.model import Position
from gateway.site.labels import Label, Layout, inside, overlaps, text_box
from gateway.site.render import MARGIN, Scene, Shape, plan_scene
from gateway.site.storemap import load_map
from tests.conftest import REPO

MAPS = sorted((REPO / "geofences").glob("*.geojson"))


def _labels(scene: Scene) -> list[Shape]:
    """Zone names and ids: text on the plan, not the panel titles (16 px) or the legend."""
    top_of_legend = max(p[1] for s in scene.shapes if s.kind == "polygon" for p in s.points)
    return [
        s
        for s in scene.shapes
        if s.kind == "text" and s.size < 16 and s.points[0][1] <= top_of_legend + 20
    ]


def _box(shape: Shape) -> tuple[float, float, float, float]:
    (x, y) = shape.points[0]
    return text_box(Label(x, y, shape.text, shape.size, shape.centred))


@pytest.mark.parametrize("path", MAPS, ids=lambda p: Path(p).stem)
def test_labels_of_every_shipped_map_keep_apart_and_inside(path: Path) -> None:
    store = load_map(path)
    scene = plan_scene(store)
    labels = _labels(scene)
    boxes = [_box(s) for s in labels]
    assert len(labels) >= len(store.zones) + len(store.anchors) + len(store.receivers)
    for (a, sa), (b, sb) in itertools.combinations(zip(boxes, labels, strict=True), 2):
        assert not overlaps(a, b), f"{sa.text!r} overlaps {sb.text!r}"
    picture = (0.0, 0.0, float(scene.width), float(scene.height))
    assert all(inside(b, picture) for b in boxes)
    markers = [
        (s.points[0][0] - 5, s.points[0][1] - 5, s.points[0][0] + 5, s.points[0][1] + 5)
        for s in scene.shapes
        if s.ident.startswith("beacon-")
    ] + [
        (s.points[0][0], s.points[0][1], s.points[1][0], s.points[1][1])
        for s in scene.shapes
        if s.kind == "rect" and s.fill == "#e6550d" and s.points[0][1] < scene.height - 60
    ]
    for box, shape in zip(boxes, labels, strict=True):
        hit = [m for m in markers if overlaps(box, m)]
        assert not hit, f"{shape.text!r} covers a marker"
    # the legend sits below every zone, floor, beacon and its label
    legend_y = scene.height - 60 + 20
    drawn = [p for s in scene.shapes if s.kind == "polygon" or s.ident for p in s.points]
    assert max(y for _x, y in drawn) < legend_y - 10
    assert max(b[3] for b in boxes) < legend_y - 10


def test_zone_names_stay_inside_their_zone_and_clear_of_inner_zones() -> None:
    store = load_map(REPO / "geofences" / "department-store.geojson")
    scene = plan_scene(store)
    zones = {s.ident: s for s in scene.shapes if s.ident.startswith("zone-")}

    def zone_box(ident: str) -> tuple[float, float, float, float]:
        xs = [p[0] for p in zones[ident].points]
        ys = [p[1] for p in zones[ident].points]
        return (min(xs), min(ys), max(xs), max(ys))

    walkway = next(z for z in store.zones if z.name == "Main walkway" and z.level == 0)
    escalators = next(z for z in store.zones if z.name == "Escalators" and z.level == 0)
    label = next(
        _box(s)
        for s in _labels(scene)
        if s.text == "Main walkway" and inside(_box(s), zone_box(f"zone-{walkway.id}"))
    )
    assert not overlaps(label, zone_box(f"zone-{escalators.id}"))


def test_a_crowded_marker_puts_its_id_on_the_free_side() -> None:
    layout = Layout((0, 0, 300, 200))
    layout.block((105, 80, 200, 100))  # something right of the marker
    label = layout.beside("gw-counter", 100, 90)
    assert label.x < 100  # to its left
    edge = layout.beside("gw-ne", 295, 10)  # at the right edge: moved inwards
    assert inside(text_box(edge), layout.area)


def test_a_narrow_zone_gets_a_smaller_two_line_or_shortened_name() -> None:
    layout = Layout((0, 0, 1000, 1000))
    one = layout.zone("Books", (0, 0, 200, 100), (100, 50))
    assert [label.text for label in one] == ["Books"] and one[0].size == 11
    two = layout.zone("Accessories A", (300, 0, 360, 100), (330, 50))
    assert [label.text for label in two] == ["Accessories", "A"]
    assert all(inside(text_box(label), (300, 0, 360, 100)) for label in two)
    short = layout.zone("Extraordinarily", (400, 0, 440, 100), (420, 50))
    assert short[0].text.endswith("…") and short[0].size == 8
    assert MARGIN > 0


def test_a_track_walking_away_and_its_circle_stay_clear_of_the_legend() -> None:
    store = load_map(REPO / "geofences" / "demo-bookstore.geojson")
    walk = [Position("d", t, 10.0, 5.0 - t, 20.0, "ml", 3) for t in range(8)]
    scene = plan_scene(store, {"device 1": walk})
    legend_y = scene.height - 60 + 20
    circles = [s for s in scene.shapes if s.kind == "circle" and s.opacity < 1]
    assert circles and all(s.points[0][1] + s.radius < legend_y - 10 for s in circles)
    # drawn at most 8 m wide, as the console does
    assert max(s.radius for s in circles) == pytest.approx(8.0 * scene.projection["scale"])
