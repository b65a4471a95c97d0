"""Benchmarks for the gateway (run through scripts/bench, which runs this as
`.venv/bin/python -m scripts.bench` from the repository root: the outbox section borrows the
tests' Mosquitto broker from tests/support, importable from there).

Every figure is measured in this run, on the same input as its baseline, and printed with
the ratio. Results also go to bench-results.json (nested: {"decode": {"adverts_per_s": …}}).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import importlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.clock import SystemClock
from gateway.decode.ble import decode_payload, parse_ad
from gateway.model import Advert
from gateway.offers.bandit import bandit_rows, bench_bandit
from gateway.resources import data_file
from gateway.trace import parse_line

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sections beside this file
import bench_speed
import fleet_share
from bench_speed import best_rate

if TYPE_CHECKING:  # imported where used: each section loads only what it measures
    from gateway.config.sections import Config
    from gateway.runtime.gateway import Gateway
    from gateway.site.storemap import Zone

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "mitll-adverts"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_payloads() -> tuple[list[bytes], str]:
    payloads: list[bytes] = []
    source = []
    if SHARED.exists():
        for path in sorted(SHARED.glob("*.csv")):
            with path.open(newline="") as f:
                payloads += [bytes.fromhex(r["ad_payload_hex"] or "") for r in csv.DictReader(f)]
        source.append(f"{len(payloads)} real captured adverts (MIT LL)")
    beacons = []
    for i, line in enumerate(data_file("demo-trace.jsonl").read_text().splitlines()):
        item = parse_line(line, i + 1)
        if isinstance(item, Advert):
            beacons.append(item.ad)
    payloads += beacons
    source.append(f"{len(beacons)} iBeacon adverts (demo trace)")
    return payloads, " + ".join(source)


def bench_decode(repeats: int) -> dict[str, float]:
    payloads, source = load_payloads()
    print(f"decode input: {source}")

    def ours() -> None:
        for p in payloads:
            decode_payload(p)

    ours_rate = best_rate(len(payloads), ours, repeats)
    results = {"adverts_per_s": ours_rate}
    try:
        import TheengsDecoder

        # Theengs takes a JSON document per advert: prepare them outside the timing, as a
        # caller holding bleak's dicts would.
        docs = []
        for p in payloads:
            fields, _ = parse_ad(p)
            mfr = next(iter(fields.mfr.items()), None) if fields else None
            doc = {"id": "AA:BB:CC:DD:EE:FF", "rssi": -60}
            if mfr is not None:
                doc["manufacturerdata"] = f"{mfr[0] & 0xFF:02x}{mfr[0] >> 8:02x}" + mfr[1].hex()
            if fields and fields.svc:
                uuid, data = next(iter(fields.svc.items()))
                doc["servicedatauuid"] = "0x" + uuid
                doc["servicedata"] = data.hex()
            docs.append(json.dumps(doc))

        def theengs() -> None:
            for d in docs:
                TheengsDecoder.decodeBLE(d)

        rate = best_rate(len(docs), theengs, max(1, repeats // 2))
        results["theengs_adverts_per_s"] = rate
        results["vs_theengs"] = ours_rate / rate
    except ImportError:
        print("  TheengsDecoder not installed (scripts/setup --bench installs it)")
    try:
        from beacontools import parse_packet

        def beacontools_run() -> None:
            for p in payloads:
                # not contextlib.suppress: its cost per advert would be timed with beacontools
                try:  # noqa: SIM105
                    parse_packet(p)
                except Exception:
                    pass  # beacontools raises on some garbled captures

        rate = best_rate(len(payloads), beacontools_run, max(1, repeats // 2))
        results["beacontools_adverts_per_s"] = rate
        results["vs_beacontools"] = ours_rate / rate
    except ImportError:
        print("  beacontools not installed (scripts/setup --bench installs it)")
    return results


BUSY_DEVICES = 500
BUSY_SECONDS = 30.0
CACHED_PROFILES = 100_000


def busy_state(folder: Path) -> tuple[Path, Path]:
    """A state directory with 100k cached profiles (500 of them the busy store's phones)
    and stock, the busy store's map, a config, and the busy trace; returns (config, trace).
    Built once per bench run and shared by the pipeline and footprint sections."""
    from gateway.sim import busystore
    from gateway.trace import advert_line

    config = folder / "gateway.toml"
    if config.exists():
        return config, folder / "busy-trace.jsonl"
    busystore.seed_state(folder, CACHED_PROFILES, BUSY_DEVICES)
    trace = folder / "busy-trace.jsonl"
    with trace.open("w") as out:
        for advert in busystore.adverts(BUSY_DEVICES, BUSY_SECONDS):
            out.write(advert_line(advert) + "\n")
    config.write_text(
        f"[gateway]\nstate_dir = '{folder / 'state'}'\n[map]\npath = '{folder / 'busy.geojson'}'\n"
        f"[sources.replay]\npath = '{trace}'\nspeed = 0\n"
        "[sinks]\nstdout = false\npush_log = ''\n[service]\ncontrol_listen = ''\n"
        "[offers.limits]\nquiet_hours = []\n"
    )
    return config, trace


def bench_pipeline(folder: Path, compiled: bool = True) -> dict[str, float]:
    """The busy store through every stage (decode → filter → position → zones → identity →
    offers → outbox), as `gateway run` does it: batches of 256 in one transaction each.
    `compiled=False`: as on a box where the install found no C compiler (the solver's numpy
    path instead of its kernel)."""
    from gateway.config.sections import load_config
    from gateway.presence import batch as solver
    from gateway.runtime.commit import Item
    from gateway.runtime.gateway import Gateway

    config_file, trace = busy_state(folder)
    items = []
    with trace.open() as lines:
        for i, line in enumerate(lines):
            item = parse_line(line, i + 1)
            if isinstance(item, Advert):
                items.append(item)
    gateway = Gateway(load_config(str(config_file)), quiet_sink=True, clock=SystemClock())
    gateway.refresh()
    kernel = solver.KERNEL
    if not compiled:
        solver.KERNEL = None

    def batches(adverts: list[Advert]) -> list[list[Item]]:
        return [list(adverts[i : i + 256]) for i in range(0, len(adverts), 256)]

    warm, timed = items[:20_000], items[20_000:]
    for batch in batches(warm):
        gateway.process(batch)
    timed_batches = batches(timed)
    gc.collect()
    start = time.perf_counter()
    for batch in timed_batches:
        gateway.process(batch)
    total = time.perf_counter() - start
    stats = gateway.pipeline.stats
    decisions = sum(stats.decisions.values())
    # In-process latency of one sighting through every stage up to the offer decision (the
    # commit is per batch and not included): the busy trace replayed once more, later.
    single = []
    pipeline = gateway.pipeline
    shift = BUSY_SECONDS + 60.0
    with db_transaction(gateway):
        for item in items[:30_000]:
            moved = Advert(item.t + shift, item.receiver, item.address, item.rssi, item.ad)
            t0 = time.perf_counter()
            pipeline.on_advert(moved)
            single.append((time.perf_counter() - t0) * 1000)
    gateway.close()
    solver.KERNEL = kernel
    single.sort()
    span = items[-1].t - items[0].t
    return {
        "sightings_per_s": len(timed) / total,
        "p50_ms": statistics.median(single),
        "p99_ms": single[int(len(single) * 0.99)],
        "trace_sightings": float(len(items)),
        "store_sightings_per_s": len(items) / span,
        "devices": float(BUSY_DEVICES),
        "zones": 200.0,
        "cached_profiles": float(CACHED_PROFILES),
        "zone_events": float(sum(stats.zone_events.values())),
        "decisions": float(decisions),
    }


def best_of(
    runs: int, section: Callable[[], dict[str, float]], key: str, low: bool = False
) -> dict[str, float]:
    """The run with the best `key` of `runs` (other helpers share this 2-core box)."""
    outcomes = [section() for _ in range(runs)]
    return (min if low else max)(outcomes, key=lambda r: r[key])


def db_transaction(gateway: Gateway) -> AbstractContextManager[None]:
    from gateway.store import db

    return db.transaction(gateway.conn)


def bench_footprint(folder: Path) -> dict[str, float]:
    """`gateway run --once` on the busy trace with 100k cached profiles, as a separate
    process: its peak RSS, and the time from start to the first processed sighting."""
    import subprocess
    import threading

    config_file, _trace = busy_state(folder)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "gateway"), "run", "--once", "--config", str(config_file)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    first = math.nan
    peak_kb = 0
    stop = threading.Event()

    def watch() -> None:
        # VmHWM of the child's own address space (after exec): getrusage(RUSAGE_CHILDREN)
        # would also count the moment between fork and exec, when the child shares this
        # (large) benchmark process's pages.
        nonlocal peak_kb
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert process.stderr is not None
    for line in process.stderr:
        if math.isnan(first) and "first sighting processed" in line:
            first = time.perf_counter() - started
    process.wait()
    stop.set()
    watcher.join()
    wall = time.perf_counter() - started
    return {"rss_mb": peak_kb / 1024, "startup_s": first, "run_wall_s": wall}


def grid_zones(count: int) -> list[Zone]:
    """`count` zones on a shop floor: rectangles of shelving, every fifth one an L-shape,
    with a few overlapping promotion areas (priority 1), as a store map would have."""
    from shapely.geometry import Polygon, box

    from gateway.site.storemap import Zone

    side = math.ceil(math.sqrt(count))
    zones = []
    for n in range(count):
        x, y = (n % side) * 4.0, (n // side) * 3.0
        if n % 5 == 4:
            shape = Polygon(
                [
                    (x, y),
                    (x + 3.5, y),
                    (x + 3.5, y + 1),
                    (x + 1, y + 1),
                    (x + 1, y + 2.5),
                    (x, y + 2.5),
                ]
            )
        elif n % 17 == 16:
            shape = box(x - 1.0, y - 1.0, x + 2.0, y + 2.0)  # straddles its neighbours
        else:
            shape = box(x, y, x + 3.5, y + 2.5)
        zones.append(Zone(f"z{n}", f"z{n}", "aisle", shape, None, None, int(n % 17 == 16)))
    return zones


def bench_zones() -> dict[str, float]:
    """Point-in-zone checks/s: our per-point STRtree path, the batched (vectorised) path,
    and the naive loop over Shapely `contains` that a first version would write."""
    rng = random.Random(3)
    results: dict[str, float] = {}
    for count in (10, 200, 1000):
        results |= bench_zone_count(count, rng)
    return results


def bench_zone_count(count: int, rng: random.Random) -> dict[str, float]:
    """bench_zones for one map of `count` zones."""
    import numpy as np
    from shapely.geometry import Point

    from gateway.zones.tracker import ZoneTracker

    zones = grid_zones(count)
    tracker = ZoneTracker(zones, hysteresis_m=1.0, dwell_s=30, min_inside_s=2)
    minx = min(z.shape.bounds[0] for z in zones)
    maxx = max(z.shape.bounds[2] for z in zones)
    miny = min(z.shape.bounds[1] for z in zones)
    maxy = max(z.shape.bounds[3] for z in zones)
    n = 20_000
    xs = np.array([rng.uniform(minx, maxx) for _ in range(n)])
    ys = np.array([rng.uniform(miny, maxy) for _ in range(n)])

    def per_point() -> None:
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            tracker.containing(x, y)

    def batched() -> None:
        tracker.index.containing_many(xs, ys)

    naive_n = max(200, n * 10 // count)

    def naive() -> None:
        for x, y in zip(xs[:naive_n].tolist(), ys[:naive_n].tolist(), strict=True):
            point = Point(x, y)
            [z.id for z in zones if z.shape.contains(point)]

    # the batch path agrees with the per-point one
    which, hits = tracker.index.containing_many(xs[:500], ys[:500])
    grouped: list[list[int]] = [[] for _ in range(500)]
    for i, j in zip(which.tolist(), hits.tolist(), strict=True):
        grouped[i].append(j)
    assert grouped == [
        tracker.containing(x, y) for x, y in zip(xs[:500].tolist(), ys[:500].tolist(), strict=True)
    ]
    results = {
        f"checks_per_s_{count}": best_rate(n, batched, 3),
        f"per_point_checks_per_s_{count}": best_rate(n, per_point, 2),
        f"naive_checks_per_s_{count}": best_rate(naive_n, naive, 2),
    }
    results[f"vs_naive_{count}"] = (
        results[f"checks_per_s_{count}"] / results[f"naive_checks_per_s_{count}"]
    )
    return results


def bench_identity() -> dict[str, float]:
    """EID table for 100k consenting shoppers: cold build, a window rolling for all of them,
    and resolutions (sightings of rotating ids → profile)."""
    from gateway.identity.rotating import EidKey, EidTable

    rng = random.Random(5)
    n = 100_000
    keys = [EidKey(f"p{i}", rng.randbytes(16), 10, rng.randrange(0, 2**20)) for i in range(n)]
    now = 1_795_424_400.0
    gc.collect()
    started = time.perf_counter()
    table = EidTable(keys)
    table.rebuild(now)
    cold = time.perf_counter() - started
    later = now + 2**10  # every key's window moves on: one new EID each
    started = time.perf_counter()
    table.rebuild(later)
    roll = time.perf_counter() - started
    known = list(table.table)[:50_000]
    unknown = [rng.randbytes(8).hex() for _ in range(50_000)]
    probes = [x for pair in zip(known, unknown, strict=True) for x in pair]

    def resolve_all() -> None:
        for probe in probes:
            table.resolve(probe)

    return {
        "eid_rebuild_100k_s": cold,
        "eid_roll_100k_s": roll,
        "eid_table_entries": float(len(table.table)),
        "resolutions_per_s": best_rate(len(probes), resolve_all, 3),
    }


def bench_outbox() -> dict[str, float]:
    """Durable appends (pipeline-sized batches, synchronous=FULL), then the drain to a local
    Mosquitto at QoS 1; and the drain of a 1-hour backlog at 50 events/s (180,000 events)."""
    from gateway.store import db
    from gateway.store.outbox import Outbox, OutboxEvent
    from gateway.sync.uplink import Uplink
    from tests.support.broker import Broker
    from tests.sync.test_uplink import mqtt_config

    def events(start: int, count: int) -> list[OutboxEvent]:
        out = []
        for n in range(start, start + count):
            stream, priority = (("zone", 3), ("offer", 1), ("beacon", 4))[n % 3]
            body = {
                "specversion": "1.0",
                "id": f"ev-{n}",
                "source": "/stores/s/gateways/g",
                "type": f"com.storegate.{stream}.x",
                "time": "2026-11-23T10:00:00.000Z",
                "subject": "dev-0123456789abcdef",
                "datacontenttype": "application/json",
                "data": {"device": "dev-0123456789abcdef", "zone": "aisle-scifi", "n": n},
            }
            out.append(OutboxEvent(f"ev-{n}", stream, f"{stream}.x", priority, float(n), body))
        return out

    async def drain(config: Config, outbox: Outbox) -> float:
        uplink = Uplink(config, outbox, SystemClock())
        start = time.perf_counter()
        task = asyncio.create_task(uplink.run())
        while outbox.depth():
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return elapsed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker")
        broker.start()
        try:
            config = mqtt_config(root / "a", broker)
            outbox = Outbox(db.connect(config.state_path / "gateway.db"))
            n = 50_000
            batches = [events(i, 256) for i in range(0, n, 256)]
            start = time.perf_counter()
            for batch in batches:
                outbox.append(batch, SystemClock().wall())
            append_s = time.perf_counter() - start
            drain_s = asyncio.run(drain(config, outbox))

            config = mqtt_config(root / "b", broker)
            backlog = Outbox(db.connect(config.state_path / "gateway.db"))
            for i in range(0, 180_000, 1000):
                backlog.append(events(i, 1000), SystemClock().wall())
            backlog_s = asyncio.run(drain(config, backlog))
        finally:
            broker.stop()
    return {
        "append_per_s": n / append_s,
        "drain_per_s": n / drain_s,
        "backlog_1h_drain_s": backlog_s,
    }


def bench_console() -> dict[str, float]:
    """One staff password check at the console's scrypt parameters, and at the old ones."""
    from gateway.web.auth import SCRYPT, ScryptParams, hash_password, verify_password

    out: dict[str, float] = {}
    for name, params in (("login_check_ms", SCRYPT), ("old_check_ms", ScryptParams(2**14, 8, 1))):
        stored = hash_password("bench-password", params=params)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            verify_password(stored, "bench-password")
            times.append((time.perf_counter() - start) * 1000)
        out[name] = min(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--fleet", type=int, nargs="+", default=[1, 2, 4], help="gateways sharing the store"
    )
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"every figure is the best of {args.repeats} runs unless said otherwise")
    results: dict[str, dict[str, float]] = {}
    results["decode"] = bench_decode(args.repeats)
    payloads, _ = load_payloads()
    results["decode_vs_ha"] = bench_speed.decode_vs_ha(payloads, args.repeats)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    print("preparing the busy store (100k profiles, 500 phones, 200 zones) ...", flush=True)
    config_file, trace = busy_state(workdir)
    # The fleet section starts from the state before any run decided anything.
    shutil.copytree(workdir / "state", workdir / "state-before-runs")
    results["pipeline"] = best_of(5, lambda: bench_pipeline(workdir), "sightings_per_s")
    results["pipeline"]["numpy_sightings_per_s"] = best_of(
        2, lambda: bench_pipeline(workdir, compiled=False), "sightings_per_s"
    )["sightings_per_s"]
    results["burst"] = bench_speed.burst_latency(config_file, trace)
    print("fleet: gateways sharing the busy store ...", flush=True)
    results["fleet"] = fleet_share.sweep(config_file, trace, args.fleet, workdir / "fleet")
    print("the pipeline on about one Pi Zero 2 W core (cgroup CPU quota) ...", flush=True)
    results["throttled"] = bench_speed.throttled_pipeline(workdir)
    results["zones"] = bench_zones()
    results["identity"] = bench_identity()
    results["outbox"] = bench_outbox()
    results["console"] = bench_console()
    # issue 20: decisions with stock holds, and without (its own file: scripts/bench_holds.py)
    holds = importlib.import_module("scripts.bench_holds")
    results["holds"] = holds.bench_holds()
    results["footprint"] = best_of(3, lambda: bench_footprint(workdir), "run_wall_s", low=True)
    f = results["footprint"]
    f["end_to_end_sightings_per_s"] = results["pipeline"]["trace_sightings"] / (
        f["run_wall_s"] - f["startup_s"]
    )
    results["bandit"] = bench_bandit()
    shutil.rmtree(workdir, ignore_errors=True)

    d, p = results["decode"], results["pipeline"]
    rows = [
        ("decode", "adverts/s (one core)", f"{d['adverts_per_s']:,.0f}", "goal ≥ 200,000"),
    ]
    if "vs_theengs" in d:
        rows.append(
            (
                "",
                "  TheengsDecoder.decodeBLE",
                f"{d['theengs_adverts_per_s']:,.0f}",
                f"ours ×{d['vs_theengs']:.1f} (goal ≥ ×100)",
            )
        )
    if "vs_beacontools" in d:
        rows.append(
            (
                "",
                "  beacontools.parse_packet",
                f"{d['beacontools_adverts_per_s']:,.0f}",
                f"ours ×{d['vs_beacontools']:.1f} (goal ≥ ×10)",
            )
        )
    h = results["decode_vs_ha"]
    if h:
        rows += [
            (
                "",
                "  vs bluetooth-data-tools",
                f"{h['cached_adverts_per_s']:,.0f}",
                f"HA's parser {h['ha_adverts_per_s']:,.0f}/s: ours ×{h['vs_ha_in_process']:.2f} "
                "(goal ≥ ×1.0)",
            ),
            (
                "",
                "  whole process, lines/s",
                f"{h['process_lines_per_s']:,.0f}",
                f"a script on HA's parser {h['ha_process_lines_per_s']:,.0f}/s: "
                f"ours ×{h['vs_ha_whole_process']:.2f} (goal ≥ ×1.0)",
            ),
        ]
    rows += [
        (
            "pipeline",
            "sightings/s, busy store",
            f"{p['sightings_per_s']:,.0f}",
            f"goal ≥ 50,000; the store makes {p['store_sightings_per_s']:,.0f}/s "
            f"(×{p['sightings_per_s'] / p['store_sightings_per_s']:.1f} real time)",
        ),
        ("", "latency p50 / p99 ms", f"{p['p50_ms']:.3f} / {p['p99_ms']:.3f}", "goal p99 < 2"),
        (
            "",
            "  solver without its C kernel",
            f"{p['numpy_sightings_per_s']:,.0f}",
            "sightings/s where the install had no C compiler (numpy path): "
            f"the kernel ×{p['sightings_per_s'] / p['numpy_sightings_per_s']:.2f}",
        ),
    ]
    b = results["burst"]
    rows.append(
        (
            "",
            f"{b['burst_factor']:.0f}× burst p50 / p99 ms",
            f"{b['burst_p50_ms']:.2f} / {b['burst_p99_ms']:.2f}",
            f"{b['burst_sightings_per_s']:,.0f} sightings/s arriving; sighting → decision",
        )
    )
    fl = results["fleet"]
    for n in args.fleet:
        rows.append(
            (
                "fleet" if n == args.fleet[0] else "",
                f"{n} gateway(s): sightings/s each",
                f"{fl[f'sightings_per_s_per_gateway_{n}']:,.0f}",
                f"busiest does {fl[f'work_share_max_{n}']:.0%} of one gateway's work; "
                f"decisions {fl[f'decisions_{n}']:.0f}, duplicates {fl[f'duplicates_{n}']:.0f}",
            )
        )
    t = results["throttled"]
    if t:
        rows.append(
            (
                "pi-class",
                f"sightings/s on {t['cpu_quota_cores']:.3f} core",
                f"{t['sightings_per_s']:,.0f}",
                f"the store makes {t['store_sightings_per_s']:,.0f}/s: "
                + ("keeps up" if t["keeps_up"] else "falls behind"),
            )
        )
    z = results["zones"]
    for count in (10, 200, 1000):
        rows.append(
            (
                "zones" if count == 10 else "",
                f"{count} zones: checks/s batched",
                f"{z[f'checks_per_s_{count}']:,.0f}",
                f"naive contains loop {z[f'naive_checks_per_s_{count}']:,.0f} "
                f"(×{z[f'vs_naive_{count}']:.0f}); "
                f"per point {z[f'per_point_checks_per_s_{count}']:,.0f}"
                + ("; goal ≥ 1,000,000" if count == 1000 else ""),
            )
        )
    i = results["identity"]
    rows += [
        ("identity", "EID table 100k, cold build s", f"{i['eid_rebuild_100k_s']:.2f}", "goal < 2"),
        ("", "  window roll for all, s", f"{i['eid_roll_100k_s']:.2f}", ""),
        ("", "resolutions/s (half misses)", f"{i['resolutions_per_s']:,.0f}", "a dict hit"),
    ]
    o = results["outbox"]
    rows += [
        (
            "outbox",
            "appended durably, events/s",
            f"{o['append_per_s']:,.0f}",
            "batches of 256, FULL",
        ),
        ("", "drained to Mosquitto, events/s", f"{o['drain_per_s']:,.0f}", "QoS 1, PUBACK"),
        ("", "1 h backlog @ 50/s drain, s", f"{o['backlog_1h_drain_s']:.1f}", "goal < 60"),
    ]
    c = results["console"]
    rows += [
        (
            "console",
            "password check, ms",
            f"{c['login_check_ms']:.0f}",
            f"scrypt N=2^14 r=8 p=5, 16 MiB, in a thread; p=1 was {c['old_check_ms']:.0f}",
        ),
    ]
    rows += holds.rows(results["holds"])
    f = results["footprint"]
    rows += [
        (
            "footprint",
            "peak RSS, gateway run, MB",
            f"{f['rss_mb']:.0f}",
            "goal < 80 (100k profiles)",
        ),
        ("", "start → first sighting, s", f"{f['startup_s']:.2f}", "goal < 0.7"),
        (
            "",
            "gateway run, sightings/s",
            f"{f['end_to_end_sightings_per_s']:,.0f}",
            "end to end with SQLite, after start-up",
        ),
    ]
    rows += bandit_rows(results["bandit"])
    print()
    for section, what, value, note in rows:
        print(f"{section:<9} {what:<28} {value:>16}   {note}")
    (REPO / "bench-results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {REPO / 'bench-results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
