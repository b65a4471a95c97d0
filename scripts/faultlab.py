"""The fault lab (issue 23): the real daemon (`gateway run` / `gateway replay` subprocesses),
the real Mosquitto (tests/support/broker.py) and real filesystems, pushed at the edges.

    .venv/bin/python scripts/faultlab.py [scenario ...] [--seed N] [--json FILE]

Scenarios (all by default; a full run takes a few minutes on two cores):

  kills     A: SIGKILLs of `gateway replay` at random moments with the broker up; lost,
               reordered and doubled events and offers against the outbox and a consumer;
               `PRAGMA integrity_check` after each kill
  broker    B: the broker killed -9 mid-drain, consumer online; then with the consumer
               offline (Mosquitto's own durability window: docs/operations.md)
  crashloop C: `gateway run` killed about every second on a backlog: progress every run
  disk      D: state on a small tmpfs: shedding before the floor, a full disk (degraded
               mode, /status, doctor), recovery without a restart
  maps      E: a map drawn in millimetres (fences check, locate), fuzzed maps: time, memory
  inputs    F: NaN/huge/NUL/wildcard config values, broken maps, absurd trace timestamps,
               absurd peer sightings through the broker into a running daemon
  shutdown  G: `replay` SIGTERMed at random points, `run --once` with a radio configured,
               READY=1 only when the control endpoint listens

Prints a table and writes faultlab-results.json. Needs root for the tmpfs (D is reported
as skipped with the reason otherwise) and mosquitto (scripts/test installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests/support (the broker) is imported from the repository
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from tests.support.broker import Consumer

GATEWAY = [sys.executable, "-m", "gateway"]
START = "2031-06-17T10:00:00+02:00"  # where replays place the trace: event ids depend on it
DEMO_TRACE = REPO / "gateway" / "data" / "demo-trace.jsonl"
DEMO_PROFILES = REPO / "gateway" / "data" / "demo-profiles.json"
DEMO_MAP = REPO / "geofences" / "demo-bookstore.geojson"
DAY = 86400.0

Figures = dict[str, Any]


# --- inputs -------------------------------------------------------------------------------


def day_trace(path: Path, days: int, source: Path = DEMO_TRACE) -> Path:
    """A trace (the demo's) played on consecutive days: more events, all distinct."""
    lines = source.read_text().splitlines()
    with path.open("w") as f:
        for day in range(days):
            for line in lines:
                obj = json.loads(line)
                obj["t"] = round(obj["t"] + day * DAY, 3)
                f.write(json.dumps(obj, separators=(",", ":")) + "\n")
    return path


SHOPPERS = 30
SHOPPER_UUID = "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b"


def shop_files(folder: Path) -> tuple[Path, Path]:
    """A busy day (`gateway sim`, 30 shoppers on the demo map, ~45k sightings) and a profile
    per shopper with a cart item in stock: ~28 offers issued a day."""
    trace, profiles = folder / "shop-day.jsonl", folder / "shop-profiles.json"
    if not trace.exists():
        folder.mkdir(parents=True, exist_ok=True)
        args = ["sim", "--map", str(DEMO_MAP), "--shoppers", str(SHOPPERS), "-o", str(trace)]
        done = gw(*args)
        if done.returncode != 0:
            raise RuntimeError(f"gateway sim: {done.stderr}")
        demo = json.loads(DEMO_PROFILES.read_text())
        profile = {
            "language": "en",
            "consent": {"proximity_offers": True, "at": "2026-10-02T18:21:00Z", "source": "app"},
            "cart": [
                {
                    "sku": "978-0142410370",
                    "title": "Matilda",
                    "price": 7.99,
                    "added_at": "2026-11-20T21:05:00Z",
                }
            ],
        }
        shoppers = [
            {
                **profile,
                "profile_id": f"p-shopper-{i:03d}",
                "identifiers": [{"kind": "ibeacon", "value": f"{SHOPPER_UUID}:100:{i}"}],
            }
            for i in range(1, SHOPPERS + 1)
        ]
        profiles.write_text(json.dumps({"profiles": shoppers, "stock": demo["stock"]}))
    return trace, profiles


def shop_trace(path: Path, days: int) -> Path:
    """The busy day on consecutive days."""
    day, _ = shop_files(path.parent.parent / "shop")
    return day_trace(path, days, day)


def lap_trace(path: Path, laps: int) -> Path:
    """The demo trace walked again and again, a minute apart: for paced replays."""
    objs = [json.loads(line) for line in DEMO_TRACE.read_text().splitlines()]
    span = objs[-1]["t"] - objs[0]["t"] + 60.0
    with path.open("w") as f:
        for lap in range(laps):
            for obj in objs:
                f.write(json.dumps({**obj, "t": round(obj["t"] + lap * span, 3)}) + "\n")
    return path


def write_config(
    folder: Path,
    state: Path,
    port: int,
    *,
    mqtt: str = "",
    extra: str = "",
    control: int | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "gw.toml"
    listen = f"127.0.0.1:{control}" if control else ""
    cfg.write_text(
        f"[gateway]\nstate_dir = '{state}'\n[map]\npath = '{DEMO_MAP}'\n"
        f"[sinks]\nstdout = false\n[service]\ncontrol_listen = '{listen}'\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {port}\nbackoff_max_s = 0.3\n"
        f"keepalive_s = 1\n{mqtt}\n{extra}\n"
    )
    return cfg


def gw(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw
    )


def prepare_state(cfg: Path, profiles: Path = DEMO_PROFILES) -> None:
    """Shoppers and stock, so that offers are decided and issued."""
    for kind in ("profiles", "stock"):
        done = gw(kind, "import", str(profiles), "--format", "json", "--config", str(cfg))
        if done.returncode != 0:
            raise RuntimeError(f"{kind} import: {done.stderr}")


def replay_args(cfg: Path, trace: Path, drained: float = 120) -> list[str]:
    return [
        *GATEWAY,
        "replay",
        str(trace),
        "--config",
        str(cfg),
        "--until-drained",
        str(drained),
        "--start",
        START,
    ]


async def spawn(args: list[str], env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int | None, str]:
    """Wait for the process; on timeout kill it (returncode None). Returns (rc, stderr+out)."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return None, (err + out).decode(errors="replace")
    return proc.returncode, (err + out).decode(errors="replace")


async def kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.communicate()


def integrity(db: Path) -> str:
    if not db.exists():
        return "ok"  # killed before the store was created
    conn = sqlite3.connect(db, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


class Reference:
    """What an uninterrupted replay queues (the pipeline is deterministic): ids in outbox
    order per stream, and the offers it issues."""

    def __init__(self, folder: Path, trace: Path, profiles: Path) -> None:
        state = folder / "state"
        cfg = write_config(folder, state, free_port())
        prepare_state(cfg, profiles)
        subprocess.run(replay_args(cfg, trace, 0), capture_output=True, cwd=REPO, timeout=600)
        db = state / "gateway.db"
        rows = query(db, "SELECT event_id, stream, type FROM outbox ORDER BY seq")
        self.rank: dict[str, tuple[str, int]] = {}
        for n, (event_id, stream, _type) in enumerate(rows):
            self.rank[str(event_id)] = (str(stream), n)
        self.ids = set(self.rank)
        self.offer_ids = {str(r[0]) for r in rows if r[2] == "offer.issued"}
        self.offers = int(query(db, "SELECT count(*) FROM offers")[0][0])


def delivery_figures(ref: Reference, consumer: Consumer, db: Path) -> Figures:
    """Lost, reordered (per stream, by first arrival) and doubled against the reference."""
    ids = consumer.ids()
    got = set(ids)
    seen: set[str] = set()
    last: dict[str, int] = {}
    reordered = 0
    for event_id in ids:
        if event_id in seen or event_id not in ref.rank:
            continue
        seen.add(event_id)
        stream, rank = ref.rank[event_id]
        if rank < last.get(stream, -1):
            reordered += 1
        last[stream] = max(rank, last.get(stream, -1))
    offers_received = {
        body["id"] for _, body, _ in consumer.received if body.get("type") == "offer.issued"
    }
    duplicate_rows = query(
        db,
        "SELECT count(*) - count(DISTINCT profile_id || '|' || campaign || '|' || store_day) "
        "FROM offers",
    )[0][0]
    offers_now = int(query(db, "SELECT count(*) FROM offers")[0][0])
    return {
        "events": len(ref.ids),
        "lost": len(ref.ids - got),
        "invented": len(got - ref.ids),
        "reordered": reordered,
        "copies": len(ids) - len(got),
        "offers_issued": len(ref.offer_ids),
        "double_offers": len(offers_received - ref.offer_ids)
        + max(0, offers_now - ref.offers)
        + int(duplicate_rows),
        "invalid_messages": len(consumer.invalid),
    }


def free_port() -> int:
    from tests.support.broker import free_port as _free

    return _free()


async def until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(step)
    return check()


@contextlib.asynccontextmanager
async def broker_and_consumer(folder: Path) -> Any:
    from tests.support.broker import Broker, Consumer

    broker = Broker(folder)
    await asyncio.to_thread(broker.start)
    consumer = Consumer(broker.port)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 10)
        yield broker, consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(broker.stop)


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


# --- A: SIGKILLs of the daemon --------------------------------------------------------------


async def scenario_kills(work: Path, rng: random.Random, kills: int) -> Figures:
    trace = shop_trace(work / "trace.jsonl", 2)
    _, profiles = shop_files(work.parent / "shop")
    ref = await asyncio.to_thread(Reference, work / "ref", trace, profiles)
    async with broker_and_consumer(work / "broker") as (broker, consumer):
        state = work / "state"
        cfg = write_config(work, state, broker.port, mqtt="inflight = 1")
        prepare_state(cfg, profiles)
        checks: list[str] = []
        killed = ended = 0
        for _ in range(kills):
            proc = await spawn(replay_args(cfg, trace))
            try:
                await asyncio.wait_for(proc.wait(), rng.uniform(0.3, 8.0))
                ended += 1
            except TimeoutError:
                await kill(proc)
                killed += 1
            checks.append(integrity(state / "gateway.db"))
        rc, text = await finish(await spawn(replay_args(cfg, trace)), 300)
        await until(lambda: set(consumer.ids()) >= ref.ids, 30)
        checks.append(integrity(state / "gateway.db"))
        figures = delivery_figures(ref, consumer, state / "gateway.db")
    figures.update(
        kills=killed,
        runs_ended_before_kill=ended,
        final_exit=rc,
        integrity_ok=checks.count("ok"),
        integrity_checks=len(checks),
        tracebacks=tracebacks(text),
    )
    figures["ok"] = (
        figures["lost"] == figures["reordered"] == figures["double_offers"] == 0
        and figures["invented"] == 0
        and checks.count("ok") == len(checks)
        and rc == 0
    )
    return figures


# --- B: the broker killed mid-drain ---------------------------------------------------------


async def scenario_broker(work: Path, rng: random.Random, kills: int) -> Figures:
    from tests.support.broker import Broker, Consumer

    trace = shop_trace(work / "trace.jsonl", 2)
    _, profiles = shop_files(work.parent / "shop")
    ref = await asyncio.to_thread(Reference, work / "ref", trace, profiles)
    figures: Figures = {}
    # 1. consumer online: what the broker acknowledged it has also passed on.
    async with broker_and_consumer(work / "broker") as (broker, consumer):
        state = work / "state"
        cfg = write_config(work, state, broker.port, mqtt="inflight = 1")
        prepare_state(cfg, profiles)
        proc = await spawn(replay_args(cfg, trace, 240))
        await until(lambda: len(consumer.ids()) >= 5, 60)
        mid_drain = 0
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 2.0))
            if len(set(consumer.ids())) < len(ref.ids):
                mid_drain += 1
            await asyncio.to_thread(broker.kill)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(broker.start)
        rc, text = await finish(proc, 300)
        await until(lambda: set(consumer.ids()) >= ref.ids, 30)
        online = delivery_figures(ref, consumer, state / "gateway.db")
        figures.update(
            broker_kills=kills,
            kills_mid_drain=mid_drain,
            lost=online["lost"],
            reordered=online["reordered"],
            copies=online["copies"],
            double_offers=online["double_offers"],
            events=online["events"],
            final_exit=rc,
            integrity=integrity(state / "gateway.db"),
            tracebacks=tracebacks(text),
        )
    # 2. consumer offline while the broker is killed mid-drain: Mosquitto sends PUBACK
    # before its persistence holds the message (it saves every autosave_interval, or every
    # change with autosave_on_changes), so a kill -9 can drop what it acknowledged. Measured
    # with the tests' settings (save on every change) and with Mosquitto's defaults.
    offline: dict[str, list[int]] = {}
    for setting, lines in (
        ("save_every_change", ()),
        ("mosquitto_defaults", ("autosave_interval 1800", "autosave_on_changes false")),
    ):
        broker = Broker(work / f"broker-{setting}")
        conf = [
            line
            for line in broker.conf.read_text().splitlines()
            if not (lines and line.startswith("autosave"))
        ]
        broker.conf.write_text("\n".join([*conf, *lines]) + "\n")
        await asyncio.to_thread(broker.start)
        lost: list[int] = []
        try:
            for attempt in range(2):
                name = f"offline-{setting}-{attempt}"
                subscriber = Consumer(broker.port, name=name)
                task = asyncio.create_task(subscriber.run())
                await asyncio.wait_for(subscriber.ready.wait(), 10)
                task.cancel()  # the durable session stays: the broker queues its messages
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                state = work / f"{name}-state"
                cfg = write_config(work / name, state, broker.port, mqtt="inflight = 1")
                prepare_state(cfg, profiles)
                proc = await spawn(replay_args(cfg, trace, 120))
                db = state / "gateway.db"
                await until(
                    lambda d=db: (
                        d.exists()  # type: ignore[misc]
                        and int(query(d, "SELECT count(*) FROM delivered")[0][0]) >= 100
                    ),
                    60,
                    0.1,
                )
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                await asyncio.to_thread(broker.kill)  # mid-drain
                await asyncio.sleep(0.3)
                await asyncio.to_thread(broker.start)
                rc2, _ = await finish(proc, 300)
                again = Consumer(broker.port, name=name)
                task = asyncio.create_task(again.run())
                await asyncio.wait_for(again.ready.wait(), 10)
                await until(lambda c=again: set(c.ids()) >= ref.ids, 5)  # type: ignore[misc]
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                lost.append(len(ref.ids - set(again.ids())) if rc2 == 0 else -1)
        finally:
            await asyncio.to_thread(broker.stop)
        offline[setting] = lost
    figures["offline_consumer_lost_by_broker"] = offline
    figures["ok"] = (
        figures["lost"] == figures["reordered"] == figures["double_offers"] == 0
        and figures["final_exit"] == 0
        and figures["integrity"] == "ok"
    )
    figures["note"] = (
        "offline-consumer losses are Mosquitto's persistence window (docs/operations.md, "
        "the store's broker), not the gateway's"
    )
    return figures


# --- C: a crash loop ------------------------------------------------------------------------


async def scenario_crashloop(work: Path, rng: random.Random, runs: int) -> Figures:
    trace = shop_trace(work / "trace.jsonl", 2)
    _, profiles = shop_files(work.parent / "shop")
    ref = await asyncio.to_thread(Reference, work / "ref", trace, profiles)
    state = work / "state"
    # The backlog: the whole trace queued while the broker is away.
    cfg = write_config(work / "fill", state, free_port())
    prepare_state(cfg, profiles)
    await finish(await spawn(replay_args(cfg, trace, 0)), 300)
    db = state / "gateway.db"
    backlog = int(query(db, "SELECT count(*) FROM outbox")[0][0])
    async with broker_and_consumer(work / "broker") as (broker, consumer):
        port = free_port()
        cfg = write_config(
            work, state, broker.port, control=port, mqtt="inflight = 1\nbatch_events = 1"
        )
        progress: list[int] = []
        startup: list[float] = []
        for _ in range(runs):
            before = int(query(db, "SELECT count(*) FROM delivered")[0][0])
            if not query(db, "SELECT 1 FROM outbox LIMIT 1"):
                break
            started = time.monotonic()
            proc = await spawn([*GATEWAY, "run", "--config", str(cfg)])

            # A crash about a second after the daemon is up (python's start-up alone takes
            # 1-2 s on this box): connected to the broker, then killed.
            def connected() -> bool:
                doc = status(port, state)
                return bool(doc and doc["mqtt"]["connected"])

            await until(connected, 30, 0.1)
            startup.append(time.monotonic() - started)
            await asyncio.sleep(rng.uniform(0.5, 1.2))
            await kill(proc)
            progress.append(int(query(db, "SELECT count(*) FROM delivered")[0][0]) - before)
        left = int(query(db, "SELECT count(*) FROM outbox")[0][0])
        proc = await spawn([*GATEWAY, "run", "--config", str(cfg)])
        await until(lambda: not query(db, "SELECT 1 FROM outbox LIMIT 1"), 120, 0.5)
        proc.send_signal(signal.SIGTERM)
        rc, text = await finish(proc, 30)
        await until(lambda: set(consumer.ids()) >= ref.ids, 30)
        figures = delivery_figures(ref, consumer, db)
    figures.update(
        backlog=backlog,
        runs=len(progress),
        progress_min=min(progress) if progress else 0,
        progress_max=max(progress) if progress else 0,
        runs_without_progress=sum(1 for p in progress if p <= 0),
        up_to_connected_s=round(max(startup), 1) if startup else None,
        left_after_loop=left,
        final_exit=rc,
        integrity=integrity(db),
        tracebacks=tracebacks(text),
    )
    figures["ok"] = (
        figures["runs_without_progress"] == 0
        and figures["lost"] == figures["reordered"] == 0
        and figures["integrity"] == "ok"
    )
    return figures


# --- D: the full disk -----------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[str | None]:
    """A small tmpfs at `mount`; yields None, or why it could not be mounted."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        yield f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int) -> None:
    free = shutil.disk_usage(path.parent).free
    with path.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))


