"""The `gateway` command line.

Exit codes: 0 success, 1 a runtime failure, 2 bad input (config, map, arguments) with one
line on stderr naming the file, key and fix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.clock import Clock, SystemClock
from gateway.config.schema import ConfigError, describe
from gateway.config.sections import load_config
from gateway.humantime import duration, local_datetime
from gateway.model import Advert
from gateway.site.storemap import MapError


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.ops.demo import run_demo

    try:
        run_demo(
            args.speed,
            Path(args.state) if args.state else None,
            sys.stdout,
            clock=SystemClock(),
            keep_times=args.keep_times,
            start=args.start or "",
        )
    except ValueError as exc:
        return _bad_input(f"--start {exc}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """The daemon (systemd runs this): until SIGTERM, or with --once until the replay ends."""
    from gateway.service.process import run_service

    return run_service(args.config, once=args.once, verbose=args.verbose)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """A timed measurement of a known beacon at a known distance from a receiver."""
    from gateway.decode import ble as decode
    from gateway.presence import calibration
    from gateway.site.hardware import load_beacon_profile
    from gateway.site.storemap import load_map
    from gateway.store import calibration as calibration_file

    config = load_config(args.config)
    store = load_map(config.resolve(config.map.path))
    anchor = next((a for a in store.anchors if a.id == args.beacon), None)
    if anchor is None:
        known = ", ".join(a.id for a in store.anchors) or "none"
        print(
            f"gateway calibrate: no beacon {args.beacon!r} in the map (known: {known})",
            file=sys.stderr,
        )
        return 2
    if args.distance <= 0 or args.distance > 20:
        print("gateway calibrate: --distance must be between 0 and 20 m", file=sys.stderr)
        return 2
    profile = load_beacon_profile(anchor.profile)
    clock = SystemClock()
    calibrator = calibration.Calibrator(
        anchor.id, args.distance, profile.measured_power_dbm, profile.path_loss_exponent
    )

    def on_advert(advert: Advert) -> None:
        frame, _reason = decode.decode_advert(advert)
        wanted = args.receiver is None or advert.receiver == args.receiver
        if frame is not None and frame.identity == anchor.identity and wanted:
            calibrator.add(advert.receiver, advert.rssi)

    print(
        f"Calibrating {anchor.id} ({profile.vendor} {profile.model}, nominal "
        f"{profile.measured_power_dbm:.0f} dBm at 1 m). Hold it {args.distance:g} m from "
        f"{args.receiver or 'the gateway'}, in line of sight, and keep still.",
        file=sys.stderr,
    )
    if args.trace:
        from gateway.trace import parse_line

        with open(args.trace, encoding="utf-8") as lines:
            for number, text in enumerate(lines, start=1):
                item = parse_line(text, number)
                if isinstance(item, Advert):
                    on_advert(item)
    else:
        if not config.sources.ble:
            raise ConfigError(
                args.config, "sources.ble", "no BLE adapter configured to listen with"
            )
        asyncio.run(_listen(config, args.seconds, on_advert, calibrator, clock))
    result = calibrator.result(args.receiver)
    if result is None:
        print(f"gateway calibrate: {anchor.id} was not heard", file=sys.stderr)
        return 1
    print(
        f"{result.receiver}: {result.samples} readings, median {result.median_dbm:.1f} dBm "
        f"(p10 {result.p10_dbm:.1f}, p90 {result.p90_dbm:.1f}, spread {result.spread_db:.1f} dB)"
        f"\n  at 1 m: {result.measured_power_dbm:.1f} dBm; nominal "
        f"{result.nominal_power_dbm:.1f} → receiver offset {result.offset_db:+.1f} dB"
    )
    problems = result.problems()
    for problem in problems:
        print(f"  not saved: {problem}", file=sys.stderr)
    if problems:
        return 1
    if args.dry_run:
        return 0
    path = calibration_file.save(config.state_path, result, clock.wall())
    print(f"  saved to {path}; applied at the next start or reload (systemctl reload)")
    return 0


async def _listen(
    config: Any, seconds: float, on_advert: Any, calibrator: Any, clock: Clock
) -> None:
    """Scan with every configured adapter for `seconds`, drawing a progress bar."""
    from gateway.sources.ble import BleSource

    def emit(item: object) -> None:
        if isinstance(item, Advert):
            on_advert(item)

    scanners = [
        BleSource(name, settings, settings.receiver or config.gateway.id, emit, clock)
        for name, settings in config.sources.ble.items()
    ]
    tasks = [asyncio.create_task(s.run()) for s in scanners]
    started = clock.monotonic()
    tty = sys.stderr.isatty()
    last_line = -5.0
    try:
        while (elapsed := clock.monotonic() - started) < seconds:
            await asyncio.sleep(0.25)
            if tty or elapsed - last_line >= 5:
                last_line = elapsed
                done = int(30 * min(1.0, elapsed / seconds))
                bar = "#" * done + "." * (30 - done)
                start = "\r" if tty else ""
                print(
                    f"{start}[{bar}] {elapsed:4.0f}/{seconds:.0f} s  {calibrator.count()} readings",
                    end="" if tty else "\n",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tty:
            print(file=sys.stderr)


def _cmd_console_password(args: argparse.Namespace) -> int:
    """Hash a staff password for [console] password_hash (the password is never stored)."""
    import getpass

    from gateway.config.secrets import hash_password

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


def _cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.ops.doctor import FAIL, run_checks

    checks = run_checks(args.config, SystemClock(), timeout_s=args.timeout)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=1))
    else:
        for check in checks:
            print(check.line())
    failed = [c.name for c in checks if c.status == FAIL]
    if not args.json:
        print(f"\n{len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_status(args: argparse.Namespace) -> int:
    """Ask the running daemon (its control endpoint) what it is doing."""
    import httpx

    from gateway.config.edges import host_port

    config = load_config(args.config)
    if not config.service.control_listen:
        raise ConfigError(args.config, "service.control_listen", "is off; set it to ask the daemon")
    host, port = host_port(config.service.control_listen)
    host = f"[{host}]" if ":" in host else host
    from gateway.store.token import read_token

    token = read_token(config.state_path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(f"http://{host}:{port}/status", timeout=5.0, headers=headers)
        reply.raise_for_status()
    except httpx.HTTPError as exc:
        print(
            f"gateway status: no daemon answering on {config.service.control_listen} ({exc}); "
            "is the service running? (systemctl status proximity-gateway)",
            file=sys.stderr,
        )
        return 1
    data = reply.json()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(_status_text(data, ZoneInfo(config.gateway.timezone)))
    return 0


def _status_text(data: dict[str, Any], tz: ZoneInfo) -> str:
    """The daemon's status for a person: store-local times, durations in words."""
    ready = "ready" if data["ready"] else "STARTING"
    lines = [
        f"{data['gateway']} @ {data['store']}  v{data['version']}  {ready}  "
        f"up {duration(data['uptime_s'])} (since {local_datetime(data['started_at'], tz)})",
    ]
    src = data["sources"]
    rates = ", ".join(f"{r} {v:.1f}/s" for r, v in src["rates_per_s"].items()) or "no adverts yet"
    lines.append(f"  sources   {rates}")
    for name, state in {**src["ble_adapters"], **src["nfc_readers"]}.items():
        lines.append(f"            {name}: {state}")
    zones = ", ".join(f"{z} {n}" for z, n in data["zones"].items()) or "nobody in a zone"
    lines.append(f"  devices   {data['tracked_devices']} tracked; {zones}")
    for offer in data["last_offers"][:5]:
        what = "ISSUED" if offer["issued"] else f"suppressed ({offer['reason']})"
        when = local_datetime(offer["t"], tz)
        lines.append(f"  offer     {when} {offer['profile'] or '-'} {offer['trigger']}: {what}")
    out = data["outbox"]
    depth = sum(out["depth"].values())
    oldest = f", oldest waiting {duration(out['oldest_age_s'])}" if depth else ""
    lines.append(f"  outbox    {depth} queued{oldest}")
    mqtt = data["mqtt"]
    if mqtt["enabled"]:
        state = "connected" if mqtt["connected"] else f"DISCONNECTED {mqtt['last_error']}"
        lines.append(f"  mqtt      {state}; {mqtt['delivered']} delivered")
    else:
        lines.append("  mqtt      off")
    lines.append(f"  loop lag  {data['loop_lag_ms']:.1f} ms")
    return "\n".join(lines)


