"""Stand-alone tools for installers and integrators: decode adverts, locate devices, compute
Eddystone-EIDs and check RPAs, the config reference and template, the console password."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli._common import add_optional_config, bad_input

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


def _cmd_decode(args: argparse.Namespace) -> int:
    from gateway.decode.ble import decode_payload
    from gateway.decode.frames import frame_json

    # Payloads repeat: each distinct input line is decoded and encoded once (bounded memory),
    # and output is written in blocks rather than one write per line.
    seen: dict[str, str] = {
        "": json.dumps({"frame": None, "reason": "empty"}) + "\n",
    }
    not_hex = json.dumps({"frame": None, "reason": "not_hex"}) + "\n"
    out: list[str] = []
    write = sys.stdout.write
    for raw in sys.stdin:  # exactly one output line per input line, blank ones included
        text = raw.strip()
        line = seen.get(text)
        if line is None:
            try:
                payload = bytes.fromhex(text)
            except ValueError:
                line = not_hex
            else:
                line = json.dumps(frame_json(*decode_payload(payload))) + "\n"
            if len(seen) >= 65536:
                seen = {"": seen[""]}
            seen[text] = line
        out.append(line)
        if len(out) >= 4096:
            write("".join(out))
            out.clear()
    write("".join(out))
    return 0


def _cmd_locate(args: argparse.Namespace) -> int:
    """Sightings on stdin → one position estimate per device per instant on stdout."""
    from gateway.config.sections import load_config
    from gateway.ops.locate import LocateStats, locate, make_tracker
    from gateway.pipeline.tracking import load_survey
    from gateway.site.storemap import MapError, load_map
    from gateway.zones.tracker import ZoneTracker

    config = load_config(args.config)
    store = load_map(Path(args.map), require_zones=False)
    try:
        survey = load_survey(args.survey) if args.survey else None
        tracker = make_tracker(config, store, args.method, survey)
    except MapError as e:
        print(f"gateway locate: {e}", file=sys.stderr)
        return 2
    zones = None
    if store.zones:
        zones = ZoneTracker(store.zones, hysteresis_m=0.0, dwell_s=0.0, min_inside_s=0.0)
    stats = LocateStats()
    errors: list[str] = []
    shown = 0

    def report() -> None:
        nonlocal shown
        for error in errors:
            shown += 1
            if shown <= MAX_REPORTED_LINES:
                print(f"gateway locate: {error}", file=sys.stderr)
        errors.clear()

    for estimate in locate(sys.stdin, tracker, zones, stats, errors):
        sys.stdout.write(json.dumps(estimate) + "\n")
        report()
    report()
    if shown > MAX_REPORTED_LINES:
        print(
            f"gateway locate: … and {shown - MAX_REPORTED_LINES} more rejected lines",
            file=sys.stderr,
        )
    if stats.rejected:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.rejected.items()))
        print(
            f"gateway locate: {stats.lines} lines, {stats.estimates} estimates; "
            f"rejected {sum(stats.rejected.values())} lines ({reasons})",
            file=sys.stderr,
        )
        return 2
    return 0


# Rejected lines named one by one on stderr; the rest are counted by reason.
MAX_REPORTED_LINES = 20


def _cmd_eid(args: argparse.Namespace) -> int:
    """Eddystone-EID of an identity key at a beacon time: 16 lower-case hex digits."""
    from gateway.identity.rotating import eid

    try:
        ik = _hex_key(args.ik, "ik")
        k = _whole(args.k, "k")
        t = _whole(args.t, "t")
        print(eid(ik, k, t).hex())
    except ValueError as exc:
        return bad_input(str(exc))
    return 0


def _cmd_rpa(args: argparse.Namespace) -> int:
    """Does a resolvable private address belong to an IRK? Prints match or no-match."""
    from gateway.identity.rotating import parse_address, rpa_matches

    try:
        irk = _hex_key(args.irk, "irk")
        address = parse_address(args.address)
    except ValueError as exc:
        return bad_input(str(exc))
    print("match" if rpa_matches(irk, address) else "no-match")
    return 0


def _hex_key(text: str, name: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"--{name} must be 32 hex digits, got {text!r}") from None
    if len(key) != 16:
        raise ValueError(f"--{name} must be 32 hex digits (16 bytes), got {len(key)} bytes")
    return key


def _whole(text: str, name: str) -> int:
    """A whole number (integral floats like '2000.0' are accepted)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--{name} must be a whole number, got {text!r}") from None
    if not value.is_integer():
        raise ValueError(f"--{name} must be a whole number, got {text!r}")
    return int(value) if abs(value) < 2**53 else int(text)