def control_get(port: int, state: Path, what: str) -> str | None:
    token_file = state / "control.token"
    headers = {}
    if token_file.exists():
        headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{what}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


def _answers(port: int, state: Path) -> bool:
    return status(port, state) is not None


def status(port: int, state: Path) -> dict[str, Any] | None:
    text = control_get(port, state, "/status")
    return None if text is None else dict(json.loads(text))


async def scenario_disk(work: Path, rng: random.Random) -> Figures:
    del rng
    figures: Figures = {}
    mount = work / "small"
    with tmpfs(mount, "6m") as problem:
        if problem:
            return {"skipped": problem, "ok": True}
        # 1. The floor: less free space than min_free_mb from the start. Shedding keeps a
        # reserve of free pages; the disk never fills.
        state = mount / "state1"
        trace = day_trace(work / "trace.jsonl", 30)
        port = free_port()
        cfg = write_config(
            work / "floor",
            state,
            free_port(),
            control=port,
            extra=f"[outbox]\nmin_free_mb = 3\n[sources.replay]\npath = '{trace}'\n",
        )
        prepare_state(cfg)
        fill(mount / "filler1", 2_500_000)
        proc = await spawn([*GATEWAY, "run", "--config", str(cfg)])
        lowest_free = shutil.disk_usage(mount).free
        doc: dict[str, Any] | None = None
        for _ in range(60):
            await asyncio.sleep(0.5)
            lowest_free = min(lowest_free, shutil.disk_usage(mount).free)
            doc = status(port, state) or doc
        metrics = control_get(port, state, "/metrics") or ""
        proc.send_signal(signal.SIGTERM)
        rc, text = await finish(proc, 30)
        dropped = doc["outbox"]["dropped"] if doc else {}
        figures["floor"] = {
            "shed": sum(v for k, v in dropped.items() if k.startswith("shed:")),
            "dropped": dropped,
            "disk_full_seen": bool(doc and doc["outbox"]["disk_full"])
            or any(k.startswith("disk_full:") for k in dropped),
            "lowest_free_kb": lowest_free // 1024,
            "in_metrics": "gateway_outbox_dropped_total{" in metrics,
            "exit": rc,
            "tracebacks": tracebacks(text),
        }
        (mount / "filler1").unlink()
        shutil.rmtree(state)
        # 2. No floor: the disk fills. Degraded mode, /status says so, doctor names it;
        # the filler removed, batches are saved again without a restart.
        state = mount / "state2"
        trace = lap_trace(work / "laps.jsonl", 40)
        port = free_port()
        cfg = write_config(
            work / "full",
            state,
            free_port(),
            control=port,
            extra=f"[outbox]\nmin_free_mb = 0\n[sources.replay]\npath = '{trace}'\nspeed = 60\n",
        )
        prepare_state(cfg)
        fill(mount / "filler2", 64 * 1024)
        proc = await spawn([*GATEWAY, "run", "--config", str(cfg)])
        started = time.monotonic()
        degraded_at: float | None = None
        doc = None
        while time.monotonic() - started < 60 and proc.returncode is None:
            await asyncio.sleep(0.5)
            doc = status(port, state) or doc
            if doc and doc["outbox"]["disk_full"]:
                degraded_at = time.monotonic() - started
                break
        doctor = gw("doctor", "--config", str(cfg), timeout=60)
        healthz = control_get(port, state, "/healthz")
        depth_full = sum(doc["outbox"]["depth"].values()) if doc else 0
        (mount / "filler2").unlink()
        recovered_at: float | None = None
        depth_after = depth_full
        while degraded_at is not None and time.monotonic() - started < 120:
            await asyncio.sleep(0.5)
            doc = status(port, state) or doc
            if doc and not doc["outbox"]["disk_full"]:
                depth_after = sum(doc["outbox"]["depth"].values())
                if depth_after > depth_full:
                    recovered_at = time.monotonic() - started
                    break
        alive = proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        rc, text = await finish(proc, 30)
        doctor_text = doctor.stdout + doctor.stderr
        figures["full"] = {
            "degraded_after_s": None if degraded_at is None else round(degraded_at, 1),
            "healthz_while_full": healthz is not None,
            "doctor_says_full": "disk is full" in doctor_text,
            "doctor_says_chown": "chown" in doctor_text,
            "recovered_after_s": None
            if recovered_at is None or degraded_at is None
            else round(recovered_at - degraded_at, 1),
            "depth_full_then_after": [depth_full, depth_after],
            "dropped": doc["outbox"]["dropped"] if doc else {},
            "alive_until_sigterm": alive,
            "exit": rc,
            "tracebacks": tracebacks(text),
            "integrity": integrity(state / "gateway.db"),
        }
    floor, full = figures["floor"], figures["full"]
    figures["ok"] = (
        floor["shed"] > 0
        and not floor["disk_full_seen"]
        and floor["in_metrics"]
        and floor["tracebacks"] == 0
        and full["degraded_after_s"] is not None
        and full["recovered_after_s"] is not None
        and full["doctor_says_full"]
        and not full["doctor_says_chown"]
        and full["alive_until_sigterm"]
        and full["tracebacks"] == 0
        and full["integrity"] == "ok"
    )
    return figures