def _cmd_replay(args: argparse.Namespace) -> int:
    """Replay a trace with the configured sinks and uplink; exit 0 once the outbox is empty."""
    from gateway.runtime.gateway import Gateway
    from gateway.runtime.loop import run_gateway
    from gateway.runtime.sources import replay_rebase, replay_source

    config = load_config(args.config)
    if not config.mqtt.enabled:
        raise ConfigError(args.config, "mqtt.enabled", "replay drains to the broker: set it true")
    trace = Path(args.trace)
    if not trace.exists():
        print(f"gateway: {trace}: trace not found", file=sys.stderr)
        return 2
    gateway = Gateway(config, quiet_sink=True, clock=SystemClock())
    try:
        rebase = replay_rebase(gateway, args.keep_times, args.start or "")
    except ValueError as exc:
        gateway.close()
        return _bad_input(f"--start {exc}")
    summary, uplink = asyncio.run(
        run_gateway(
            gateway, [replay_source(gateway, trace, 0.0, rebase)], drain_s=args.until_drained
        )
    )
    assert uplink is not None
    depth = gateway.outbox.depth()
    progress = gateway.replay_progress
    if progress.recorded_first_t is not None:
        tz = ZoneInfo(config.gateway.timezone)
        began = local_datetime(progress.recorded_first_t + progress.shift_s, tz)
        recorded = local_datetime(progress.recorded_first_t, tz)
        print(
            f"recorded {recorded}, replayed from {began}"
            if progress.shift_s
            else f"replayed at its recorded times from {recorded}"
        )
    print(
        f"replayed {summary.items} items; events produced {sum(summary.outbox_added.values())}; "
        f"delivered {uplink.stats.delivered}; outbox depth {depth}; "
        f"broker connects {uplink.stats.connects}"
        + (f"; last error: {uplink.stats.last_error}" if uplink.stats.last_error else "")
    )
    gateway.close()
    return 0 if depth == 0 else 1


