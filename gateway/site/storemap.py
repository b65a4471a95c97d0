"""Store maps: a GeoJSON FeatureCollection in local metric coordinates.

Features are told apart by their `kind` property:
  * `floor`   – Polygon, the sales floor outline (positions are clamped inside its bounds)
  * `zone`    – Polygon/MultiPolygon with `id`, `name`, optional `category`, `dwell_s`,
                `hysteresis_m`, `priority`
  * `gateway` – Point, a receiver (an adapter of this box or a peer gateway) with `id`
  * `beacon`  – Point, a fixed anchor with `id`, its identity — one of `ibeacon` =
                "uuid:major:minor", `eddystone_uid` = "namespace:instance" (hex),
                `altbeacon` = 20-byte beacon id (hex) — and `profile`
                (firmware_profiles/beacons/NAME)
  * `wall`    – LineString/MultiLineString with optional `attenuation_db` (default 5 dB per
                crossing): the simulator and the floor-plan picture use them
The collection's own properties may give `wgs84_origin` ([longitude, latitude] of the
local origin) and `bearing_deg` (the local +y axis, degrees clockwise from north).
Any feature may carry `level` (an integer floor number, default 0): a multi-storey store is
one map, each level with its own `floor`, zones and receivers. A device is positioned on the
level whose receivers hear it loudest, with that level's receivers only.

Loading is strict: any structural problem is a `MapError` naming the file, the feature (by
id, else by index) and what to fix. No partial map is ever returned. `gateway fences check`
uses the collecting mode (`problems=`) to report every problem at once.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from shapely import geometry
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

KINDS = ("floor", "zone", "gateway", "beacon", "wall", "obstacle", "stairs")
# Ids travel into SVG ids, HTML, CSS selectors, JSON, MQTT payloads and log lines. A safe
# alphabet keeps every one of those contexts boring: a map cannot carry markup in an id.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
ID_RULE = "letters, digits and . _ : - only, starting with a letter or digit, at most 64"

# The properties each kind of feature has (docs/maps.md); `fences check` warns about others.
FEATURE_PROPERTIES = {
    "floor": ("kind", "name", "level"),
    "zone": ("kind", "id", "name", "category", "dwell_s", "hysteresis_m", "priority", "level"),
    "gateway": ("kind", "id", "name", "measured_power", "path_loss_exponent", "height_m", "level"),
    "beacon": (
        "kind",
        "id",
        "name",
        "ibeacon",
        "eddystone_uid",
        "altbeacon",
        "profile",
        "height_m",
        "level",
    ),
    "wall": ("kind", "name", "attenuation_db", "level"),
}
# The collection's own properties.
MAP_PROPERTIES = ("name", "units", "origin", "levels", "wgs84_origin", "bearing_deg", "categories")
# Zone categories with a meaning here (docs/maps.md); a map lists its own others in the
# collection's `categories`. `fences check` refuses any other: a typo would silently lose
# the behaviour or colour the category has.
ZONE_CATEGORIES = (
    "entrance",
    "aisle",
    "promotion",
    "checkout",
    "pickup_counter",
    "service_desk",
    "fitting_rooms",
    "cafe",
    "transit",
    "window",
    "outdoor",
    "pavement",
    "staff",
)
# A `crs` member naming longitude/latitude (RFC 7946 GeoJSON, what geojson.io writes, is
# always WGS84 degrees); our maps are metres from a local origin.
_GEOGRAPHIC_CRS = ("4326", "crs84", "4258", "4269", "wgs84", "wgs 84")
# A map whose every coordinate fits in this many units and lies in longitude/latitude range
# is drawn in degrees: no shop is 5 cm wide, and 0.05° is over 3 km.
DEGREES_EXTENT = 0.05


class MapError(Exception):
    def __init__(self, file: str, where: str, problem: str) -> None:
        self.file, self.where, self.problem = file, where, problem
        super().__init__(f"{file}: {where}: {problem}" if where else f"{file}: {problem}")


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str
    category: str
    shape: BaseGeometry
    dwell_s: float | None
    hysteresis_m: float | None
    priority: int
    level: int = 0


@dataclass(frozen=True, slots=True)
class Anchor:
    """A fixed beacon with known position."""

    id: str
    x: float
    y: float
    identity: str  # e.g. "ibeacon:<uuid>:<major>:<minor>"
    profile: str
    level: int = 0


@dataclass(frozen=True, slots=True)
class Wall:
    shape: BaseGeometry  # LineString or MultiLineString
    attenuation_db: float
    level: int = 0

    def loss_db(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        """Attenuation of a straight path from a to b: one `attenuation_db` per crossing."""
        crossing = self.shape.intersection(geometry.LineString([a, b]))
        if crossing.is_empty:
            return 0.0
        return self.attenuation_db * max(1, len(getattr(crossing, "geoms", [crossing])))


@dataclass(slots=True)
class StoreMap:
    name: str
    zones: list[Zone] = field(default_factory=list)
    receivers: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Per-receiver calibration from the map (`measured_power`, `path_loss_exponent`).
    calibration: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    anchors: list[Anchor] = field(default_factory=list)
    floor: BaseGeometry | None = None  # the lowest level's floor (single-level stores: the floor)
    floors: dict[int, BaseGeometry] = field(default_factory=dict)
    receiver_levels: dict[str, int] = field(default_factory=dict)
    walls: list[Wall] = field(default_factory=list)
    # Map-aware tracking (method "grid"): (level, polygon) not walkable / where levels connect.
    obstacles: list[tuple[int, BaseGeometry]] = field(default_factory=list)
    stairs: list[tuple[int, BaseGeometry]] = field(default_factory=list)
    # Where the local origin is on Earth (longitude, latitude, WGS84) and the bearing of the
    # local +y axis in degrees from north: only for placing the store on a fleet map.
    wgs84_origin: tuple[float, float] | None = None
    bearing_deg: float = 0.0
    categories: tuple[str, ...] = ()  # the map's own zone categories besides ZONE_CATEGORIES

    @property
    def levels(self) -> list[int]:
        found = set(self.floors) | set(self.receiver_levels.values())
        found |= {z.level for z in self.zones}
        return sorted(found) or [0]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        if self.floors:
            b = shapely.union_all(list(self.floors.values())).bounds
            return (b[0], b[1], b[2], b[3])
        xs: list[float] = []
        ys: list[float] = []
        for z in self.zones:
            minx, miny, maxx, maxy = z.shape.bounds
            xs += [minx, maxx]
            ys += [miny, maxy]
        for x, y in self.receivers.values():
            xs.append(x)
            ys.append(y)
        return (min(xs), min(ys), max(xs), max(ys))

    def zone(self, zone_id: str) -> Zone | None:
        return next((z for z in self.zones if z.id == zone_id), None)


# Coordinates are metres from the store's origin: beyond this a value is not a shop's (and
# makes geometry operations overflow).
MAX_COORDINATE_M = 1_000_000.0


def _finite(coords: Any) -> bool:
    if isinstance(coords, (int, float)) and not isinstance(coords, bool):
        return math.isfinite(coords) and abs(coords) <= MAX_COORDINATE_M
    if isinstance(coords, list):
        return all(_finite(c) for c in coords)
    return False


def parse_map(
    data: Any,
    file: str = "<map>",
    require_zones: bool = True,
    problems: list[MapError] | None = None,
) -> StoreMap:
    """Build a StoreMap. Without `problems` the first problem raises; with it, every
    problem is appended, bad features are left out, and parsing goes on."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise MapError(file, "", "expected a GeoJSON FeatureCollection at the top level")
    features = data.get("features")
    if not isinstance(features, list):
        raise MapError(file, "features", "expected a list of features")
    props_top = data.get("properties") or {}
    if not isinstance(props_top, dict):
        raise MapError(file, "properties", "expected an object (name, wgs84_origin, bearing_deg)")
    store = StoreMap(name=str(props_top.get("name", Path(file).stem)))
    origin = props_top.get("wgs84_origin")
    if origin is not None:
        if (
            not isinstance(origin, list)
            or len(origin) != 2
            or not _finite(origin)
            or not (-180 <= origin[0] <= 180 and -90 <= origin[1] <= 90)
        ):
            raise MapError(
                file, "properties.wgs84_origin", "expected [longitude, latitude] in degrees"
            )
        store.wgs84_origin = (float(origin[0]), float(origin[1]))
    bearing = props_top.get("bearing_deg", 0.0)
    if isinstance(bearing, bool) or not isinstance(bearing, (int, float)) or not _finite(bearing):
        raise MapError(file, "properties.bearing_deg", "expected degrees from north")
    store.bearing_deg = float(bearing) % 360.0
    units = props_top.get("units", "m")
    if units not in ("m", "metres", "meters", "metre", "meter"):
        raise MapError(
            file, "properties.units", f"{units!r}: maps are drawn in metres; redraw it in metres"
        )
    categories = props_top.get("categories", [])
    if not isinstance(categories, list) or not all(
        isinstance(c, str) and c.strip() for c in categories
    ):
        raise MapError(file, "properties.categories", "expected a list of category names")
    store.categories = tuple(categories)
    crs = json.dumps(data.get("crs", "")).lower()
    if any(name in crs for name in _GEOGRAPHIC_CRS):
        raise MapError(file, "crs", DEGREES_FIX.format(what="its 'crs' says longitude/latitude"))
    seen: set[str] = set()

    def report(error: MapError) -> None:
        if problems is None:
            raise error
        problems.append(error)

    for index, feature in enumerate(features):
        try:
            _add_feature(store, feature, index, file, seen)
        except MapError as error:
            report(error)
    if require_zones and not store.zones:
        report(MapError(file, "", "the map has no zone features"))
    if not store.receivers:
        report(MapError(file, "", "the map has no gateway (receiver) features"))
    if store.floors:
        store.floor = store.floors[min(store.floors)]
    if (problem := degrees_problem(store)) is not None:
        report(MapError(file, "", problem))
    return store


