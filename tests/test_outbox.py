"""The outbox: durable, ordered, deduplicated by id, atomic with the work that made it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway import db
from gateway.outbox import Outbox, OutboxEvent, enforce_bounds


def _event(i: int, stream: str = "zone") -> OutboxEvent:
    return OutboxEvent(f"id-{i}", stream, f"{stream}.enter", 3, 1000.0 + i, {"n": i})


def test_append_survives_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    conn = db.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    seqs = Outbox(conn).append([_event(i) for i in range(5)])
    assert seqs == sorted(seqs) and len(seqs) == 5
    conn.close()
    reopened = Outbox(db.connect(path))
    queued = reopened.peek(10)
    assert [q.event_id for q in queued] == [f"id-{i}" for i in range(5)]
    assert queued[2].body == {"n": 2}


def test_duplicate_ids_are_ignored(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    first = outbox.append([_event(1), _event(2)])
    second = outbox.append([_event(2), _event(3)])
    assert len(first) == 2 and len(second) == 1 and second[0] > first[-1]
    assert [q.event_id for q in outbox.peek()] == ["id-1", "id-2", "id-3"]


def test_acknowledge_deletes_only_those(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    outbox.append([_event(i) for i in range(4)])
    outbox.acknowledge(outbox.peek(2), now=2000.0)
    assert [q.event_id for q in outbox.peek()] == ["id-2", "id-3"]
    assert outbox.oldest_age(1010.0) == pytest.approx(8.0)


def test_delivered_ids_are_not_queued_again(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    outbox.append([_event(1), _event(2)])
    outbox.acknowledge(outbox.peek(1), now=2000.0)
    assert outbox.append([_event(1), _event(3)]) != []  # only id-3 is new
    assert [q.event_id for q in outbox.peek()] == ["id-2", "id-3"]
    assert outbox.prune_delivered(older_than=2001.0) == 1
    assert len(outbox.append([_event(1)])) == 1  # forgotten after retention: queued again


def test_peek_takes_important_streams_first_each_in_order(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)

    def ev(event_id: str, stream: str, priority: int) -> OutboxEvent:
        return OutboxEvent(event_id, stream, f"{stream}.x", priority, 1.0, {})

    outbox.append([ev("z1", "zone", 3), ev("r1", "redemption", 0), ev("z2", "zone", 3)])
    outbox.append([ev("o1", "offer", 1), ev("r2", "redemption", 0)])
    assert [q.event_id for q in outbox.peek()] == ["r1", "r2", "o1", "z1", "z2"]


def test_failed_batch_leaves_nothing(conn: sqlite3.Connection) -> None:
    outbox = Outbox(conn)
    with pytest.raises(RuntimeError), db.transaction(conn):
        conn.execute(
            "INSERT INTO offers (offer_id, profile_id, campaign, sku, code, issued_at, "
            "expires_at, store_day, status) VALUES ('o', 'p', 'c', 's', 'x', 0, 1, 'd', 'issued')"
        )
        outbox.append([_event(1, "offer")])
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

    def ev(event_id: str, stream: str, priority: int, t: float) -> OutboxEvent:
        return OutboxEvent(event_id, stream, f"{stream}.x", priority, t, {})

    outbox.append([ev(f"z{i}", "zone", 3, 1000.0 + i) for i in range(10)])
    outbox.append([ev(f"r{i}", "redemption", 0, 0.0) for i in range(5)])  # very old
    outbox.append([ev(f"o{i}", "offer", 1, 1000.0 + i) for i in range(5)])
    ttl = {"redemption": 0.0, "zone": 100.0, "offer": 10_000.0}
    # At t=1105: zone events older than 100 s (z0..z4) expire; redemptions never do.
    dropped = enforce_bounds(conn, 1105.0, max_events=12, ttl_s=ttl)
    assert dropped == {"expired:zone": 5, "shed:zone": 3}
    remaining = [q.event_id for q in outbox.peek(100)]
    assert remaining == ["r0", "r1", "r2", "r3", "r4", "o0", "o1", "o2", "o3", "o4", "z8", "z9"]
    # Even a quota smaller than the redemptions never drops one.
    dropped = enforce_bounds(conn, 1105.0, max_events=3, ttl_s=ttl)
    assert dropped == {"shed:zone": 2, "shed:offer": 5}
    assert [q.event_id for q in outbox.peek(100)] == ["r0", "r1", "r2", "r3", "r4"]