# --- E: maps --------------------------------------------------------------------------------


def _scaled(data: Any, factor: float, inside: bool = False) -> Any:
    """The map with every coordinate multiplied by `factor` (1000: drawn in millimetres)."""
    if isinstance(data, list):
        if inside and data and all(isinstance(v, (int, float)) for v in data):
            return [v * factor for v in data]
        return [_scaled(v, factor, inside) for v in data]
    if isinstance(data, dict):
        return {k: _scaled(v, factor, inside or k == "coordinates") for k, v in data.items()}
    return data


def measured(args: list[str], stdin: bytes = b"", timeout: float = 60) -> Figures:
    """Run a command; its wall time, its own peak RSS (MB), exit code, tracebacks."""
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as output:
        given.write(stdin)
        given.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen(args, stdin=given, stdout=output, stderr=output, cwd=REPO)
        peak_kb = 0
        status: int | None = None
        while status is None:
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, peak_kb = code, usage.ru_maxrss
            elif time.monotonic() - started > timeout:
                proc.kill()
                _, _, usage = os.wait4(proc.pid, 0)
                peak_kb = usage.ru_maxrss
                break
            else:
                time.sleep(0.02)
        proc.returncode = -1  # reaped here: keep Popen from waiting again
        output.seek(0)
        text = output.read().decode(errors="replace")
    return {
        "s": round(time.monotonic() - started, 2),
        "peak_rss_mb": round(peak_kb / 1024),
        "exit": None if status is None else os.waitstatus_to_exitcode(status),
        "tracebacks": tracebacks(text),
        "first_line": text.strip().splitlines()[0][:160] if text.strip() else "",
    }


