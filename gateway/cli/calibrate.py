"""`gateway calibrate`: a known beacon at a known distance gives a receiver's RSSI offset."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.cli._common import BAR_WIDTH, CONFIG, bar
from gateway.clock import Clock, SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers
    from gateway.config.sections import Config
    from gateway.model import Advert
    from gateway.presence.calibration import Calibrator


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """A timed measurement of a known beacon at a known distance from a receiver."""
    import asyncio

    from gateway.config.schema import ConfigError
    from gateway.config.sections import load_config
    from gateway.decode import ble as decode
    from gateway.model import Advert
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
    config: Config,
    seconds: float,
    on_advert: Callable[[Advert], None],
    calibrator: Calibrator,
    clock: Clock,
) -> None:
    """Scan with every configured adapter for `seconds`, drawing a progress bar."""
    import asyncio

    from gateway.model import Advert
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
    # On a terminal the bar redraws in place; in a log (journald) a line every 5 s is enough.
    tty = sys.stderr.isatty()
    last_line = -5.0
    try:
        while (elapsed := clock.monotonic() - started) < seconds:
            await asyncio.sleep(0.25)
            if tty or elapsed - last_line >= 5:
                last_line = elapsed
                cells = bar(int(BAR_WIDTH * min(1.0, elapsed / seconds)), ".")
                start = "\r" if tty else ""
                print(
                    f"{start}[{cells}] {elapsed:4.0f}/{seconds:.0f} s  "
                    f"{calibrator.count()} readings",
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


def add_calibrate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "calibrate",
        parents=[CONFIG],
        help="measure a known beacon at a known distance; save the receiver offset",
    )
    p.add_argument("--beacon", required=True, help="a beacon feature id of the store map")
    p.add_argument(
        "--distance", type=float, default=1.0, help="metres from the receiver (default 1)"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="how long to measure (default 30)")
    p.add_argument("--receiver", help="which receiver (default: the one hearing it most)")
    p.add_argument(
        "--trace",
        metavar="TRACE.jsonl",
        help="measure from a recorded trace (docs/trace-format.md) instead of the radio: "
        "check a recording, or calibrate from one made on site",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="measure and report, but do not save the offset to the state directory",
    )
    p.set_defaults(func=_cmd_calibrate)
