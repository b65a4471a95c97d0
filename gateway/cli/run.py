"""Running the pipeline: the daemon (`run`), a trace to the broker (`replay`), the demo store
(`demo`), and the simulator's demo trace (`sim`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli._common import CONFIG, bad_input
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.ops.demo import run_demo

    try:
        run_demo(
            args.speed,
            Path(args.state) if args.state else None,
            sys.stdout,
            clock=SystemClock(),
            keep_times=args.keep_times,
            start=args.start or ("10:00" if args.last_copy and not args.keep_times else ""),
            last_copy=args.last_copy,
        )
    except ValueError as exc:
        return bad_input(f"--start {exc}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """The daemon (systemd runs this): until SIGTERM, or with --once until the replay ends."""
    from gateway.service.process import run_service

    return run_service(args.config, once=args.once, verbose=args.verbose)


def _cmd_replay(args: argparse.Namespace) -> int:
    """Replay a trace with the configured sinks and uplink; exit 0 once the outbox is empty."""
    import asyncio
    from zoneinfo import ZoneInfo

    from gateway.config.schema import ConfigError
    from gateway.config.sections import load_config
    from gateway.humantime import local_datetime
    from gateway.runtime.gateway import Gateway
    from gateway.runtime.loop import run_gateway
    from gateway.runtime.sources import replay_rebase, replay_source
    from gateway.store.lock import lock_state

    config = load_config(args.config)
    if not config.mqtt.enabled:
        raise ConfigError(args.config, "mqtt.enabled", "replay drains to the broker: set it true")
    trace = Path(args.trace)
    if not trace.exists():
        return bad_input(f"{trace}: trace not found")
    lock = lock_state(config.state_path)  # not beside a daemon on the same state
    gateway = Gateway(config, quiet_sink=True, clock=SystemClock())
    try:
        rebase = replay_rebase(gateway, args.keep_times, args.start or "")
    except ValueError as exc:
        gateway.close()
        lock.release()
        return bad_input(f"--start {exc}")
    try:
        summary, uplink = asyncio.run(
            run_gateway(
                gateway, [replay_source(gateway, trace, 0.0, rebase)], drain_s=args.until_drained
            )
        )
    except BaseException:
        gateway.close()
        lock.release()
        raise
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
    lock.release()
    return 0 if depth == 0 else 1


def _cmd_sim(args: argparse.Namespace) -> int:
    """The demo scenario, or shoppers walking through your map, as a trace (JSON lines)."""
    if args.shoppers < 1:
        return bad_input("--shoppers must be 1 or more")
    if args.map:
        from gateway.sim.anymap import map_scenario
        from gateway.site.storemap import load_map

        store = load_map(Path(args.map))  # MapError: exit 2 with the feature and the fix
        lines = map_scenario(store, args.seed, args.shoppers)
        if not lines:
            return bad_input(
                f"{args.map}: no shopper could walk this map (no walkable path between its "
                "zones within reach of its receivers); `gateway fences check` says why — "
                "often a map in millimetres or centimetres instead of metres"
            )
    else:
        from gateway.config.sections import Config
        from gateway.sim.walkers import demo_scenario

        lines = demo_scenario(args.seed, bytes.fromhex(Config().nfc.loyalty_key))
    if not args.output or args.output == "-":
        for line in lines:
            sys.stdout.write(line + "\n")  # a closed pipe (| head) is handled by main()
        return 0
    output = Path(args.output)
    try:
        with output.open("w", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
    except OSError as exc:
        return bad_input(f"-o {output}: {exc.strerror or exc}")
    print(f"wrote {len(lines)} lines to {output}", file=sys.stderr)
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


def add_demo(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="replay the demo bookstore through the whole pipeline")
    p.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="replay speed: 1 real time, 0 as fast as possible (default 20)",
    )
    p.add_argument("--state", help="keep the state here instead of a throw-away directory")
    p.add_argument(
        "--last-copy",
        action="store_true",
        help="one copy of Alice's book, which a second shopper saved too: watch it held for "
        "Alice, then offered to the other once Alice's offer lapses (offers valid 60 s; "
        "starts at 10:00 unless --start says otherwise)",
    )
    _replay_time_options(p)
    p.set_defaults(func=_cmd_demo)


def add_run(sub: Subparsers) -> None:
    p = sub.add_parser(
        "run",
        parents=[CONFIG],
        help="the daemon: configured sources, sinks, uplink; until SIGTERM",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every event")
    p.add_argument(
        "--once", action="store_true", help="exit when the configured replay has been processed"
    )
    p.set_defaults(func=_cmd_run)


def add_replay(sub: Subparsers) -> None:
    p = sub.add_parser(
        "replay",
        parents=[CONFIG],
        help="replay a trace through the pipeline and the MQTT uplink until drained",
    )
    p.add_argument("trace", help="JSON-lines trace (docs/trace-format.md)")
    p.add_argument(
        "--until-drained",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after the trace, wait at most this long for the outbox to empty (exit 1 if not)",
    )
    _replay_time_options(p)
    p.set_defaults(func=_cmd_replay)


def add_sim(sub: Subparsers) -> None:
    p = sub.add_parser(
        "sim",
        help="simulate shoppers as a trace: the demo bookstore, or your own map (--map)",
        description="Write a trace (docs/trace-format.md) of simulated shoppers: the demo "
        "bookstore's scenario, or with --map shoppers walking through your map's zones "
        "(shopper i advertises iBeacon 5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:i). Replay it "
        "with [sources.replay], or pipe it into `gateway locate --map`.",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7: the demo trace)")
    p.add_argument("--map", metavar="STORE.geojson", help="simulate this store map instead")
    p.add_argument(
        "--shoppers", type=int, default=3, help="with --map: how many shoppers (default 3)"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    p.set_defaults(func=_cmd_sim)