class _Hung(Exception):
    pass


def _mutate(base: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A hostile variant of the demo map: other units, huge or tiny zones, many vertices,
    many zones, broken geometries and properties."""
    data: dict[str, Any] = json.loads(json.dumps(base))
    feats: list[Any] = data["features"]
    for _ in range(rng.randint(1, 4)):
        f = rng.choice(feats)
        geometry = f.get("geometry") if isinstance(f, dict) else None
        g: dict[str, Any] = geometry if isinstance(geometry, dict) else {}
        props = f.get("properties") if isinstance(f, dict) else None
        op = rng.randrange(12)
        if op == 0:  # other units: micrometres to kilometres and beyond
            data = _scaled(data, 10.0 ** rng.randint(-4, 7))
            feats = data["features"]
        elif op == 1:  # one enormous triangle
            big = rng.uniform(1, 1e7)
            g["type"], g["coordinates"] = "Polygon", [[[0, 0], [big, 0], [0, big], [0, 0]]]
        elif op == 2:  # a circle of up to 20,000 vertices
            n = rng.randint(3, 20000)
            ring = [
                [math.cos(2 * math.pi * i / n) * 50, math.sin(2 * math.pi * i / n) * 50]
                for i in range(n)
            ]
            g["type"], g["coordinates"] = "Polygon", [[*ring, ring[0]]]
        elif op == 3:
            g["coordinates"] = rng.choice(
                [[], None, "x", [[]], [math.nan, 1], [1e308, 1e308], {"a": 1}]
            )
        elif op == 4:
            f["properties"] = rng.choice([None, [], "x", 7, {}])
        elif op == 5:
            data["properties"] = rng.choice([[], "x", 1, None])
        elif op == 6:
            g["type"] = rng.choice(["Point", "LineString", "GeometryCollection", "Nope", None])
        elif op == 7:  # hundreds of zones of any size, anywhere
            for _ in range(rng.randint(10, 400)):
                x, y = rng.uniform(-1e5, 1e5), rng.uniform(-1e5, 1e5)
                w = rng.uniform(0.001, 1e5)
                square = [[x, y], [x + w, y], [x + w, y + w], [x, y + w], [x, y]]
                feats.append(
                    {
                        "type": "Feature",
                        "properties": {"kind": "zone", "id": f"z{rng.randrange(1 << 40):x}"},
                        "geometry": {"type": "Polygon", "coordinates": [square]},
                    }
                )
        elif op == 8 and isinstance(props, dict):
            props["level"] = rng.choice([10**9, -1, 1.5, "x", None, math.inf])
        elif op == 9 and isinstance(props, dict):
            props["id"] = rng.choice(["", "x" * 5000, "a\x00b", 5])
        elif op == 10:
            data["features"] = feats = feats * rng.randint(2, 30)
        elif isinstance(f, dict):
            f["geometry"] = None
    return data


def fuzz_maps(seed: int, count: int) -> Figures:
    """Load and index `count` hostile maps (in a child process with 1.5 GB of address space
    at most); each must load or be refused with a MapError within 10 s."""
    from gateway.site.storemap import MapError, parse_map
    from gateway.zones.index import ZoneIndex

    resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    def alarm(*_: object) -> None:
        raise _Hung

    signal.signal(signal.SIGALRM, alarm)
    base = json.loads(DEMO_MAP.read_text())
    rng = random.Random(seed)
    crashed: dict[str, int] = {}
    counts = {"ok": 0, "refused": 0, "hung": 0}
    slowest = 0.0
    for i in range(count):
        data = _mutate(base, rng)
        started = time.monotonic()
        signal.alarm(10)
        try:
            store = parse_map(data, f"fuzz-{i}")
            index = ZoneIndex(store.zones)
            for _ in range(200):
                index.containing(rng.uniform(-50, 50), rng.uniform(-50, 50))
            counts["ok"] += 1
        except MapError:
            counts["refused"] += 1
        except _Hung:
            counts["hung"] += 1
        except Exception as exc:  # what the lab looks for: anything but a clear refusal
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            crashed[key] = crashed.get(key, 0) + 1
        finally:
            signal.alarm(0)
        slowest = max(slowest, time.monotonic() - started)
    return {
        **counts,
        "crashed": crashed,
        "slowest_s": round(slowest, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


async def scenario_maps(work: Path, rng: random.Random, fuzzed: int) -> Figures:
    data = json.loads(DEMO_MAP.read_text())
    mm = work / "millimetres.geojson"
    mm.write_text(json.dumps(_scaled(data, 1000.0)))
    check = await asyncio.to_thread(measured, [*GATEWAY, "fences", "check", str(mm)])
    sightings = "\n".join(DEMO_TRACE.read_text().splitlines()[:3000]).encode()
    locate = await asyncio.to_thread(
        measured, [*GATEWAY, "locate", "--map", str(mm)], sightings, 120
    )
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, __file__, "--fuzz-maps", str(rng.randrange(1 << 30)), str(fuzzed)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    try:
        fuzz: Figures = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        fuzz = {"worker_failed": done.stderr[-500:]}
    fuzz["maps"] = fuzzed
    fuzz["total_s"] = round(time.monotonic() - started, 1)
    figures: Figures = {
        "mm_fences_check": check,
        "mm_locate": locate,
        "mm_warned": "2 km" in check["first_line"] or "metres" in check["first_line"],
        "fuzzed": fuzz,
    }
    figures["ok"] = (
        check["tracebacks"] == 0
        and check["exit"] is not None
        and locate["exit"] == 0
        and locate["s"] < 60
        and fuzz.get("hung") == 0
        and not fuzz.get("crashed")
        and "worker_failed" not in fuzz
    )
    return figures


# --- F: hostile configs, maps, timestamps, peers --------------------------------------------

CONFIG_CASES: list[tuple[str, str]] = [  # (what, TOML): doctor names `what`'s first word
    ("process_noise_db = nan", "[presence]\nprocess_noise_db = nan\n"),
    ("cooldown_s = nan", "[offers.limits]\ncooldown_s = nan\n"),
    ("dwell_s = 1e30", "[zones]\ndwell_s = 1e30\n"),
    ("stale_after_s = inf", "[presence]\nstale_after_s = inf\n"),
    ("timezone with NUL", '[gateway]\ntimezone = "Europe/Berlin\\u0000"\n'),
    ("timezone 5000 chars", "[gateway]\ntimezone = '" + "x" * 5000 + "'\n"),
    ("state_dir with NUL", '[gateway]\nstate_dir = "state\\u0000x"\n'),
    ("map.path 5000 chars", "[map]\npath = '" + "m" * 5000 + "'\n"),
    ("quiet_hours with NUL", '[offers.limits]\nquiet_hours = ["20:00\\u0000", "09:00"]\n'),
    ("device_profile 300 chars", "[presence]\ndevice_profile = '" + "p" * 300 + "'\n"),
    ("device_profile ../", "[presence]\ndevice_profile = '../../../etc/passwd'\n"),
    ("gateway.store = 'shop/+'", "[gateway]\nstore = 'shop/+'\n"),
    ("gateway.id = '#'", "[gateway]\nid = '#'\n"),
    ("topic_prefix 'a/+/b'", "[mqtt]\ntopic_prefix = 'a/+/b'\n"),
    (
        "reader_profile unknown",
        "[nfc.touchpoints.counter-reader]\nzone = 'pickup-counter'\n"
        "reader_profile = 'no-such-reader'\n",
    ),
]


def _merge(base: str, override: str) -> str:
    """TOML with `override`'s tables replacing the same keys of `base` (by appending the
    keys under a repeated table header TOML would refuse: so rewrite the base)."""
    import tomllib

    merged: dict[str, Any] = tomllib.loads(base)
    for table, values in tomllib.loads(override).items():
        target = merged
        merged.setdefault(table, {})
        target = merged[table]
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key].update(value)
            else:
                target[key] = value
    return _toml(merged)


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            tables.append((name, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, value in tables:
        out += f"[{'.'.join(_key(k) for k in name.split('.'))}]\n" + _toml(value, name)
    return out


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else repr(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # TOML basic strings take JSON's escapes
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(type(value))


MAP_CASES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("top-level properties a list", lambda d: d.__setitem__("properties", [1, 2])),
    (
        "an empty Point",
        lambda d: d["features"].append(
            {
                "type": "Feature",
                "properties": {"kind": "gateway", "id": "gw-x"},
                "geometry": {"type": "Point", "coordinates": []},
            }
        ),
    ),
    (
        "a NaN coordinate",
        lambda d: d["features"][0]["geometry"].__setitem__(
            "coordinates", [[[0, 0], [1, 0], [math.nan, 1], [0, 0]]]
        ),
    ),
]


def _clean_refusal(done: subprocess.CompletedProcess[str], key: str = "") -> Figures:
    """Exit code, tracebacks, and the line that names `key` (else the first line)."""
    text = (done.stderr + done.stdout).strip()
    lines = text.splitlines() or [""]
    named = [line for line in lines if (key in line and "FAIL" in line) or "gateway:" in line]
    return {
        "exit": done.returncode,
        "tracebacks": tracebacks(text),
        "message": (named or lines)[0][:220],
    }


async def scenario_inputs(work: Path, rng: random.Random) -> Figures:
    del rng
    figures: Figures = {}
    base = write_config(
        work / "base",
        work / "state",
        free_port(),
        control=free_port(),
        extra=f"[sources.replay]\npath = '{DEMO_TRACE}'\n",
    )
    base_text = base.read_text()
    configs: dict[str, Figures] = {}
    for label, override in CONFIG_CASES:
        folder = work / "cfg" / str(len(configs))
        folder.mkdir(parents=True)
        cfg = folder / "gw.toml"
        cfg.write_text(_merge(base_text, override))
        doctor = gw("doctor", "--config", str(cfg), timeout=60)
        start = gw("run", "--once", "--config", str(cfg), timeout=60)
        key = label.split()[0].split("_")[0]
        configs[label] = {
            "doctor": _clean_refusal(doctor, key),
            "run": _clean_refusal(start, key),
            "doctor_names_it": any(
                key in line and "FAIL" in line for line in doctor.stdout.splitlines()
            ),
        }
    figures["configs"] = configs
    maps: dict[str, Figures] = {}
    for label, change in MAP_CASES:
        data = json.loads(DEMO_MAP.read_text())
        change(data)
        path = work / f"map-{len(maps)}.geojson"
        path.write_text(json.dumps(data))
        cfg = write_config(work / f"map-{len(maps)}", work / "state", free_port())
        cfg.write_text(cfg.read_text().replace(str(DEMO_MAP), str(path)))
        maps[label] = {
            "fences_check": _clean_refusal(gw("fences", "check", str(path))),
            "locate": _clean_refusal(
                gw("locate", "--map", str(path), input=DEMO_TRACE.read_text()[:20000])
            ),
            "run": _clean_refusal(gw("run", "--once", "--config", str(cfg))),
        }
    figures["maps"] = maps
    # absurd timestamps in a trace: refused line by line, the replay goes on
    lines = DEMO_TRACE.read_text().splitlines()
    first = json.loads(lines[0])
    hostile = [
        {**first, "t": 1e15},
        {**first, "t": 1e300},
        {**first, "t": -5},
        {**first, "t": "soon"},
        {**first, "t": 4102444800.5},  # 2100-01-01
    ]
    trace = work / "absurd.jsonl"
    trace.write_text("\n".join([*(json.dumps(h) for h in hostile), *lines, '{"t": NaN}']) + "\n")
    clean_cfg = write_config(work / "ts-clean", work / "ts-clean" / "state", free_port())
    clean = gw(*replay_args(clean_cfg, DEMO_TRACE, 0)[3:], timeout=120)
    cfg = write_config(work / "ts", work / "ts" / "state", free_port())
    done = gw(*replay_args(cfg, trace, 0)[3:], timeout=120)
    text = done.stdout + done.stderr

    def produced(out: str) -> int:
        for part in out.split(";"):
            if "events produced" in part:
                return int(part.split()[-1])
        return -1

    figures["trace_timestamps"] = {
        "hostile_lines": len(hostile) + 1,
        "rejected_lines_reported": sum(1 for line in text.splitlines() if "absurd.jsonl:" in line),
        "events_clean": produced(clean.stdout),
        "events_with_hostile": produced(done.stdout),
        "tracebacks": tracebacks(text),
    }
    figures["peers"] = await _peers(work / "peers")
    ok_configs = all(
        c["doctor_names_it"]
        and c["doctor"]["tracebacks"] == 0
        and c["run"]["tracebacks"] == 0
        and c["run"]["exit"] not in (0, None)
        for c in configs.values()
    )
    ok_maps = all(m[k]["tracebacks"] == 0 and m[k]["exit"] != 0 for m in maps.values() for k in m)
    ts = figures["trace_timestamps"]
    peers = figures["peers"]
    figures["ok"] = (
        ok_configs
        and ok_maps
        and ts["tracebacks"] == 0
        and ts["events_clean"] == ts["events_with_hostile"] > 0
        and peers["ok"]
    )
    return figures


def _metric(text: str, prefix: str, contains: str = "") -> float:
    """The sum of the samples of a Prometheus exposition whose line starts with `prefix`."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and contains in line
    )


