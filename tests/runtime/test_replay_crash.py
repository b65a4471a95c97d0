"""`gateway replay` killed with SIGKILL, then run again on the same state: nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from gateway.clock import SystemClock
from gateway.config.sections import parse_config
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_pipeline
from gateway.runtime.sources import replay_rebase, replay_source
from gateway.sync.uplink import BATCH
from tests.support.broker import Broker, Consumer
from tests.support.fakebluez import wait_for

DAY = 86400.0
# Where the replays below place the trace: the in-process reference run and the `gateway
# replay` subprocesses must agree on it to derive the same event ids.
START = "2031-06-17T10:00:00+02:00"


def long_trace(path: Path, days: int) -> None:
    """The demo trace played on several consecutive days: more events, all distinct."""
    lines = data_file("demo-trace.jsonl").read_text().splitlines()
    with path.open("w") as f:
        for day in range(days):
            for line in lines:
                obj = json.loads(line)
                obj["t"] = round(obj["t"] + day * DAY, 3)
                f.write(json.dumps(obj, separators=(",", ":")) + "\n")


def write_config(folder: Path, port: int, state: Path) -> Path:
    cfg = folder / "gw.toml"
    cfg.write_text(
        f"[gateway]\nstate_dir = '{state}'\n[sinks]\nstdout = false\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {port}\nbackoff_max_s = 0.3\n"
        "keepalive_s = 1\ninflight = 1\n"
    )
    return cfg


def expected_ids(tmp: Path, trace: Path) -> set[str]:
    """What an uninterrupted run produces (the pipeline is deterministic)."""
    config = parse_config(f"[gateway]\nstate_dir = '{tmp}'\n[sinks]\nstdout = false\n")
    gateway = Gateway(config, quiet_sink=True, clock=SystemClock())
    rebase = replay_rebase(gateway, start=START)
    asyncio.run(run_pipeline(gateway, [replay_source(gateway, trace, 0.0, rebase)]))
    ids = {str(r[0]) for r in gateway.conn.execute("SELECT event_id FROM outbox")}
    gateway.close()
    return ids


def _replay_command(cfg: Path, trace: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "replay",
        str(trace),
        "--config",
        str(cfg),
        "--until-drained",
        "60",
        "--start",
        START,
    ]


def _replay(cfg: Path, trace: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _replay_command(cfg, trace),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _replay_to_end(cfg: Path, trace: Path) -> subprocess.CompletedProcess[str]:
    """Run `gateway replay` again on the same state until the outbox is drained."""
    return subprocess.run(
        _replay_command(cfg, trace),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_expected_ids_helper_is_deterministic(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    long_trace(trace, 1)
    assert expected_ids(tmp_path / "a", trace) == expected_ids(tmp_path / "b", trace)


async def test_sigkill_with_a_full_outbox_then_rerun(tmp_path: Path) -> None:
    """Killed after the whole trace was committed but before anything was sent."""
    trace = tmp_path / "trace.jsonl"
    long_trace(trace, 2)
    want = await asyncio.to_thread(expected_ids, tmp_path / "expected", trace)
    broker = Broker(tmp_path / "broker")  # not started: nothing can be delivered yet
    state = tmp_path / "state"
    cfg = write_config(tmp_path, broker.port, state)
    proc = _replay(cfg, trace)
    db_path = state / "gateway.db"

    queued: set[str] = set()

    def outbox_full() -> bool:
        import sqlite3

        if not db_path.exists():
            return False
        with suppress(sqlite3.Error):
            conn = sqlite3.connect(db_path)
            try:
                queued.clear()
                queued.update(str(r[0]) for r in conn.execute("SELECT event_id FROM outbox"))
                return queued >= want
            finally:
                conn.close()
        return False

    try:
        await wait_for(outbox_full, timeout=120)
    except TimeoutError:
        raise AssertionError(
            f"outbox never held every expected event: {len(queued & want)} of {len(want)}, "
            f"{len(queued - want)} unexpected ({sorted(queued - want)[:5]})"
        ) from None
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()  # reaps it and closes its pipes
    assert queued == want, sorted(queued ^ want)[:10]  # nothing invented either

    broker.start()
    consumer = Consumer(broker.port)
    task = asyncio.create_task(consumer.run())
    try:
        await consumer.ready.wait()
        rerun = await asyncio.to_thread(_replay_to_end, cfg, trace)
        assert rerun.returncode == 0, rerun.stderr + rerun.stdout
        assert "outbox depth 0" in rerun.stdout
        await wait_for(lambda: set(consumer.ids()) >= want, timeout=30)
        assert set(consumer.ids()) == want  # nothing lost, nothing invented
        assert len(consumer.ids()) == len(want)  # and here nothing was sent twice
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        broker.stop()


async def test_sigkill_while_draining_then_rerun(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    long_trace(trace, 3)
    want = await asyncio.to_thread(expected_ids, tmp_path / "expected", trace)
    broker = Broker(tmp_path / "broker")
    broker.start()
    consumer = Consumer(broker.port)
    status = Consumer(broker.port, "storegate/v1/+/+/status", name="status-watcher")
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(status.run())]
    try:
        await consumer.ready.wait()
        await status.ready.wait()
        cfg = write_config(tmp_path, broker.port, tmp_path / "state")
        proc = _replay(cfg, trace)
        await wait_for(lambda: len(consumer.ids()) >= 5, timeout=120)
        os.kill(proc.pid, signal.SIGKILL)  # mid-drain
        proc.communicate()  # reaps it and closes its pipes
        got_before = len(set(consumer.ids()))
        # The broker publishes the last will once the keepalive lapses.
        await wait_for(
            lambda: any(b.get("state") == "offline" for _, b, _ in status.received), timeout=10
        )
        started = time.monotonic()
        rerun = await asyncio.to_thread(_replay_to_end, cfg, trace)
        assert rerun.returncode == 0, rerun.stderr + rerun.stdout
        await wait_for(lambda: set(consumer.ids()) >= want, timeout=30)
        assert set(consumer.ids()) == want
        # At-least-once: what the broker confirmed in the batch cut short by the kill is sent
        # again — bounded by one uplink batch, and each copy is the same event.
        duplicates = len(consumer.ids()) - len(want)
        assert duplicates <= BATCH
        bodies: dict[str, object] = {}
        for _, body, _ in consumer.received:
            assert bodies.setdefault(body["id"], body) == body
        assert got_before < len(want)  # the kill really happened mid-drain
        assert time.monotonic() - started < 120
    finally:
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        broker.stop()