def _bad_input(message: str) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return 2


def _hex_key(text: str, name: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"--{name} must be 32 hex digits, got {text!r}") from None
    if len(key) != 16:
        raise ValueError(f"--{name} must be 32 hex digits (16 bytes), got {len(key)} bytes")
    return key


def _cmd_eid(args: argparse.Namespace) -> int:
    """Eddystone-EID of an identity key at a beacon time: 16 lower-case hex digits."""
    from gateway.identity.rotating import eid

    try:
        ik = _hex_key(args.ik, "ik")
        k = _whole(args.k, "k")
        t = _whole(args.t, "t")
        print(eid(ik, k, t).hex())
    except ValueError as exc:
        return _bad_input(str(exc))
    return 0


def _whole(text: str, name: str) -> int:
    """A whole number (integral floats like '2000.0' are accepted)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--{name} must be a whole number, got {text!r}") from None
    if not value.is_integer():
        raise ValueError(f"--{name} must be a whole number, got {text!r}")
    return int(value) if abs(value) < 2**53 else int(text)


def _cmd_rpa(args: argparse.Namespace) -> int:
    """Does a resolvable private address belong to an IRK? Prints match or no-match."""
    from gateway.identity.rotating import parse_address, rpa_matches

    try:
        irk = _hex_key(args.irk, "irk")
        address = parse_address(args.address)
    except ValueError as exc:
        return _bad_input(str(exc))
    print("match" if rpa_matches(irk, address) else "no-match")
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from gateway.config.sections import Config
    from gateway.sim.walkers import demo_scenario

    key = bytes.fromhex(Config().nfc.loyalty_key)
    lines = demo_scenario(args.seed, key)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for line in lines:
            out.write(line + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _cmd_config_doc(args: argparse.Namespace) -> int:
    sys.stdout.write(config_reference())
    return 0


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


def config_reference() -> str:
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


def _cmd_offers_why(args: argparse.Namespace) -> int:
    """Every decision about a shopper, when it happened in the store's time."""
    from gateway.offers.engine import why
    from gateway.store import db

    config = load_config(args.config)
    tz = ZoneInfo(config.gateway.timezone)
    conn = db.connect(config.state_path / "gateway.db")
    try:
        rows = why(conn, args.who)
    finally:
        conn.close()
    if not rows:
        print(f"no decisions recorded for {args.who}")
    for t, campaign, trigger, issued, reason in rows:
        verdict = "issued" if issued else "suppressed"
        print(f"{local_datetime(t, tz)}  {campaign} {trigger}: {verdict} ({reason})")
    return 0