def _absurd_peer_batches(key: bytes) -> list[tuple[str, bytes]]:
    """Batches signed with the store's peer key, from a peer 'gw-evil': sightings far in
    the future, far in the past, negative; sent_at honest or just as absurd."""
    from gateway.sync.peers import MAGIC, PeerTopic, _mac

    topic = PeerTopic("storegate/v1", "demo-bookstore", "gw-evil")
    ad = "0201061aff4c0002150f1e2d3c4b5a49788695a4b3c2d1e0f900010002c5"
    batches = []
    for t in (1e15, 1e300, -1.0, time.time() + 3600, time.time() - 86400 * 365):
        for sent_at in (time.time(), t):
            sighting = {"t": t, "kind": "ble", "receiver": "gw-entrance", "rssi": -60, "ad": ad}
            body = json.dumps(
                {"v": 1, "gateway": "gw-evil", "sent_at": sent_at, "sightings": [sighting]}
            ).encode()
            batches.append((topic.topic, MAGIC + _mac(key, topic, body) + b"\n" + body))
    return batches


async def _peers(work: Path) -> Figures:
    """A running daemon with peer sightings on; a 'peer' publishes absurd batches signed
    with the store's key. The daemon stays connected and produces the same events."""
    import aiomqtt

    key = "ab" * 16
    trace = lap_trace(work.parent / "peer-laps.jsonl", 1)
    counts: list[int] = []
    connects: list[int] = []
    rejected = 0.0
    text_all = ""
    async with broker_and_consumer(work / "broker") as (broker, _consumer):
        for hostile in (False, True):
            state = work / f"state-{int(hostile)}"
            port = free_port()
            cfg = write_config(
                work / f"cfg-{int(hostile)}",
                state,
                broker.port,
                control=port,
                mqtt=f"peer_key = '{key}'\npeer_sightings = true\n",
                extra=f"[sources.replay]\npath = '{trace}'\nspeed = 20\nstart = '{START}'\n",
            )
            proc = await spawn([*GATEWAY, "run", "--once", "--config", str(cfg)])
            if hostile:
                await until(partial(_answers, port, state), 20, 0.2)
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="evil") as client:
                    for topic, payload in _absurd_peer_batches(bytes.fromhex(key)):
                        await client.publish(topic, payload, qos=0)
                        await asyncio.sleep(0.05)
            doc_before_end: dict[str, Any] | None = None
            metrics = ""
            while proc.returncode is None:
                doc_before_end = status(port, state) or doc_before_end
                metrics = control_get(port, state, "/metrics") or metrics
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.5)
            _, text = await finish(proc, 60)
            text_all += text
            db = state / "gateway.db"
            counts.append(
                int(query(db, "SELECT count(*) FROM outbox")[0][0])
                + int(query(db, "SELECT count(*) FROM delivered")[0][0])
            )
            connects.append(int(_metric(metrics, "gateway_mqtt_connects_total")))
            if hostile:
                rejected = _metric(metrics, "gateway_peer_sightings_total{", "rejected")
    figures: Figures = {
        "events_clean": counts[0],
        "events_with_absurd_peers": counts[1],
        "absurd_batches_sent": len(_absurd_peer_batches(bytes.fromhex(key))),
        "peer_rejections_counted": int(rejected),
        "broker_connects": connects,
        "tracebacks": tracebacks(text_all),
    }
    figures["ok"] = (
        counts[0] == counts[1] > 0
        and figures["tracebacks"] == 0
        and rejected > 0
        and connects[1] == connects[0] == 1  # the session was never dropped
    )
    return figures