DEGREES_FIX = (
    "the map is in longitude/latitude ({what}; or in kilometres), but maps are drawn in "
    "metres from a local "
    "origin (a corner of the shop): convert it with `gateway fences from-wgs84 FILE -o "
    "OUT.geojson`, or redraw it in metres with the origin's [longitude, latitude] in the "
    "collection's properties.wgs84_origin (docs/maps.md)"
)


def degrees_problem(store: StoreMap) -> str | None:
    """Why the map looks drawn in longitude/latitude degrees, or None."""
    points: list[tuple[float, float]] = list(store.receivers.values())
    points += [(a.x, a.y) for a in store.anchors]
    shapes = [z.shape for z in store.zones] + list(store.floors.values())
    for shape in shapes:
        minx, miny, maxx, maxy = shape.bounds
        points += [(minx, miny), (maxx, maxy)]
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    extent = max(max(xs) - min(xs), max(ys) - min(ys))
    in_range = all(-180 <= x <= 180 for x in xs) and all(-90 <= y <= 90 for y in ys)
    if extent == 0 or extent >= DEGREES_EXTENT or not in_range:
        return None
    what = (
        f"the whole map spans {max(xs) - min(xs):.2g} × {max(ys) - min(ys):.2g} units "
        f"around ({xs[0]:.5f}, {ys[0]:.5f})"
    )
    return DEGREES_FIX.format(what=what)