def _cmd_offers_redeem(args: argparse.Namespace) -> int:
    """Staff type a shopper's code at the counter: redeem it and queue the attribution."""
    from gateway.runtime.gateway import Gateway
    from gateway.store import db

    config = load_config(args.config)
    gateway = Gateway(config, quiet_sink=True, clock=SystemClock())
    try:
        now = gateway.clock.wall()
        with db.transaction(gateway.conn):
            redemption, outcome = gateway.offers.redeem_code(args.code, now, args.touchpoint)
            if redemption is not None:
                envelope = gateway.envelopes.envelope(redemption)
                assert envelope is not None
                gateway.outbox.append([envelope], now)
    finally:
        gateway.close()
    if redemption is None:
        print(f"gateway offers redeem: {args.code}: {outcome.replace('_', ' ')}", file=sys.stderr)
        return 1
    print(f"redeemed {redemption.code}: {redemption.sku} (offer {redemption.offer_id})")
    return 0


def _cmd_profiles_import(args: argparse.Namespace) -> int:
    from gateway.identity.importer import import_profiles
    from gateway.store import db

    config = load_config(args.config)
    path = Path(args.file)
    if not path.is_file():
        return _bad_input(f"{path}: no such file")
    conn = db.connect(config.state_path / "gateway.db")
    clock = SystemClock()
    started = clock.monotonic()

    def progress(done: int, total: int) -> None:
        width = 30
        filled = width * done // total
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(
            f"\r[{bar}] {100 * done // total:3d} %  {done}/{total} lines",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    report = import_profiles(conn, path, progress)
    conn.close()
    for line, field, reason in report.errors:
        print(f"{path}:{line}: {field or 'line'}: {reason}", file=sys.stderr)
    print(
        f"imported {report.imported} profiles, rejected {len(report.errors)} lines "
        f"in {clock.monotonic() - started:.2f} s"
    )
    return 1 if report.errors else 0


def _cmd_nfc_parse(args: argparse.Namespace) -> int:
    """One hex NDEF message per line on stdin → one JSON object per line."""
    from gateway.decode.ndef import parse_hex_line

    for line in sys.stdin:  # exactly one output line per input line, blank ones included
        print(json.dumps(parse_hex_line(line), ensure_ascii=False))
    return 0


def _read_json(read: object) -> dict[str, object]:
    from gateway.decode.ndef import parse_message
    from gateway.sources.nfc import TagRead

    assert isinstance(read, TagRead)
    out: dict[str, object] = {
        "uid": read.uid.hex(),
        "technology": read.technology,
        "product": read.product,
        "ndef_hex": read.ndef.hex(),
    }
    out |= parse_message(read.ndef) if read.ndef else {"records": []}
    return out


def _cmd_nfc_read(args: argparse.Namespace) -> int:
    """Print what a tap yields (for staff checking tags and readers)."""
    from gateway.sources.nfc import read_once

    try:
        read = read_once(args.device, SystemClock(), args.timeout)
    except OSError as exc:
        return _bad_input(str(exc))
    if read is None:
        print(f"gateway: no tag within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(json.dumps(_read_json(read), ensure_ascii=False))
    return 0


def _cmd_nfc_write(args: argparse.Namespace) -> int:
    """Provision a tag (shelf URI or signed loyalty token), verified by reading it back."""
    import ndef

    from gateway.identity import loyalty
    from gateway.sources.nfc import write_ndef

    if args.loyalty:
        config = load_config(args.config)
        key = bytes.fromhex(config.nfc.loyalty_key)
        message = loyalty.token_record(key, args.loyalty, args.token_id)
    else:
        message = b"".join(ndef.message_encoder([ndef.UriRecord(args.uri)]))
    try:
        read = write_ndef(args.device, message, SystemClock(), args.timeout)
    except (OSError, TimeoutError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"written": True} | _read_json(read), ensure_ascii=False))
    return 0