# --- G: shutdown and readiness --------------------------------------------------------------


async def scenario_shutdown(work: Path, rng: random.Random, cancels: int) -> Figures:
    figures: Figures = {}
    trace = day_trace(work / "trace.jsonl", 2)
    async with broker_and_consumer(work / "broker") as (broker, _consumer):
        # `replay` interrupted (SIGINT: asyncio cancels the main task, the path a pipeline
        # error takes too) and `run` stopped (SIGTERM: its handler, the bounded drain), each
        # at a random point of its first seconds: connecting, handshake, subscribing, draining.
        for how, sig in (("replay_sigint", signal.SIGINT), ("run_sigterm", signal.SIGTERM)):
            exits: dict[str, int] = {}
            hung = 0
            slowest = 0.0
            text_all = ""
            for n in range(cancels):
                state = work / f"{how}-state-{n}"
                if how == "replay_sigint":
                    cfg = write_config(work / f"{how}-{n}", state, broker.port)
                    args = replay_args(cfg, trace, 30)
                else:
                    cfg = write_config(
                        work / f"{how}-{n}",
                        state,
                        broker.port,
                        extra=f"[sources.replay]\npath = '{trace}'\n",
                    )
                    args = [*GATEWAY, "run", "--config", str(cfg)]
                proc = await spawn(args)
                # `run` installs its handlers after ~2 s of imports here: later moments too
                await asyncio.sleep(rng.uniform(0.0, 3.0 if how == "replay_sigint" else 6.0))
                sent = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                rc, text = await finish(proc, 20)
                text_all += text
                if rc is None:
                    hung += 1
                else:
                    slowest = max(slowest, time.monotonic() - sent)
                exits[str(rc)] = exits.get(str(rc), 0) + 1
            figures[how] = {
                "runs": cancels,
                "ended_by_the_signal_itself": exits.get(str(-sig), 0),
                "hung": hung,
                "exit_codes": exits,
                "slowest_exit_s": round(slowest, 2),
                "tracebacks": tracebacks(text_all),
            }
        # run --once with a radio configured: ends with the replay (the radio is stopped)
        cfg = write_config(
            work / "radio",
            work / "radio-state",
            broker.port,
            extra=f"[sources.replay]\npath = '{trace}'\n"
            "[sources.ble.hci0]\nreceiver = 'gw-entrance'\n",
        )
        started = time.monotonic()
        rc, text = await finish(await spawn([*GATEWAY, "run", "--once", "--config", str(cfg)]), 90)
        cfg2 = write_config(
            work / "radio-only",
            work / "radio-state2",
            broker.port,
            extra="[sources.ble.hci0]\nreceiver = 'gw-entrance'\n",
        )
        rc2, text2 = await finish(
            await spawn([*GATEWAY, "run", "--once", "--config", str(cfg2)]), 30
        )
        figures["run_once_with_radio"] = {
            "log_if_hung": "" if rc is not None else text[-1500:],
            "exit": rc,
            "s": round(time.monotonic() - started, 1),
            "tracebacks": tracebacks(text),
            "radios_only_exit": rc2,
            "radios_only_message": next(
                (line for line in text2.splitlines() if "--once" in line), ""
            )[:150],
        }
        figures["ready"] = await _ready(work, broker.port, 8)
    g = figures
    figures["ok"] = (
        g["replay_sigint"]["hung"] == g["run_sigterm"]["hung"] == 0
        and g["replay_sigint"]["tracebacks"] == g["run_sigterm"]["tracebacks"] == 0
        and g["run_once_with_radio"]["exit"] is not None
        and g["run_once_with_radio"]["radios_only_exit"] not in (0, None)
        and g["ready"]["not_listening_at_ready"] == 0
        and g["ready"]["ready_seen"] == g["ready"]["starts"]
    )
    return figures


