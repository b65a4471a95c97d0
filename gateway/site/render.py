"""`gateway fences render`: the floor-plan picture staff look at when they install.

The plan is first laid out as a list of drawing primitives in pixel coordinates (one panel
per level, side by side), then written by one of two small back ends: SVG text, or PNG
through Pillow. Keeping the layout in one place means both pictures show the same thing.

Optionally the estimated tracks of a replayed trace are drawn: each shopper device's
positions (as the gateway's own presence stage computes them) as a line, its last fix with
the uncertainty circle. Devices are labelled "device 1", "device 2", … — never by identifier.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapely.geometry.base import BaseGeometry

from gateway.model import Position
from gateway.site.labels import Box, Label, Layout, inside
from gateway.site.storemap import StoreMap

Point = tuple[float, float]
Projection = Callable[[float, float], Point]

ZONE_COLOURS = {
    "entrance": "#9ecae1",
    "aisle": "#c7e9c0",
    "pickup_counter": "#fdd0a2",
    "checkout": "#fcbba1",
    "window": "#dadaeb",
}
ZONE_DEFAULT = "#e5e5e5"
TRACK_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
MARGIN = 40  # px around each level's panel
TITLE = 28  # px for the panel title
# The last fix's uncertainty circle (one σ) is drawn up to this radius: beyond it, it says
# "somewhere here" well enough (the console draws it the same way).
CIRCLE_MAX_M = 8.0


@dataclass(frozen=True, slots=True)
class Shape:
    kind: str  # "polygon" | "line" | "circle" | "text" | "rect"
    points: tuple[Point, ...]
    fill: str | None = None
    stroke: str | None = None
    width: float = 1.0
    opacity: float = 1.0
    radius: float = 0.0
    text: str = ""
    size: int = 12
    centred: bool = False
    ident: str = ""  # SVG id (the console finds zones and beacons by it)
    dashed: bool = False


@dataclass(slots=True)
class Scene:
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)
    # How plan metres map to picture pixels (the console draws live positions with it):
    # px = panel·panel_w + margin + (x - min_x)·scale, py = top + margin + (max_y - y)·scale
    projection: dict[str, Any] = field(default_factory=dict)


Track = list[Position]


def plan_scene(
    store: StoreMap, tracks: dict[str, Track] | None = None, px_per_m: float | None = None
) -> Scene:
    min_x, min_y, max_x, max_y = store.bounds
    # Everything drawn is inside its panel: zones outside the floor (a pavement, a window
    # display), beacons and gateways too, so nothing spills into the legend.
    extents = [z.shape.bounds for z in store.zones]
    extents += [(a.x, a.y, a.x, a.y) for a in store.anchors]
    extents += [(x, y, x, y) for x, y in store.receivers.values()]
    for b in extents:
        min_x, min_y = min(min_x, b[0]), min(min_y, b[1])
        max_x, max_y = max(max_x, b[2]), max(max_y, b[3])
    for track in (tracks or {}).values():  # people walking away are drawn, not cut off
        last = {p.level: p for p in track}  # the fix drawn with its circle, per level
        for p in track:
            r = min(p.uncertainty_m, CIRCLE_MAX_M) if last[p.level] is p else 0.0
            min_x, max_x = min(min_x, p.x - r), max(max_x, p.x + r)
            min_y, max_y = min(min_y, p.y - r), max(max_y, p.y + r)
    span = max(max_x - min_x, max_y - min_y, 1.0)
    scale = px_per_m or max(8.0, min(60.0, 900.0 / span))
    panel_w = (max_x - min_x) * scale + 2 * MARGIN
    panel_h = (max_y - min_y) * scale + 2 * MARGIN + TITLE
    levels = store.levels
    legend_h = 60
    scene = Scene(math.ceil(panel_w * len(levels)), math.ceil(panel_h + legend_h))
    scene.projection = {
        "min_x": min_x,
        "max_y": max_y,
        "scale": scale,
        "panel_w": panel_w,
        "margin": MARGIN,
        "top": TITLE,
        "levels": levels,
        "panel_h": panel_h,  # the legend is below: live markers stay above it
    }
    scene.shapes.append(Shape("rect", ((0, 0), (scene.width, scene.height)), fill="#ffffff"))
    for panel, level in enumerate(levels):
        left = panel * panel_w

        def px(x: float, y: float, left: float = left) -> Point:
            # y grows northwards on the plan and downwards in the picture
            return (
                round(left + MARGIN + (x - min_x) * scale, 1),
                round(TITLE + MARGIN + (max_y - y) * scale, 1),
            )

        area = (left, 0.0, left + panel_w, panel_h)
        _level_shapes(scene, store, level, px, scale, area, multi=len(levels) > 1)
        if tracks:
            _track_shapes(scene, tracks, level, px, scale)
    _legend(scene, panel_h, scale, tracks)
    return scene


def _rings(shape: BaseGeometry) -> Iterable[list[Point]]:
    polygons = getattr(shape, "geoms", [shape])
    for polygon in polygons:
        yield [(float(x), float(y)) for x, y in polygon.exterior.coords]


def _level_shapes(
    scene: Scene,
    store: StoreMap,
    level: int,
    px: Projection,
    scale: float,
    panel: Box,
    multi: bool,
) -> None:
    """One level's floor, zones, walls and markers, then their labels on top, placed so
    that none covers another or a marker (`labels.Layout`)."""
    add = scene.shapes.append
    title = f"{store.name}, level {level}" if multi else store.name
    add(Shape("text", ((panel[0] + MARGIN, 22),), fill="#222222", text=title, size=16))
    layout = Layout((panel[0] + 2, TITLE, panel[2] - 2, panel[3] - 2))
    zone_labels: list[tuple[str, Box, Point]] = []
    point_labels: list[tuple[str, Point, str]] = []
    floor = store.floors.get(level)
    if floor is not None:
        for ring in _rings(floor):
            add(Shape("polygon", tuple(px(*p) for p in ring), "#fafafa", "#555555", 2.0))
    for zone in sorted(store.zones, key=lambda z: z.priority):
        if zone.level != level:
            continue
        colour = ZONE_COLOURS.get(zone.category, ZONE_DEFAULT)
        for ring in _rings(zone.shape):
            add(
                Shape(
                    "polygon",
                    tuple(px(*p) for p in ring),
                    colour,
                    "#777777",
                    1.0,
                    0.85,
                    ident=f"zone-{zone.id}",
                )
            )
        c = zone.shape.representative_point()
        minx, miny, maxx, maxy = zone.shape.bounds
        (x0, y1), (x1, y0) = px(minx, miny), px(maxx, maxy)
        zone_labels.append((zone.name, (x0, y0, x1, y1), px(c.x, c.y)))
    for wall in store.walls:
        if wall.level != level:
            continue
        for line in getattr(wall.shape, "geoms", [wall.shape]):
            points = tuple(px(float(x), float(y)) for x, y in line.coords)
            add(Shape("line", points, stroke="#222222", width=max(3.0, 0.2 * scale)))
    for anchor in store.anchors:
        if anchor.level != level:
            continue
        x, y = px(anchor.x, anchor.y)
        add(
            Shape(
                "circle",
                ((x, y),),
                "#3182bd",
                "#08306b",
                1.0,
                radius=5,
                ident=f"beacon-{anchor.id}",
            )
        )
        layout.block((x - 6, y - 6, x + 6, y + 6))
        point_labels.append((anchor.id, (x, y), "#08306b"))
    for receiver, (rx, ry) in store.receivers.items():
        if store.receiver_levels.get(receiver, 0) != level:
            continue
        x, y = px(rx, ry)
        add(Shape("rect", ((x - 6, y - 6), (x + 6, y + 6)), "#e6550d", "#7f2704", 1.0))
        layout.block((x - 7, y - 7, x + 7, y + 7))
        point_labels.append((receiver, (x, y), "#7f2704"))
    # Zone names first, smallest zones first (they have the least room to give way), each
    # clear of the zones drawn inside its own box; then the ids beside their markers.
    boxes = [box for _name, box, _anchor in zone_labels]
    for name, box, anchor_px in sorted(zone_labels, key=lambda z: _area(z[1])):
        inner = tuple(b for b in boxes if b != box and inside(b, box))
        for label in layout.zone(name, box, anchor_px, avoid=inner):
            add(_text(label, "#333333"))
    for text, (x, y), colour in point_labels:
        add(_text(layout.beside(text, x, y), colour))


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _text(label: Label, colour: str) -> Shape:
    return Shape(
        "text",
        ((label.x, label.y),),
        fill=colour,
        text=label.text,
        size=label.size,
        centred=label.centred,
    )


def _track_shapes(
    scene: Scene, tracks: dict[str, Track], level: int, px: Projection, scale: float
) -> None:
    for index, (label, track) in enumerate(sorted(tracks.items())):
        colour = TRACK_COLOURS[index % len(TRACK_COLOURS)]
        points = [p for p in track if p.level == level]
        if not points:
            continue
        if len(points) > 1:
            line = tuple(px(p.x, p.y) for p in points)
            scene.shapes.append(Shape("line", line, stroke=colour, width=2.0, opacity=0.8))
        last = points[-1]
        x, y = px(last.x, last.y)
        radius = max(4.0, min(last.uncertainty_m, CIRCLE_MAX_M) * scale)
        scene.shapes.append(
            Shape("circle", ((x, y),), colour, colour, 1.0, opacity=0.15, radius=radius)
        )
        scene.shapes.append(Shape("circle", ((x, y),), colour, "#000000", 1.0, radius=4))
        scene.shapes.append(Shape("text", ((x + 6, y + 4),), fill=colour, text=label, size=11))


def _legend(scene: Scene, top: float, scale: float, tracks: dict[str, Track] | None) -> None:
    add = scene.shapes.append
    y = top + 20
    x = float(MARGIN)
    # A 5 m scale bar: staff check distances against it.
    add(Shape("line", ((x, y), (x + 5 * scale, y)), stroke="#000000", width=3.0))
    add(Shape("text", ((x, y + 18),), fill="#000000", text="5 m", size=11))
    x += 5 * scale + 30
    add(Shape("rect", ((x, y - 6), (x + 12, y + 6)), "#e6550d", "#7f2704"))
    add(Shape("text", ((x + 18, y + 4),), fill="#000000", text="gateway", size=11))
    x += 90
    add(Shape("circle", ((x + 6, y),), "#3182bd", "#08306b", radius=5))
    add(Shape("text", ((x + 18, y + 4),), fill="#000000", text="fixed beacon", size=11))
    if tracks:
        x += 110
        add(Shape("line", ((x, y), (x + 20, y)), stroke=TRACK_COLOURS[0], width=2.0))
        add(
            Shape(
                "text",
                ((x + 26, y + 4),),
                fill="#000000",
                text=f"estimated track ({len(tracks)} devices; circle = uncertainty)",
                size=11,
            )
        )


# --- back ends -------------------------------------------------------------------------------


def _attr(value: object) -> str:
    """An attribute value, quoted for XML and HTML alike: `&`, `<`, `>`, `"` and `'`."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return html.escape(text, quote=True)


