"""The outbox: durable, ordered, deduplicated by id, atomic with the work that made it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from gateway.store import db
from gateway.store.outbox import Outbox, OutboxEvent, enforce_bounds

NOW = 1_900_000_000.0  # wall-clock queue time in these tests


def _event(i: int, stream: str = "zone") -> OutboxEvent:
    return OutboxEvent(f"id-{i}", stream, f"{stream}.enter", 3, 1000.0 + i, {"n": i})


def test_append_survives_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    conn = db.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    seqs = Outbox(conn).append([_event(i) for i in range(5)], NOW)
    assert seqs == sorted(seqs) and len(seqs) == 5
    conn.close()
    reopened = Outbox(db.connect(path))
    queued = reopened.peek(10)
    assert [q.event_id for q in queued] == [f"id-{i}" for i in range(5)]
    assert queued[2].body == {"n": 2}


def test_duplicate_ids_are_ignored(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    first = outbox.append([_event(1), _event(2)], NOW)
    second = outbox.append([_event(2), _event(3)], NOW)
    assert len(first) == 2 and len(second) == 1 and second[0] > first[-1]
    assert [q.event_id for q in outbox.peek()] == ["id-1", "id-2", "id-3"]


def test_acknowledge_deletes_only_those(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    outbox.append([_event(i) for i in range(2)], NOW)
    outbox.append([_event(i) for i in range(2, 4)], NOW + 5)
    outbox.acknowledge(outbox.peek(2), now=NOW + 6)
    assert [q.event_id for q in outbox.peek()] == ["id-2", "id-3"]
    # waiting since it was queued (wall clock), whatever its own time says
    assert outbox.oldest_age(NOW + 8) == pytest.approx(3.0)


def test_delivered_ids_are_not_queued_again(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    outbox.append([_event(1), _event(2)], NOW)
    outbox.acknowledge(outbox.peek(1), now=NOW + 10)
    assert outbox.append([_event(1), _event(3)], NOW + 20) != []  # only id-3 is new
    assert [q.event_id for q in outbox.peek()] == ["id-2", "id-3"]
    assert outbox.prune_delivered(older_than=NOW + 11) == 1
    assert len(outbox.append([_event(1)], NOW + 30)) == 1  # forgotten: queued again


def test_peek_takes_important_streams_first_each_in_order(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)

    def ev(event_id: str, stream: str, priority: int) -> OutboxEvent:
        return OutboxEvent(event_id, stream, f"{stream}.x", priority, 1.0, {})

    outbox.append([ev("z1", "zone", 3), ev("r1", "redemption", 0), ev("z2", "zone", 3)], NOW)
    outbox.append([ev("o1", "offer", 1), ev("r2", "redemption", 0)], NOW)
    assert [q.event_id for q in outbox.peek()] == ["r1", "r2", "o1", "z1", "z2"]


def test_failed_batch_leaves_nothing(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    with pytest.raises(RuntimeError), db.transaction(conn):
        conn.execute(
            "INSERT INTO offers (offer_id, profile_id, campaign, sku, code, issued_at, "
            "expires_at, store_day, status) VALUES ('o', 'p', 'c', 's', 'x', 0, 1, 'd', 'issued')"
        )
        outbox.append([_event(1, "offer")], NOW)
        raise RuntimeError("crash between offer and event")
    assert outbox.depth() == 0
    assert conn.execute("SELECT count(*) FROM offers").fetchone()[0] == 0


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    db.connect(path).execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(db.SchemaError, match="newer than this gateway"):
        db.connect(path)


def test_bounds_expire_then_shed_least_important_never_redemptions(
    conn: sqlite3.Connection,
) -> None:
    outbox = Outbox(conn)

    def ev(event_id: str, stream: str, priority: int) -> OutboxEvent:
        # Every event happened long ago (a recording replayed with its own times): only
        # when it was queued counts.
        return OutboxEvent(event_id, stream, f"{stream}.x", priority, 1.0, {})

    for i in range(10):
        outbox.append([ev(f"z{i}", "zone", 3)], 1000.0 + i)
    outbox.append([ev(f"r{i}", "redemption", 0) for i in range(5)], 0.0)  # queued very long ago
    for i in range(5):
        outbox.append([ev(f"o{i}", "offer", 1)], 1000.0 + i)
    ttl = {"redemption": 0.0, "zone": 100.0, "offer": 10_000.0}
    # At 1105: zone events queued more than 100 s ago (z0..z4) expire; redemptions never do.
    dropped = enforce_bounds(conn, 1105.0, max_events=12, ttl_s=ttl)
    assert dropped == {"expired:zone": 5, "shed:zone": 3}
    remaining = [q.event_id for q in outbox.peek(100)]
    assert remaining == ["r0", "r1", "r2", "r3", "r4", "o0", "o1", "o2", "o3", "o4", "z8", "z9"]
    # Even a quota smaller than the redemptions never drops one.
    dropped = enforce_bounds(conn, 1105.0, max_events=3, ttl_s=ttl)
    assert dropped == {"shed:zone": 2, "shed:offer": 5}
    assert [q.event_id for q in outbox.peek(100)] == ["r0", "r1", "r2", "r3", "r4"]


def test_a_byte_budget_and_a_free_space_floor_shed_before_the_disk_fills(
    conn: sqlite3.Connection,
) -> None:
    """Issue 23: shedding started at the first SQLITE_FULL; now it starts at a budget."""
    outbox = Outbox(conn)
    pad = "x" * 1000

    def ev(event_id: str, stream: str, priority: int) -> OutboxEvent:
        return OutboxEvent(event_id, stream, f"{stream}.x", priority, 1.0, {"pad": pad})

    outbox.append([ev(f"r{i}", "redemption", 0) for i in range(20)], NOW)
    outbox.append([ev(f"z{i}", "zone", 3) for i in range(200)], NOW)
    outbox.append([ev(f"o{i}", "offer", 1) for i in range(50)], NOW)
    size = conn.execute("SELECT sum(length(body)) FROM outbox").fetchone()[0]
    # A byte budget 100 kB under the queue: zone events go, oldest first, about 100 of them.
    dropped = enforce_bounds(conn, NOW, 10**6, {}, max_bytes=size - 100_000)
    assert set(dropped) == {"shed:zone"} and 85 <= dropped["shed:zone"] <= 100
    assert outbox.peek(1000)[-1].event_id == "z199"  # the newest kept
    # Under the free-space floor the database keeps a reserve of free pages, once: a
    # second check with the same free space sheds nothing more (no bleeding dry).
    dropped = enforce_bounds(conn, NOW, 10**6, {}, free_bytes=10**6, min_free_bytes=64 * 10**6)
    assert sum(dropped.values()) > 0 and "shed:redemption" not in dropped
    again = enforce_bounds(conn, NOW, 10**6, {}, free_bytes=10**6, min_free_bytes=64 * 10**6)
    assert again == {}
    assert enforce_bounds(conn, NOW, 10**6, {}, free_bytes=10**9, min_free_bytes=64 * 10**6) == {}
    redemptions = [q for q in outbox.peek(1000) if q.stream == "redemption"]
    assert len(redemptions) == 20


def test_an_old_event_queued_now_is_not_expired(conn: sqlite3.Connection) -> None:
    """The flaw that once broke the demo: a recording's events compared with today's clock."""
    outbox = Outbox(conn)
    long_ago = NOW - 400 * 86400.0
    outbox.append([OutboxEvent("old", "zone", "zone.enter", 3, long_ago, {})], NOW)
    assert enforce_bounds(conn, NOW + 60, 1000, {"zone": 86400.0}) == {}
    assert outbox.oldest_age(NOW + 60) == pytest.approx(60.0)
    row = conn.execute("SELECT occurred_at, queued_at FROM outbox").fetchone()
    assert row == (long_ago, NOW)  # both kept: what happened when, and when it was queued
    assert enforce_bounds(conn, NOW + 86401, 1000, {"zone": 86400.0}) == {"expired:zone": 1}


def test_a_version_5_outbox_is_migrated_with_both_times(tmp_path: Path) -> None:
    """A box upgraded with events waiting: their one time stands in for both."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old = sqlite_utils.Database(conn)
    for version, migration in enumerate(db.MIGRATIONS[:5], start=1):
        migration(old)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO outbox (event_id, stream, type, priority, created_at, body) "
        "VALUES ('e1', 'zone', 'zone.enter', 3, 1234.5, '{}')"
    )
    conn.execute(
        "INSERT INTO decisions (decision_id, t, device, issued, reason) "
        "VALUES ('d1', 99.0, 'dev', 0, 'unknown')"
    )
    conn.close()
    upgraded = db.connect(path)
    assert upgraded.execute("SELECT occurred_at, queued_at FROM outbox").fetchone() == (
        1234.5,
        1234.5,
    )
    assert upgraded.execute("SELECT recorded_at FROM decisions").fetchone() == (99.0,)
    assert Outbox(upgraded).peek()[0].event_id == "e1"
    upgraded.close()