async def _ready(work: Path, broker_port: int, starts: int) -> Figures:
    """READY=1 over $NOTIFY_SOCKET, then at once a TCP connect to the control endpoint."""
    not_listening = seen = 0
    for n in range(starts):
        sock_path = work / f"notify-{n}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.setblocking(False)
        port = free_port()
        cfg = write_config(
            work / f"ready-{n}", work / f"ready-state-{n}", broker_port, control=port
        )
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        proc = await spawn([*GATEWAY, "run", "--config", str(cfg)], env)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                try:
                    message = await asyncio.wait_for(loop.sock_recv(sock, 4096), 1)
                except TimeoutError:
                    continue
                if b"READY=1" in message:
                    seen += 1
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=1):
                            pass
                    except OSError:
                        not_listening += 1
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            await finish(proc, 20)
            sock.close()
    return {"starts": starts, "ready_seen": seen, "not_listening_at_ready": not_listening}


# --- the table ------------------------------------------------------------------------------

SCENARIOS = ("kills", "broker", "crashloop", "disk", "maps", "inputs", "shutdown")
# What each re-runs of issue 23 ("core": the delivery core's guarantees).
ITEMS = {
    "kills": "A core",
    "broker": "B core",
    "crashloop": "C 7",
    "disk": "D 2,5",
    "maps": "E 1",
    "inputs": "F 3,6,8",
    "shutdown": "G 4,8",
}


