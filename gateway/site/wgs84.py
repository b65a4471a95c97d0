"""A map drawn in longitude/latitude (geojson.io, web map editors) → local metres.

`gateway fences from-wgs84`: every coordinate is projected onto the plane touching the Earth
at the origin (by default the south-west corner of the map's bounds), x east and y north in
metres, and the origin is kept in the collection's `wgs84_origin`. Over a shop (a few hundred
metres) this local tangent-plane projection is exact to well under a centimetre, far below
what radio positioning resolves. The result is a map the gateway reads (docs/maps.md).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from gateway.site.storemap import DEGREES_EXTENT

# WGS84 ellipsoid: the radii of curvature at the origin give metres per radian.
_A = 6_378_137.0
_E2 = 6.694_379_990_14e-3


def _metres_per_degree(lat: float) -> tuple[float, float]:
    """(metres per degree of longitude, per degree of latitude) at latitude `lat`."""
    phi = math.radians(lat)
    w = math.sqrt(1.0 - _E2 * math.sin(phi) ** 2)
    east = _A / w * math.cos(phi)  # prime vertical radius × cos φ
    north = _A * (1.0 - _E2) / w**3  # meridional radius
    return east * math.pi / 180.0, north * math.pi / 180.0


def _points(coords: Any) -> list[tuple[float, float]]:
    if isinstance(coords, list) and coords and isinstance(coords[0], (int, float)):
        return [(float(coords[0]), float(coords[1]))]
    out: list[tuple[float, float]] = []
    for part in coords if isinstance(coords, list) else []:
        out += _points(part)
    return out


def _project(coords: Any, origin: tuple[float, float], scale: tuple[float, float]) -> Any:
    if isinstance(coords, list) and coords and isinstance(coords[0], (int, float)):
        x = (float(coords[0]) - origin[0]) * scale[0]
        y = (float(coords[1]) - origin[1]) * scale[1]
        return [round(x, 3), round(y, 3)]
    return [_project(part, origin, scale) for part in coords]


def to_local_metres(
    data: dict[str, Any], origin: tuple[float, float] | None = None
) -> dict[str, Any]:
    """A copy of the collection in local metres; ValueError when it is not in degrees."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise ValueError("expected a GeoJSON FeatureCollection")
    points = [
        p
        for feature in data["features"]
        if isinstance(feature, dict) and isinstance(feature.get("geometry"), dict)
        for p in _points(feature["geometry"].get("coordinates"))
    ]
    if not points:
        raise ValueError("the map has no coordinates")
    if not all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in points):
        raise ValueError("coordinates outside longitude/latitude range: not a map in degrees")
    xs, ys = [x for x, _ in points], [y for _, y in points]
    extent = max(max(xs) - min(xs), max(ys) - min(ys))
    if extent >= DEGREES_EXTENT:
        raise ValueError(
            f"the map spans {extent:g} units, over {DEGREES_EXTENT:g}° (kilometres): "
            "not a shop in degrees; is it in metres already?"
        )
    if origin is None:
        origin = (min(x for x, _ in points), min(y for _, y in points))
    scale = _metres_per_degree(origin[1])
    out = copy.deepcopy(data)
    out.pop("crs", None)
    for feature in out["features"]:
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if isinstance(geometry, dict) and "coordinates" in geometry:
            geometry["coordinates"] = _project(geometry["coordinates"], origin, scale)
    props = out.get("properties")
    props = dict(props) if isinstance(props, dict) else {}
    props.setdefault("units", "m")
    props["wgs84_origin"] = [round(origin[0], 7), round(origin[1], 7)]
    props["bearing_deg"] = 0.0
    out["properties"] = props
    return out
