"""A full disk under the state directory: the gateway sheds, keeps deciding in memory, never
crashes, and saves again as soon as there is room (a real small tmpfs, mounted here)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.model import Advert, Tap
from gateway.resources import data_file
from gateway.runtime.commit import Item
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import Runtime, exposition
from gateway.runtime.status import StatusView
from gateway.trace import parse_line


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _trace(clock: PinnedClock, laps: int) -> list[Item]:
    lines = data_file("demo-trace.jsonl").read_text().splitlines()
    items = [i for i in (parse_line(t, n) for n, t in enumerate(lines, 1)) if i is not None]
    walk: list[Advert | Tap] = [i for i in items if isinstance(i, (Advert, Tap))]
    span = walk[-1].t - walk[0].t + 60.0
    start = clock.wall() - walk[0].t
    return [dataclasses.replace(i, t=i.t + start + lap * span) for lap in range(laps) for i in walk]


def test_a_full_disk_degrades_and_recovers_without_a_restart(
    small_disk: Path, clock: PinnedClock
) -> None:
    state = small_disk / "state"
    config = parse_config(
        f"[gateway]\nstate_dir = '{state}'\n[sinks]\nstdout = false\n", "t.toml", small_disk
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - 64 * 1024))  # leave 64 kB for the state
    items = _trace(clock, laps=6)
    view = StatusView(gateway, Runtime(clock=clock))
    degraded_seen = 0
    for start in range(0, len(items) // 2, 16):
        gateway.process(items[start : start + 16])  # never raises
        if gateway.work.degraded:
            degraded_seen += 1
            assert view.document()["outbox"]["disk_full"] is True  # status and metrics say so
            assert "gateway_state_disk_full 1" in exposition(view)
    assert gateway.work.disk_full_events > 0 and degraded_seen > 0
    dropped = dict(gateway.outbox_dropped)
    assert any(k.startswith(("shed:", "disk_full:")) for k in dropped), dropped
    # room again: the next batches are saved and queued, no restart
    filler.unlink()
    depth = gateway.outbox.depth()
    for start in range(len(items) // 2, len(items), 16):
        gateway.process(items[start : start + 16])
    assert not gateway.work.degraded
    assert gateway.outbox.depth() > depth
    assert gateway.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    gateway.close()
    assert os.path.exists(state / "gateway.db")


def test_doctor_names_a_full_disk_and_its_fix(small_disk: Path) -> None:
    from gateway.ops.doctor import check_state_dir

    state = small_disk / "state"
    state.mkdir()
    with (small_disk / "filler").open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    check = check_state_dir(state)
    assert check.status == "fail" and "disk is full" in check.detail, check
    assert "free space" in check.fix and "chown" not in check.fix


def test_below_the_floor_the_write_ahead_log_does_not_fill_the_disk(
    small_disk: Path, clock: PinnedClock
) -> None:
    """Below `outbox.min_free_mb` the outbox sheds before the disk fills. In WAL mode every
    change, a reused free page too, is appended to the -wal file, which grows until a
    checkpoint (~4 MB) and never shrinks: it filled the disk while the database itself kept
    its reserve of free pages (the fault lab, decisions §30)."""
    state = small_disk / "state"
    config = parse_config(
        f"[gateway]\nstate_dir = '{state}'\n[sinks]\nstdout = false\n[outbox]\nmin_free_mb = 2\n",
        "t.toml",
        small_disk,
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    with (small_disk / "filler").open("wb") as out:
        out.write(b"\0" * max(0, shutil.disk_usage(small_disk).free - 1_200_000))
    items = _trace(clock, laps=12)
    for start in range(0, len(items), 256):
        gateway.process(items[start : start + 256])
        assert not gateway.work.degraded, dict(gateway.outbox_dropped)
    dropped = dict(gateway.outbox_dropped)
    assert not any(k.startswith("disk_full:") for k in dropped), dropped
    assert any(k.startswith("shed:") for k in dropped), dropped  # shed before it was full
    assert shutil.disk_usage(small_disk).free > 100_000
    assert gateway.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    gateway.close()