def test_a_replay_shift_is_chosen_once_per_state(conn: sqlite3.Connection) -> None:
    first = db.replay_shift(conn, 1000.0, NOW)
    assert first == NOW - 1000.0
    assert db.replay_shift(conn, 1000.0, NOW + 3600) == first  # a rerun: same event ids
    assert db.replay_shift(conn, 5000.0, NOW + 3600) == NOW + 3600 - 5000.0  # another trace


def test_the_notice_that_reports_shedding_is_never_shed_or_expired(
    conn: sqlite3.Connection,
) -> None:
    outbox = Outbox(conn)
    notice = OutboxEvent("drop-1", "gateway", "gateway.outbox_dropped", 4, 1.0, {"shed:zone": 3})
    outbox.append([notice], 0.0)  # queued long ago, on the least important stream
    outbox.append([OutboxEvent(f"z{i}", "zone", "zone.enter", 3, 1.0, {}) for i in range(5)], 50.0)
    adapter = OutboxEvent("a1", "gateway", "gateway.adapter", 4, 1.0, {})
    outbox.append([adapter], 50.0)
    dropped = enforce_bounds(conn, 1000.0, max_events=2, ttl_s={"gateway": 100.0, "zone": 0.0})
    assert dropped == {"expired:gateway": 1, "shed:zone": 4}
    assert sorted(q.event_id for q in outbox.peek(10)) == ["drop-1", "z4"]