def _cmd_locate(args: argparse.Namespace) -> int:
    """Sightings on stdin → one position estimate per device per instant on stdout."""
    from gateway.ops.locate import LocateStats, locate, make_tracker
    from gateway.site.storemap import load_map
    from gateway.zones.tracker import ZoneTracker

    config = load_config(args.config)
    store = load_map(Path(args.map), require_zones=False)
    tracker = make_tracker(config, store, args.method)
    zones = None
    if store.zones:
        zones = ZoneTracker(store.zones, hysteresis_m=0.0, dwell_s=0.0, min_inside_s=0.0)
    stats = LocateStats()
    errors: list[str] = []
    for estimate in locate(sys.stdin, tracker, zones, stats, errors):
        sys.stdout.write(json.dumps(estimate) + "\n")
        for error in errors:
            print(f"gateway locate: {error}", file=sys.stderr)
        errors.clear()
    for error in errors:
        print(f"gateway locate: {error}", file=sys.stderr)
    if stats.rejected:
        print(
            f"gateway locate: {stats.lines} sightings, {stats.estimates} estimates, "
            f"rejected {stats.rejected}",
            file=sys.stderr,
        )
    return 0


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
    from gateway.config.sections import Config
    from gateway.ops.tracks import trace_tracks
    from gateway.site.render import plan_scene, render
    from gateway.site.storemap import load_map

    config = load_config(args.config) if args.config else Config()
    store = load_map(Path(args.file), require_zones=False)
    output = Path(args.output)
    if output.suffix.lower() not in (".svg", ".png"):
        print(f"gateway: {output}: use a .svg or .png file name", file=sys.stderr)
        return 2
    tracks = None
    if args.trace:
        trace = Path(args.trace)
        if not trace.exists():
            print(f"gateway: {trace}: trace not found", file=sys.stderr)
            return 2
        tracks = trace_tracks(config, store, trace)
    scene = plan_scene(store, tracks, args.scale)
    render(scene, output)
    what = f" with {len(tracks)} device tracks" if tracks else ""
    print(f"wrote {output} ({scene.width}×{scene.height} px){what}")
    return 0


def _cmd_profiles_export(args: argparse.Namespace) -> int:
    from gateway.identity.importer import export_profiles
    from gateway.store import db

    config = load_config(args.config)
    conn = db.connect(config.state_path / "gateway.db")
    with open(args.file, "w", encoding="utf-8") as out:
        count = export_profiles(conn, out)
    conn.close()
    print(f"exported {count} profiles to {args.file}")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from gateway.decode.ble import decode_payload
    from gateway.decode.frames import frame_json

    for raw in sys.stdin:  # exactly one output line per input line, blank ones included
        text = raw.strip()
        if not text:
            print(json.dumps({"frame": None, "reason": "empty"}))
            continue
        try:
            payload = bytes.fromhex(text)
        except ValueError:
            print(json.dumps({"frame": None, "reason": "not_hex"}), flush=False)
            continue
        frame, reason = decode_payload(payload)
        print(json.dumps(frame_json(frame, reason)))
    return 0