async def run_scenario(name: str, work: Path, rng: random.Random, quick: bool) -> Figures:
    work.mkdir(parents=True, exist_ok=True)
    if name == "kills":
        return await scenario_kills(work, rng, 8 if quick else 20)
    if name == "broker":
        return await scenario_broker(work, rng, 3 if quick else 4)
    if name == "crashloop":
        return await scenario_crashloop(work, rng, 6 if quick else 10)
    if name == "disk":
        return await scenario_disk(work, rng)
    if name == "maps":
        return await scenario_maps(work, rng, 60 if quick else 200)
    if name == "inputs":
        return await scenario_inputs(work, rng)
    return await scenario_shutdown(work, rng, 6 if quick else 12)


def summary(name: str, f: Figures) -> str:
    """One line of figures per scenario."""
    if "error" in f or "skipped" in f:
        return str(f.get("error") or f.get("skipped"))
    if name == "kills":
        return (
            f"{f['kills']} SIGKILLs, {f['events']} events, {f['offers_issued']} offers: lost "
            f"{f['lost']}, reordered {f['reordered']}, double offers {f['double_offers']}, "
            f"copies {f['copies']}; integrity ok {f['integrity_ok']}/{f['integrity_checks']}"
        )
    if name == "broker":
        return (
            f"{f['broker_kills']} broker kill -9 ({f['kills_mid_drain']} mid-drain), "
            f"{f['events']} events: lost {f['lost']}, reordered {f['reordered']}, double offers "
            f"{f['double_offers']}; consumer offline, lost by the broker: "
            f"{f['offline_consumer_lost_by_broker']}"
        )
    if name == "crashloop":
        return (
            f"backlog {f['backlog']}, {f['runs']} runs killed ~1 s after connecting: progress "
            f"{f['progress_min']}..{f['progress_max']} per run, {f['runs_without_progress']} "
            f"without; then lost {f['lost']}, reordered {f['reordered']}"
        )
    if name == "disk":
        floor, full = f["floor"], f["full"]
        return (
            f"floor: shed {floor['shed']}, disk full {floor['disk_full_seen']}, lowest free "
            f"{floor['lowest_free_kb']} kB; full: degraded after {full['degraded_after_s']} s, "
            f"/healthz {full['healthz_while_full']}, doctor 'disk is full' "
            f"{full['doctor_says_full']}, saved again {full['recovered_after_s']} s after room, "
            f"alive {full['alive_until_sigterm']}, tracebacks {full['tracebacks']}"
        )
    if name == "maps":
        mm, loc, fz = f["mm_fences_check"], f["mm_locate"], f["fuzzed"]
        return (
            f"mm map: check warns {f['mm_warned']} ({mm['s']} s), locate {loc['s']} s "
            f"{loc['peak_rss_mb']} MB; {fz.get('maps')} fuzzed: ok {fz.get('ok')}, refused "
            f"{fz.get('refused')}, hung {fz.get('hung')}, crashed {fz.get('crashed')}, slowest "
            f"{fz.get('slowest_s')} s, peak {fz.get('peak_rss_mb')} MB"
        )
    if name == "inputs":
        cfgs, maps = f["configs"].values(), f["maps"].values()
        refused = sum(1 for c in cfgs if c["run"]["exit"] not in (0, None))
        named = sum(1 for c in cfgs if c["doctor_names_it"])
        map_refused = sum(1 for m in maps for r in m.values() if r["exit"] not in (0, None))
        ts, peers = f["trace_timestamps"], f["peers"]
        return (
            f"configs refused {refused}/{len(cfgs)} (doctor names it {named}); maps refused "
            f"{map_refused}/{3 * len(maps)}; trace: {ts['rejected_lines_reported']}/"
            f"{ts['hostile_lines']} absurd lines rejected, events {ts['events_with_hostile']} "
            f"= {ts['events_clean']}; peers: {peers['peer_rejections_counted']} rejections, "
            f"events {peers['events_with_absurd_peers']} = {peers['events_clean']}, broker "
            f"connects {peers['broker_connects']}"
        )
    if name == "shutdown":
        r, t, o, rd = f["replay_sigint"], f["run_sigterm"], f["run_once_with_radio"], f["ready"]
        listening = rd["ready_seen"] - rd["not_listening_at_ready"]
        return (
            f"replay SIGINT: hung {r['hung']}/{r['runs']}, slowest {r['slowest_exit_s']} s; "
            f"run SIGTERM: hung {t['hung']}/{t['runs']}, slowest {t['slowest_exit_s']} s; "
            f"run --once with a radio: exit {o['exit']} in {o['s']} s, radios only: exit "
            f"{o['radios_only_exit']}; READY while listening {listening}/{rd['starts']}"
        )
    return json.dumps(f, default=str)[:300]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=", ".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--json", default="faultlab-results.json")
    parser.add_argument("--fuzz-maps", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fuzz_maps:  # the child process of the maps scenario
        print(json.dumps(fuzz_maps(*args.fuzz_maps)))
        return 0
    chosen = list(args.scenarios) or list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    results: dict[str, Figures] = {}
    print(f"{'scenario':<10} {'issue':<8} {'result':<6} {'time':>7}  figures")
    with tempfile.TemporaryDirectory(prefix="faultlab-") as tmp:
        for name in chosen:
            rng = random.Random(f"{args.seed}-{name}")
            started = time.monotonic()
            try:
                figures = asyncio.run(run_scenario(name, Path(tmp) / name, rng, args.quick))
            except Exception as exc:  # a broken scenario is a result, not the end of the lab
                figures = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            figures["seconds"] = round(time.monotonic() - started, 1)
            results[name] = figures
            verdict = "PASS" if figures.get("ok") else "FAIL"
            print(
                f"{name:<10} {ITEMS[name]:<8} {verdict:<6} {figures['seconds']:>5.0f} s  "
                f"{summary(name, figures)}"
            )
            sys.stdout.flush()
    Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(f.get("ok") for f in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
