"""`gateway survey`: learn this room's radio from walks with known positions (site survey)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli._common import add_optional_config

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers

MAX_REPORTED_LINES = 20


def _cmd_survey(args: argparse.Namespace) -> int:
    from gateway.config.sections import load_config
    from gateway.presence.survey import Reading, SurveyError, fit_survey, parse_walk
    from gateway.site.hardware import load_beacon_profile
    from gateway.site.storemap import load_map

    config = load_config(args.config)
    store = load_map(Path(args.map), require_zones=False)
    if not store.receivers:
        print(f"gateway survey: {args.map}: no gateway receivers on the map", file=sys.stderr)
        return 2
    readings: list[Reading] = []
    bad = 0
    for index, name in enumerate(args.walks):
        try:
            with open(name, encoding="utf-8", errors="replace") as f:
                got, errors = parse_walk(f, walk=index, only_device=args.device)
        except OSError as e:
            print(f"gateway survey: {name}: {e.strerror}", file=sys.stderr)
            return 2
        for error in errors:
            bad += 1
            if bad <= MAX_REPORTED_LINES:
                print(f"gateway survey: {name} {error} (skipped)", file=sys.stderr)
        readings += got
    if bad > MAX_REPORTED_LINES:
        print(f"gateway survey: … and {bad - MAX_REPORTED_LINES} more bad lines", file=sys.stderr)
    unknown = sorted({r.receiver for r in readings} - set(store.receivers))
    if unknown:
        print(
            "gateway survey: receivers not on the map, their readings ignored: "
            + ", ".join(unknown),
            file=sys.stderr,
        )
    profile = load_beacon_profile(config.presence.device_profile)
    nominal = (
        config.presence.measured_power or profile.measured_power_dbm,
        config.presence.path_loss_exponent or profile.path_loss_exponent,
    )
    try:
        survey = fit_survey(readings, store.receivers, store.bounds, nominal)
    except SurveyError as e:
        print(f"gateway survey: {e}", file=sys.stderr)
        return 2
    Path(args.output).write_text(json.dumps(survey.to_json()) + "\n")
    print(
        f"{survey.readings} readings from {survey.walks} walk(s); {bad} bad line(s) skipped; "
        f"radio map {survey.shape[0]} × {survey.shape[1]} nodes every {survey.step:g} m, "
        f"smoothed over {survey.bandwidth:g} m (the width that best predicted held-out stretches)"
    )
    print(f"{'receiver':<16} {'P@1m dBm':>9} {'exponent':>9} {'spread dB':>10} {'readings':>9}")
    for rid, fit in sorted(survey.receivers.items()):
        print(
            f"{rid:<16} {fit.power_dbm:9.1f} {fit.exponent:9.2f} {fit.spread_db:10.1f} "
            f"{fit.readings:9d}"
        )
    held = survey.held_out
    print(
        "held-out RMS error (each fifth of each walk predicted from the rest): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f} dB" for k, v in held.items())
    )
    print(f"wrote {args.output}; use it with `gateway locate --survey` or [presence] survey")
    return 0


def add_survey(sub: Subparsers) -> None:
    p = sub.add_parser(
        "survey",
        help="walks with known positions (JSON lines) → this room's radio model (SITE.json); "
        "exit 2 if the walks cannot support it",
    )
    p.add_argument("walks", nargs="+", metavar="WALK.jsonl", help="survey walks")
    p.add_argument("--map", required=True, help="store map (GeoJSON) with gateway receivers")
    p.add_argument("-o", "--output", required=True, metavar="SITE.json")
    p.add_argument(
        "--device",
        default=None,
        help="keep only this device's readings (the surveyed tag or phone, as the trace "
        "names it); default: every reading",
    )
    add_optional_config(p, "the presence settings")
    p.set_defaults(func=_cmd_survey, config_mode="optional")