def _replay_time_options(p: argparse.ArgumentParser) -> None:
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--keep-times",
        action="store_true",
        help="replay the recorded times unchanged (forensics); default: move the trace to now",
    )
    when.add_argument(
        "--start",
        metavar="WHEN",
        help="place the trace's first item at WHEN instead of now: HH:MM (store-local, the "
        "latest such time not in the future) or an ISO 8601 date-time",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="In-store proximity gateway (BLE/NFC presence and offers)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="replay the demo bookstore through the whole pipeline")
    p.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="replay speed: 1 real time, 0 as fast as possible (default 20)",
    )
    p.add_argument("--state", help="keep the state here instead of a throw-away directory")
    _replay_time_options(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "calibrate", help="measure a known beacon at a known distance; save the receiver offset"
    )
    p.add_argument("--config", required=True)
    p.add_argument("--beacon", required=True, help="a beacon feature id of the store map")
    p.add_argument("--distance", type=float, default=1.0, help="metres from the receiver")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to measure")
    p.add_argument("--receiver", help="which receiver (default: the one hearing it most)")
    p.add_argument("--trace", help="measure from a recorded trace instead of the radio")
    p.add_argument("--dry-run", action="store_true", help="report, do not save")
    p.set_defaults(func=_cmd_calibrate)
    p = sub.add_parser("console-password", help="hash a staff password for [console] password_hash")
    p.set_defaults(func=_cmd_console_password)
    p = sub.add_parser("doctor", help="check this box: config, storage, radios, broker, clock")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable results")
    p.add_argument("--timeout", type=float, default=5.0, help="per network check, seconds")
    p.set_defaults(func=_cmd_doctor)
    p = sub.add_parser("status", help="what the running daemon is doing (its control endpoint)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="the raw status document")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("run", help="the daemon: configured sources, sinks, uplink; until SIGTERM")
    p.add_argument("--config", required=True, help="TOML config file (docs/config.md)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every event")
    p.add_argument(
        "--once", action="store_true", help="exit when the configured replay has been processed"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "replay", help="replay a trace through the pipeline and the MQTT uplink until drained"
    )
    p.add_argument("trace", help="JSON-lines trace (docs/trace-format.md)")
    p.add_argument("--config", required=True)
    p.add_argument(
        "--until-drained",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after the trace, wait at most this long for the outbox to empty (exit 1 if not)",
    )
    _replay_time_options(p)
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("sim", help="generate the demo scenario trace from the simulator")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("eid", help="compute an Eddystone-EID (16 hex digits)")
    p.add_argument("--ik", required=True, help="identity key, 32 hex digits")
    p.add_argument("--k", required=True, help="rotation exponent 0..15")
    p.add_argument("--t", required=True, help="beacon time counter in seconds")
    p.set_defaults(func=_cmd_eid)

    p = sub.add_parser("rpa", help="check a resolvable private address against an IRK")
    p.add_argument("--irk", required=True, help="identity resolving key, 32 hex digits (MSB first)")
    p.add_argument("--address", required=True, help="AA:BB:CC:DD:EE:FF")
    p.set_defaults(func=_cmd_rpa)

    p = sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    p.set_defaults(func=_cmd_config_doc)
    p = sub.add_parser(
        "config-template", help="print a commented config with fresh secrets (for installs)"
    )
    p.add_argument("--state-dir", default="/var/lib/proximity-gateway")
    p.set_defaults(func=_cmd_config_template)

    p = sub.add_parser("locate", help="sightings (JSON lines) on stdin → position estimates")
    p.add_argument("--map", required=True, help="store map (GeoJSON) with gateway receivers")
    p.add_argument(
        "--method",
        choices=["max_likelihood", "least_squares", "weighted_centroid", "nearest"],
        default=None,
        help="default: the config's presence.method (max_likelihood)",
    )
    p.add_argument("--config", default=None, help="config for presence settings (optional)")
    p.set_defaults(func=_cmd_locate)

    p = sub.add_parser("decode", help="decode hex advertising data from stdin, JSON per line")
    p.set_defaults(func=_cmd_decode)

    nfc = sub.add_parser("nfc", help="NFC tags")
    nfc_sub = nfc.add_subparsers(dest="nfc_command", required=True)
    p = nfc_sub.add_parser("parse", help="hex NDEF messages on stdin → JSON records per line")
    p.set_defaults(func=_cmd_nfc_parse)
    p = nfc_sub.add_parser("read", help="wait for one tag and print its UID and records")
    p.add_argument("--device", required=True, help="nfcpy device, e.g. usb:072f:2200")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=_cmd_nfc_read)
    p = nfc_sub.add_parser("write", help="write a URI or a signed loyalty token, verified")
    p.add_argument("--device", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--uri", help="shelf tag: the URL to write")
    what.add_argument("--loyalty", metavar="PROFILE", help="loyalty card for this profile id")
    p.add_argument("--token-id", default="card-1", help="loyalty token id (for revocation)")
    p.add_argument("--config", help="config with nfc.loyalty_key (needed for --loyalty)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=_cmd_nfc_write)

    fences = sub.add_parser("fences", help="store maps (GeoJSON geofences)")
    fences_sub = fences.add_subparsers(dest="fences_command", required=True)
    p = fences_sub.add_parser("check", help="report every problem of store maps; exit 2 on errors")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_fences_check)
    p = fences_sub.add_parser("render", help="draw a floor plan (SVG or PNG), optionally tracks")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, help="plan.svg or plan.png")
    p.add_argument("--trace", help="a recorded trace: draw the estimated device tracks")
    p.add_argument("--config", help="config for the presence settings (default: built-in)")
    p.add_argument("--scale", type=float, help="pixels per metre (default: fit ~900 px)")
    p.set_defaults(func=_cmd_fences_render)

    profiles = sub.add_parser("profiles", help="the shopper profile cache")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", required=True)
    p = profiles_sub.add_parser(
        "import", help="import profiles from JSON lines or CSV; bad lines are reported, not fatal"
    )
    p.add_argument("file", help="FILE.jsonl or FILE.csv")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_profiles_import)
    p = profiles_sub.add_parser("export", help="write every cached profile as JSON lines")
    p.add_argument("file", help="FILE.jsonl (the import format)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_profiles_export)

    offers = sub.add_parser("offers", help="offer decisions")
    offers_sub = offers.add_subparsers(dest="offers_command", required=True)
    p = offers_sub.add_parser("why", help="explain every decision for a profile or device")
    p.add_argument("who", help="profile id or device id")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_offers_why)
    p = offers_sub.add_parser("redeem", help="redeem a code typed at the counter")
    p.add_argument("code", help="the offer code, e.g. PK-7Q2M-XK4D (case and dashes optional)")
    p.add_argument("--config", required=True)
    p.add_argument("--touchpoint", default="counter", help="where it was redeemed")
    p.set_defaults(func=_cmd_offers_redeem)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, MapError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