def _add_feature(store: StoreMap, feature: Any, index: int, file: str, seen: set[str]) -> None:
    where = f"feature #{index}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise MapError(file, where, "not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise MapError(file, where, "properties must be an object")
    fid = props.get("id")
    if isinstance(fid, str) and ID_PATTERN.fullmatch(fid):
        where = f"feature {fid!r} (#{index})"
    kind = props.get("kind")
    if kind not in KINDS:
        raise MapError(file, where, f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    geom_json = feature.get("geometry")
    if not isinstance(geom_json, dict) or not _finite(geom_json.get("coordinates")):
        raise MapError(
            file,
            where,
            "geometry missing, or coordinates not finite metres within 1000 km of the origin",
        )
    try:
        shape = geometry.shape(geom_json)
    except Exception as exc:  # shapely raises several types for bad GeoJSON
        raise MapError(file, where, f"invalid geometry: {exc}") from None
    if shape.is_empty:
        raise MapError(file, where, f"empty {geom_json.get('type')} geometry; give coordinates")
    level = props.get("level", 0)
    if isinstance(level, bool) or not isinstance(level, int) or not -10 <= level <= 200:
        raise MapError(file, where, "property 'level' must be an integer floor number")
    if kind not in ("floor", "wall", "obstacle", "stairs"):
        if not isinstance(fid, str) or not fid:
            raise MapError(file, where, "needs a non-empty string property 'id'")
        if not ID_PATTERN.fullmatch(fid):
            shown = repr(fid[:40]) + ("…" if len(fid) > 40 else "")
            raise MapError(file, where, f"property 'id' {shown} is not a safe id: use {ID_RULE}")
        if fid in seen:
            raise MapError(file, where, "duplicate id; ids must be unique in a map")
        seen.add(fid)
    if kind in ("floor", "zone", "obstacle", "stairs"):
        if shape.geom_type not in ("Polygon", "MultiPolygon"):
            raise MapError(file, where, f"a {kind} must be a Polygon or MultiPolygon")
        if not shape.is_valid:
            raise MapError(
                file, where, f"invalid polygon ({explain_validity(shape)}); fix the ring"
            )
        if shape.area <= 0:
            raise MapError(file, where, "polygon has no area")
    if kind == "floor":
        if level in store.floors:
            raise MapError(file, where, f"a second floor outline for level {level}; merge them")
        store.floors[level] = shape
    elif kind in ("obstacle", "stairs"):  # not walkable (shelves); where levels connect
        (store.obstacles if kind == "obstacle" else store.stairs).append((level, shape))
    elif kind == "wall":
        if shape.geom_type not in ("LineString", "MultiLineString"):
            raise MapError(file, where, "a wall must be a LineString or MultiLineString")
        loss = _opt_number(props, "attenuation_db", file, where)
        if loss is not None and loss > 40:
            raise MapError(file, where, "attenuation_db above 40 dB is not a wall but a vault")
        store.walls.append(Wall(shape, 5.0 if loss is None else loss, level))
    elif kind == "zone":
        assert isinstance(fid, str)
        store.zones.append(
            Zone(
                id=fid,
                name=str(props.get("name", fid)),
                category=str(props.get("category", "")),
                shape=shape,
                dwell_s=_opt_number(props, "dwell_s", file, where),
                hysteresis_m=_opt_number(props, "hysteresis_m", file, where),
                priority=int(_opt_number(props, "priority", file, where) or 0),
                level=level,
            )
        )
    else:
        if shape.geom_type != "Point":
            raise MapError(file, where, f"a {kind} must be a Point")
        assert isinstance(fid, str)
        if kind == "gateway":
            _add_receiver(store, fid, shape, props, level, file, where)
        else:
            store.anchors.append(
                Anchor(
                    fid,
                    shape.x,
                    shape.y,
                    _anchor_identity(props, file, where),
                    str(props.get("profile", "generic-ibeacon")),
                    level,
                )
            )


def _add_receiver(
    store: StoreMap,
    fid: str,
    shape: BaseGeometry,
    props: dict[str, Any],
    level: int,
    file: str,
    where: str,
) -> None:
    power = props.get("measured_power")
    exponent = _opt_number(props, "path_loss_exponent", file, where)
    if power is not None and (
        isinstance(power, bool)
        or not isinstance(power, (int, float))
        or not math.isfinite(power)
        or not -120 <= power <= 0
    ):
        raise MapError(file, where, "measured_power must be a number of dBm, -120..0")
    if exponent is not None and not 1.0 <= exponent <= 6.0:
        raise MapError(file, where, "path_loss_exponent must be between 1.0 and 6.0")
    store.receivers[fid] = (shape.x, shape.y)
    store.receiver_levels[fid] = level
    if power is not None or exponent is not None:
        store.calibration[fid] = (None if power is None else float(power), exponent)


_ANCHOR_IDS = {
    # map property → what its value must look like
    "ibeacon": "uuid:major:minor, e.g. 'f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:7'",
    "eddystone_uid": "namespace:instance in hex (20 and 12 digits)",
    "altbeacon": "the 20-byte beacon id in hex (40 digits)",
}


def _anchor_identity(props: dict[str, Any], file: str, where: str) -> str:
    """The frame identity a fixed beacon advertises, normalised like the decoder's."""
    given = [k for k in _ANCHOR_IDS if k in props]
    if len(given) != 1:
        raise MapError(
            file, where, "a beacon needs exactly one of 'ibeacon', 'eddystone_uid', 'altbeacon'"
        )
    kind = given[0]
    value = props[kind]
    ok = isinstance(value, str)
    if ok and kind == "ibeacon":
        parts = value.lower().split(":")
        ok = len(parts) == 3 and len(parts[0]) == 36 and parts[1].isdigit() and parts[2].isdigit()
        if ok:
            ok = int(parts[1]) < 65536 and int(parts[2]) < 65536
            value = f"{parts[0]}:{int(parts[1])}:{int(parts[2])}"
    elif ok and kind == "eddystone_uid":
        parts = value.lower().split(":")
        ok = (
            len(parts) == 2
            and len(parts[0]) == 20
            and len(parts[1]) == 12
            and _is_hex("".join(parts))
        )
        value = value.lower()
    elif ok:
        ok = len(value) == 40 and _is_hex(value)
        value = value.lower()
    if not ok:
        raise MapError(file, where, f"bad {kind!r}: expected {_ANCHOR_IDS[kind]}")
    return f"{kind}:{value}"


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _opt_number(props: dict[str, Any], key: str, file: str, where: str) -> float | None:
    value = props.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MapError(file, where, f"property {key!r} must be a finite number")
    if value < 0:
        raise MapError(file, where, f"property {key!r} must not be negative")
    return float(value)


def load_map(path: Path, require_zones: bool = True) -> StoreMap:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MapError(str(path), "", "file not found; check [map] path in the config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MapError(str(path), "", f"not readable JSON: {exc}") from None
    return parse_map(data, str(path), require_zones)