def _element(tag: str, attrs: dict[str, object], text: str | None = None) -> str:
    """One SVG element. Every attribute and the text go through the quoting here, whatever
    their source (map ids and names are data, not markup)."""
    inner = " ".join(f'{name}="{_attr(v)}"' for name, v in attrs.items() if v is not None)
    if text is None:
        return f"<{tag} {inner}/>"
    return f"<{tag} {inner}>{html.escape(text, quote=True)}</{tag}>"


def _points(points: Iterable[Point]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in points)


def to_svg(scene: Scene) -> str:
    out = [
        _element(
            "svg",
            {
                "xmlns": "http://www.w3.org/2000/svg",
                "width": scene.width,
                "height": scene.height,
                "viewBox": f"0 0 {scene.width} {scene.height}",
                "font-family": "DejaVu Sans, Helvetica, Arial, sans-serif",
            },
        ).removesuffix("/>")
        + ">"
    ]
    for s in scene.shapes:
        paint: dict[str, object] = {
            "fill": s.fill or "none",
            "stroke": s.stroke or "none",
            "stroke-width": float(s.width),
            "opacity": float(s.opacity),
            "id": s.ident or None,
        }
        if s.kind == "polygon":
            out.append(_element("polygon", {"points": _points(s.points), **paint}))
        elif s.kind == "line":
            line: dict[str, object] = {
                "points": _points(s.points),
                "fill": "none",
                "stroke": s.stroke,
                "stroke-width": float(s.width),
                "opacity": float(s.opacity),
                "stroke-linejoin": "round",
                "stroke-dasharray": "6 4" if s.dashed else None,
            }
            out.append(_element("polyline", line))
        elif s.kind == "circle":
            (x, y), r = s.points[0], s.radius
            out.append(_element("circle", {"cx": float(x), "cy": float(y), "r": float(r), **paint}))
        elif s.kind == "rect":
            (x0, y0), (x1, y1) = s.points
            box = {"x": float(x0), "y": float(y0), "width": float(x1 - x0)}
            out.append(_element("rect", {**box, "height": float(y1 - y0), **paint}))
        elif s.kind == "text":
            x, y = s.points[0]
            label: dict[str, object] = {
                "x": float(x),
                "y": float(y),
                "font-size": s.size,
                "fill": s.fill,
                "text-anchor": "middle" if s.centred else None,
            }
            out.append(_element("text", label, s.text))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_png(scene: Scene, path: Path) -> None:
    from PIL import Image, ImageDraw

    base = Image.new("RGBA", (scene.width, scene.height), "#ffffff")
    solid = ImageDraw.Draw(base)
    for s in scene.shapes:
        # Translucent shapes are drawn on their own layer and composited.
        layer = base if s.opacity >= 1.0 else Image.new("RGBA", base.size, (0, 0, 0, 0))
        draw = solid if layer is base else ImageDraw.Draw(layer)
        alpha = round(255 * s.opacity)
        fill = _rgba(s.fill, alpha)
        stroke = _rgba(s.stroke, alpha)
        width = max(1, round(s.width))
        if s.kind == "polygon":
            draw.polygon(list(s.points), fill=fill, outline=stroke, width=width)
        elif s.kind == "line":
            draw.line(list(s.points), fill=stroke, width=width, joint="curve")
        elif s.kind == "circle":
            (x, y), r = s.points[0], s.radius
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=stroke, width=width)
        elif s.kind == "rect":
            (x0, y0), (x1, y1) = s.points
            draw.rectangle((x0, y0, x1, y1), fill=fill, outline=stroke, width=width)
        elif s.kind == "text":
            font = _font(s.size)
            x, y = s.points[0]
            draw.text((x, y), s.text, fill=fill, font=font, anchor="ms" if s.centred else "ls")
        if layer is not base:
            base.alpha_composite(layer)
    base.convert("RGB").save(path, format="PNG", optimize=True)


@functools.cache
def _font(size: int) -> Any:
    """DejaVu Sans where installed (it has every glyph a shop name needs); else Pillow's own."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        try:
            return ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
        except OSError:
            return ImageFont.load_default(size=size)


def _rgba(colour: str | None, alpha: int) -> tuple[int, int, int, int] | None:
    if colour is None:
        return None
    value = colour.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16), alpha)


def render(scene: Scene, output: Path) -> None:
    suffix = output.suffix.lower()
    if suffix == ".svg":
        output.write_text(to_svg(scene), encoding="utf-8")
    elif suffix == ".png":
        write_png(scene, output)
    else:
        raise ValueError(f"{output}: unknown picture format; use .svg or .png")
