"""`gateway fences check`: every problem of a store map at once, each with what to fix.

The loader (`storemap.parse_map`) already refuses structurally broken features; here it runs
in collecting mode and the map as a whole is then checked for what makes it *wrong* rather
than unreadable: devices placed off the floor, zones that overlap without saying which wins,
hardware profiles that do not exist, levels without receivers.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shapely import STRtree
from shapely.geometry import Point

from gateway.config.schema import ConfigError
from gateway.site.hardware import load_beacon_profile
from gateway.site.storemap import (
    FEATURE_PROPERTIES,
    MAP_PROPERTIES,
    ZONE_CATEGORIES,
    MapError,
    StoreMap,
    degrees_problem,
    parse_map,
)

Severity = Literal["error", "warning"]
# Overlaps smaller than this (m²) are drawing slop along a shared edge, not real overlaps.
OVERLAP_TOLERANCE_M2 = 0.05
# Zones that are meant to lie (partly) outside the floor: the pavement in front of a window.
OUTDOOR_CATEGORIES = frozenset(("window", "outdoor", "pavement"))
# Maps are in metres. A shop floor wider than this, or a zone narrower than the other bound,
# is most likely drawn in other units (millimetres, degrees): positions and dwell would be
# meaningless even though every geometry is valid.
# The largest hypermarkets are ~300 m across: a map wider than this is in another unit (a
# 12 x 8 m shop drawn in centimetres is 1,200 units wide).
LARGEST_PLAUSIBLE_M = 500.0
MIN_RECEIVERS_TO_PLACE = 3  # a 2-D position from distances needs three
SMALLEST_ZONE_SIDE_M = 0.05


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    where: str  # "feature 'aisle-3' (#12)", or "" for the map as a whole
    problem: str

    def line(self, file: str) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{file}: {self.severity}: {where}{self.problem}"


def check_file(path: Path) -> tuple[StoreMap | None, list[Finding]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [Finding("error", "", "file not found")]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [Finding("error", "", f"not readable JSON: {exc}")]
    return check_data(data, str(path))


def check_data(data: object, file: str) -> tuple[StoreMap | None, list[Finding]]:
    problems: list[MapError] = []
    try:
        store = parse_map(data, file, problems=problems)
    except MapError as fatal:  # not even a FeatureCollection
        return None, [Finding("error", fatal.where, fatal.problem)]
    findings = [Finding("error", p.where, p.problem) for p in problems]
    findings += _properties(data)
    findings += check_store(store)
    return store, findings


def _hint(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _properties(data: Any) -> list[Finding]:
    """Properties nobody reads: a typo (`dwel_s`) would silently fall back to the default."""
    out: list[Finding] = []
    top = data.get("properties") or {} if isinstance(data, dict) else {}
    for name in top if isinstance(top, dict) else {}:
        if name not in MAP_PROPERTIES:
            out.append(
                Finding(
                    "warning",
                    "properties",
                    f"unknown map property {name!r}; {_hint(name, MAP_PROPERTIES)}"
                    f"known: {', '.join(MAP_PROPERTIES)}",
                )
            )
    features = data.get("features") if isinstance(data, dict) else None
    for index, feature in enumerate(features if isinstance(features, list) else []):
        props = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or props.get("kind") not in FEATURE_PROPERTIES:
            continue  # the loader reports those
        known = FEATURE_PROPERTIES[props["kind"]]
        fid = props.get("id")
        where = f"feature {fid!r} (#{index})" if fid is not None else f"feature #{index}"
        for name in props:
            if name not in known:
                out.append(
                    Finding(
                        "warning",
                        where,
                        f"unknown {props['kind']} property {name!r} is ignored; "
                        f"{_hint(name, known)}known: {', '.join(known)}",
                    )
                )
    return out


def check_store(store: StoreMap) -> list[Finding]:
    findings: list[Finding] = []
    findings += _placement(store)
    findings += _overlaps(store)
    findings += _profiles(store)
    findings += _levels(store)
    findings += _scale(store)
    findings += _categories(store)
    return findings


def _categories(store: StoreMap) -> list[Finding]:
    """Zone categories must be known or declared: a typo loses what the category does."""
    known = ZONE_CATEGORIES + store.categories
    out: list[Finding] = []
    for zone in store.zones:
        if zone.category and zone.category not in known:
            out.append(
                Finding(
                    "error",
                    f"feature {zone.id!r}",
                    f"unknown zone category {zone.category!r}; {_hint(zone.category, known)}"
                    f"known: {', '.join(known)} (a category of your own: list it in the "
                    "collection's properties.categories)",
                )
            )
    return out


def _scale(store: StoreMap) -> list[Finding]:
    """Coordinates are metres: warn when the map cannot be a shop drawn in metres."""
    out: list[Finding] = []
    if not store.zones and not store.floors:
        return out  # nothing drawn: other findings say so
    if degrees_problem(store) is not None:
        return out  # the loader's error says what is wrong; tiny zones follow from it
    minx, miny, maxx, maxy = store.bounds
    extent = max(maxx - minx, maxy - miny)
    if extent > LARGEST_PLAUSIBLE_M:
        out.append(
            Finding(
                "warning",
                "",
                f"the map spans {extent:,.0f} units; coordinates are metres from the store's "
                "origin: is it drawn in millimetres or another unit? rescale it to metres",
            )
        )
    for zone in store.zones:
        zminx, zminy, zmaxx, zmaxy = zone.shape.bounds
        side = min(zmaxx - zminx, zmaxy - zminy)
        if 0 < side < SMALLEST_ZONE_SIDE_M and zone.shape.area > 0:
            out.append(
                Finding(
                    "warning",
                    f"zone {zone.id!r}",
                    f"is {side:.3g} m across at its narrowest: too small to be reached; "
                    "is the map drawn in kilometres or degrees? rescale it to metres",
                )
            )
    return out


def _placement(store: StoreMap) -> list[Finding]:
    out: list[Finding] = []
    if not store.floors:
        out.append(
            Finding(
                "warning",
                "",
                "no 'floor' feature: positions are bounded by the zones' extent; "
                "add the sales floor outline as kind 'floor'",
            )
        )
        return out
    for anchor in store.anchors:
        floor = store.floors.get(anchor.level)
        if floor is not None and not floor.buffer(0.01).contains(Point(anchor.x, anchor.y)):
            out.append(
                Finding(
                    "error",
                    f"feature {anchor.id!r}",
                    f"beacon at ({anchor.x:g}, {anchor.y:g}) is outside the level "
                    f"{anchor.level} floor; move it onto the floor or fix its 'level'",
                )
            )
    for receiver, (x, y) in store.receivers.items():
        level = store.receiver_levels.get(receiver, 0)
        floor = store.floors.get(level)
        # A receiver may sit a little outside (in a window, over the door): 3 m of slack.
        if floor is not None and floor.distance(Point(x, y)) > 3.0:
            out.append(
                Finding(
                    "warning",
                    f"feature {receiver!r}",
                    f"gateway at ({x:g}, {y:g}) is more than 3 m off the level {level} floor; "
                    "check its coordinates",
                )
            )
    for zone in store.zones:
        floor = store.floors.get(zone.level)
        if floor is None or zone.category in OUTDOOR_CATEGORIES:
            continue
        outside = zone.shape.difference(floor).area
        if outside > 0.5 and outside > 0.2 * zone.shape.area:
            out.append(
                Finding(
                    "warning",
                    f"feature {zone.id!r}",
                    f"{outside:.1f} m² of the zone lies outside the level {zone.level} floor "
                    "(fine for a pavement zone in front of a window; otherwise fix the polygon)",
                )
            )
    return out


def _overlaps(store: StoreMap) -> list[Finding]:
    out: list[Finding] = []
    zones = store.zones
    if len(zones) < 2:
        return out
    tree = STRtree([z.shape for z in zones])
    left, right = tree.query([z.shape for z in zones], predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i >= j:
            continue
        a, b = zones[i], zones[j]
        if a.level != b.level or a.priority != b.priority:
            continue
        shared = a.shape.intersection(b.shape).area
        if shared <= OVERLAP_TOLERANCE_M2:
            continue
        out.append(
            Finding(
                "error",
                f"feature {a.id!r}",
                f"overlaps zone {b.id!r} by {shared:.2f} m² with the same priority "
                f"({a.priority}); give the zone that should win a higher 'priority', "
                "or make them disjoint",
            )
        )
    return out


def _profiles(store: StoreMap) -> list[Finding]:
    out: list[Finding] = []
    checked: dict[str, str | None] = {}
    for anchor in store.anchors:
        if anchor.profile not in checked:
            try:
                load_beacon_profile(anchor.profile)
                checked[anchor.profile] = None
            except ConfigError as exc:
                checked[anchor.profile] = exc.problem
        problem = checked[anchor.profile]
        if problem is not None:
            out.append(
                Finding(
                    "error",
                    f"feature {anchor.id!r}",
                    f"profile {anchor.profile!r}: {problem}; use a file name (without .toml) "
                    "from firmware_profiles/beacons/",
                )
            )
    return out


def _levels(store: StoreMap) -> list[Finding]:
    out: list[Finding] = []
    receiver_levels = set(store.receiver_levels.values())
    for level in store.levels:
        if level not in receiver_levels and any(z.level == level for z in store.zones):
            out.append(
                Finding(
                    "error",
                    f"level {level}",
                    "has zones but no gateway (receiver) on it: nobody on this level can be "
                    "placed; add a gateway feature with this 'level'",
                )
            )
    for level in sorted(receiver_levels):
        count = sum(1 for lv in store.receiver_levels.values() if lv == level)
        zoned = sum(1 for z in store.zones if z.level == level)
        if count < MIN_RECEIVERS_TO_PLACE and zoned > count:
            out.append(
                Finding(
                    "warning",
                    f"level {level}",
                    f"has {count} gateway (receiver) feature(s) for {zoned} zones: a position "
                    f"needs {MIN_RECEIVERS_TO_PLACE} receivers that hear the shopper, so most "
                    "zones can never be entered; add receivers (docs/maps.md)",
                )
            )
    if len(store.levels) > 1:
        for level in store.levels:
            if level not in store.floors:
                out.append(Finding("warning", f"level {level}", "has no 'floor' outline; add one"))
    return out