def _cmd_config_doc(args: argparse.Namespace) -> int:
    sys.stdout.write(config_reference())
    return 0


def config_reference() -> str:
    from gateway.config.schema import describe

    lines = [
        "# Configuration reference",
        "",
        "`gateway run --config FILE` reads one TOML file. Every key is optional: the defaults",
        "below run the demo store. Relative paths resolve against the config file's directory.",
        "An unknown key, a wrong type or an out-of-range value stops start-up with one line",
        "naming the file and the key, and exit code 2. This page is generated by",
        "`gateway config-doc`; a test fails when it is out of date.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    from gateway.config.sections import Config

    for key, type_name, default, text in describe(Config):
        default_cell = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | {type_name} | {default_cell} | {text} |")
    return "\n".join(lines) + "\n"


def _cmd_config_template(args: argparse.Namespace) -> int:
    """A commented config for a fresh install, with freshly generated secrets."""
    import secrets

    from gateway.config.reference import config_template

    keys = {
        "gateway.pseudonym_key": secrets.token_hex(32),
        "nfc.loyalty_key": secrets.token_hex(32),
    }
    sys.stdout.write(config_template(args.state_dir, keys))
    return 0


def _cmd_console_password(args: argparse.Namespace) -> int:
    """Hash a staff password for [console] password_hash (the password is never stored)."""
    import getpass

    from gateway.web.auth import hash_password  # at the console's current scrypt parameters

    if sys.stdin.isatty():
        password = getpass.getpass("Staff password: ")
        if getpass.getpass("Again: ") != password:
            print("gateway console-password: the two entries differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 10:
        print("gateway console-password: use at least 10 characters", file=sys.stderr)
        return 2
    print(f'password_hash = "{hash_password(password)}"')
    return 0


def add_console_password(sub: Subparsers) -> None:
    p = sub.add_parser("console-password", help="hash a staff password for [console] password_hash")
    p.set_defaults(func=_cmd_console_password)


def add_eid(sub: Subparsers) -> None:
    p = sub.add_parser("eid", help="compute an Eddystone-EID (16 hex digits)")
    p.add_argument("--ik", required=True, help="identity key, 32 hex digits")
    p.add_argument("--k", required=True, help="rotation exponent 0..15")
    p.add_argument("--t", required=True, help="beacon time counter in seconds")
    p.set_defaults(func=_cmd_eid)


def add_rpa(sub: Subparsers) -> None:
    p = sub.add_parser("rpa", help="check a resolvable private address against an IRK")
    p.add_argument("--irk", required=True, help="identity resolving key, 32 hex digits (MSB first)")
    p.add_argument("--address", required=True, help="AA:BB:CC:DD:EE:FF")
    p.set_defaults(func=_cmd_rpa)


def add_config_doc(sub: Subparsers) -> None:
    p = sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    p.set_defaults(func=_cmd_config_doc)


def add_config_template(sub: Subparsers) -> None:
    p = sub.add_parser(
        "config-template", help="print a commented config with fresh secrets (for installs)"
    )
    p.add_argument("--state-dir", default="/var/lib/proximity-gateway")
    p.set_defaults(func=_cmd_config_template)


def add_locate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "locate",
        help="sightings or a trace (JSON lines) on stdin → position estimates; exit 2 if any "
        "line was rejected",
    )
    p.add_argument("--map", required=True, help="store map (GeoJSON) with gateway receivers")
    p.add_argument(
        "--method",
        choices=["max_likelihood", "least_squares", "weighted_centroid", "nearest", "grid"],
        default=None,
        help="default: the config's presence.method (max_likelihood); 'grid' tracks over the "
        "map's walkable grid (walls, obstacles, walking speed)",
    )
    p.add_argument(
        "--survey",
        metavar="SITE.json",
        default=None,
        help="site survey (`gateway survey`); default: the config's presence.survey",
    )
    add_optional_config(p, "the presence settings")
    p.set_defaults(func=_cmd_locate, config_mode="optional")


def add_decode(sub: Subparsers) -> None:
    p = sub.add_parser("decode", help="decode hex advertising data from stdin, JSON per line")
    p.set_defaults(func=_cmd_decode)
