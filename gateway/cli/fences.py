"""`gateway fences`: check store maps, draw floor plans."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli._common import add_optional_config, bad_input

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


def _cmd_fences_check(args: argparse.Namespace) -> int:
    """Every problem of each map, one line each; exit 2 if any is an error."""
    from gateway.site.check import check_file

    errors = warnings = 0
    for name in args.files:
        store, findings = check_file(Path(name))
        for finding in findings:
            print(finding.line(name))
        n_errors = sum(1 for f in findings if f.severity == "error")
        errors += n_errors
        warnings += len(findings) - n_errors
        if store is not None and not n_errors:
            print(
                f"{name}: ok: {len(store.zones)} zones, {len(store.receivers)} gateways, "
                f"{len(store.anchors)} beacons, {len(store.walls)} walls, "
                f"levels {', '.join(str(level) for level in store.levels)}"
            )
    print(f"{errors} errors, {warnings} warnings", file=sys.stderr)
    return 2 if errors else 0


def _cmd_fences_render(args: argparse.Namespace) -> int:
    from gateway.config.sections import Config, load_config
    from gateway.ops.tracks import trace_tracks
    from gateway.site.render import plan_scene, render
    from gateway.site.storemap import load_map

    config = load_config(args.config) if args.config else Config()
    store = load_map(Path(args.file), require_zones=False)
    output = Path(args.output)
    if output.suffix.lower() not in (".svg", ".png"):
        return bad_input(f"{output}: use a .svg or .png file name")
    tracks = None
    if args.trace:
        trace = Path(args.trace)
        if not trace.exists():
            return bad_input(f"{trace}: trace not found")
        tracks = trace_tracks(config, store, trace)
    scene = plan_scene(store, tracks, args.scale)
    try:
        render(scene, output)
    except OSError as exc:
        return bad_input(f"-o {output}: {exc.strerror or exc}")
    what = f" with {len(tracks)} device tracks" if tracks else ""
    print(f"wrote {output} ({scene.width}×{scene.height} px){what}")
    return 0


def _cmd_fences_from_wgs84(args: argparse.Namespace) -> int:
    """A map drawn in longitude/latitude → the same map in local metres, then checked."""
    import json

    from gateway.site.check import check_data
    from gateway.site.wgs84 import to_local_metres

    source, output = Path(args.file), Path(args.output)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return bad_input(f"{source}: not readable JSON: {exc}")
    origin = None
    if args.origin:
        try:
            lon, lat = (float(v) for v in args.origin.split(","))
        except ValueError:
            return bad_input(f"--origin {args.origin!r}: expected LONGITUDE,LATITUDE")
        origin = (lon, lat)
    try:
        converted = to_local_metres(data, origin)
    except ValueError as exc:
        return bad_input(f"{source}: {exc}")
    try:
        output.write_text(json.dumps(converted, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        return bad_input(f"-o {output}: {exc.strerror or exc}")
    x0, y0 = converted["properties"]["wgs84_origin"]
    print(f"wrote {output}: metres east and north of ({x0}, {y0}); checking it:")
    _store, findings = check_data(converted, str(output))
    for finding in findings:
        print(finding.line(str(output)))
    return 2 if any(f.severity == "error" for f in findings) else 0


def add_fences(sub: Subparsers) -> None:
    fences = sub.add_parser("fences", help="store maps (GeoJSON geofences)")
    fences_sub = fences.add_subparsers(dest="fences_command", required=True)
    p = fences_sub.add_parser("check", help="report every problem of store maps; exit 2 on errors")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_fences_check)
    p = fences_sub.add_parser("render", help="draw a floor plan (SVG or PNG), optionally tracks")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, help="plan.svg or plan.png")
    p.add_argument("--trace", help="a recorded trace: draw the estimated device tracks")
    # Optional: without one the plan is drawn with the built-in presence settings.
    add_optional_config(p, "the presence settings")
    p.add_argument("--scale", type=float, help="pixels per metre (default: fit ~900 px)")
    p.set_defaults(func=_cmd_fences_render, config_mode="optional")
    p = fences_sub.add_parser(
        "from-wgs84",
        help="convert a map drawn in longitude/latitude (geojson.io) to local metres",
    )
    p.add_argument("file", metavar="FILE", help="the map in WGS84 degrees")
    p.add_argument("-o", "--output", required=True, help="the map in metres to write")
    p.add_argument(
        "--origin",
        metavar="LON,LAT",
        help="the point that becomes (0, 0) (default: the south-west corner of the map)",
    )
    p.set_defaults(func=_cmd_fences_from_wgs84)
