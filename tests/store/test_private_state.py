"""Issue 16: the state holds shoppers' data, so only its owner reads it, and the push log
(offer codes, profile ids) does not outlive the retention the database promises."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.identity.store import IdentityStore
from gateway.sinks.push import LocalPushSink, Push, prune_push_log
from gateway.store import db


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_the_owners_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    conn = db.connect(state / "gateway.db")
    with db.transaction(conn):
        conn.execute("INSERT INTO stock (sku, title, quantity, zone_id) VALUES ('x','',1,'')")
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        assert _mode(state / name) == 0o600, name
    assert _mode(state) == 0o700
    conn.close()
    (state / "gateway.db").chmod(0o644)  # made by an older version
    db.connect(state / "gateway.db").close()
    assert _mode(state / "gateway.db") == 0o600
    sink = LocalPushSink(state / "pushes.jsonl", stdout=False)
    sink.push(Push("of-1", "p-1", 1.0, "sku", "PK-AAAA-BBBB", 2.0, "hi"), "10:00")
    assert _mode(state / "pushes.jsonl") == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can create files for another user")
def test_root_on_the_command_line_leaves_the_state_to_the_service(tmp_path: Path) -> None:
    """`sudo gateway profiles import …` before the daemon ever ran: the database it creates
    (and SQLite's -wal/-shm) belong to the state directory's owner, not to root."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4242, 4343)
    conn = db.connect(state / "gateway.db")
    with db.transaction(conn):
        conn.execute("INSERT INTO stock (sku, title, quantity, zone_id) VALUES ('x','',1,'')")
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        owner = (state / name).stat()
        assert (owner.st_uid, owner.st_gid) == (4242, 4343), name
    conn.close()


def test_the_push_log_forgets_purged_offers(tmp_path: Path) -> None:
    log = tmp_path / "pushes.jsonl"
    sink = LocalPushSink(log, stdout=False)
    for i in range(3):
        sink.push(Push(f"of-{i}", "p-1", 1.0, "sku", f"PK-AAAA-000{i}", 2.0, "hi"), "10:00")
    with log.open("a") as f:
        f.write("not json\n")
    assert prune_push_log(log, {"of-1"}) == 2
    lines = log.read_text().splitlines()
    assert [json.loads(line)["offer_id"] for line in lines[:1]] == ["of-1"]
    assert lines[1] == "not json"  # unreadable lines stay for a person
    assert _mode(log) == 0o600
    assert prune_push_log(tmp_path / "missing.jsonl", set()) == 0


def test_a_shopper_who_said_no_is_not_resolved(
    conn: sqlite3.Connection, seeded: IdentityStore
) -> None:
    alice = ("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:1")
    bob = ("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:2")
    assert seeded.resolve_consenting(*alice) == ("p-alice-3f9c", False)
    assert seeded.resolve_consenting(*bob) == (None, True)
    assert seeded.resolve_consenting("ibeacon", "nobody:1:1") == (None, False)
    with db.transaction(conn):
        conn.execute("UPDATE profiles SET opted_out = 1 WHERE profile_id = 'p-alice-3f9c'")
    assert seeded.resolve_consenting(*alice) == (None, True)
    assert not seeded.consents("p-alice-3f9c") and not seeded.consents("p-nobody")
