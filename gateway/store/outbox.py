"""The durable outbox: every event that must leave the box is committed here first.

An event counts as done for its producer only once `append` has returned (the transaction
is committed with synchronous=FULL). Senders read in `seq` order per stream and delete a row
only after the broker acknowledged it, so delivery is at-least-once; the CloudEvents `id`
is stable (derived from the event's content), and re-appending the same id is a no-op, so a
replayed trace or a restarted daemon never duplicates an event.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.db import transaction

# Streams delivered on the shop floor, not to the backend.
LOCAL_STREAMS = ("push",)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    event_id: str
    stream: str
    type: str
    priority: int  # lower is more important
    occurred_at: float  # when the event happened (its CloudEvents `time`)
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    seq: int
    event_id: str
    stream: str
    type: str
    payload: bytes  # the CloudEvent as stored: compact JSON, sent as is
    queued_at: float = 0.0  # wall clock when it was queued (the delivery-age histogram)

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.payload)  # type: ignore[no-any-return]


class Outbox:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def append(self, events: Iterable[OutboxEvent], now: float) -> list[int]:
        """Commit events durably in one transaction, queued at wall time `now`; return the
        seq of each newly added one (duplicates by event id are skipped and get no seq)."""
        added: list[int] = []
        with transaction(self.conn):
            for e in events:
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, stream, type, priority, "
                    "occurred_at, queued_at, body) SELECT ?, ?, ?, ?, ?, ?, ? "
                    "WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE event_id = ?)",
                    (
                        e.event_id,
                        e.stream,
                        e.type,
                        e.priority,
                        e.occurred_at,
                        now,
                        json.dumps(e.body, separators=(",", ":"), sort_keys=True),
                        e.event_id,
                    ),
                )
                if cur.rowcount:
                    added.append(int(cur.lastrowid or 0))
        return added

    def peek(self, limit: int = 100, exclude: tuple[str, ...] = LOCAL_STREAMS) -> list[QueuedEvent]:
        """The next events for the uplink: most important stream first, each stream in order.
        Local streams (pushes for the in-store webhook) are drained by their own sink."""
        placeholders = ",".join("?" for _ in exclude) or "''"
        rows = self.conn.execute(
            f"SELECT seq, event_id, stream, type, body, queued_at FROM outbox WHERE stream NOT IN "
            f"({placeholders}) ORDER BY priority, seq LIMIT ?",
            (*exclude, limit),
        )
        return [QueuedEvent(r[0], r[1], r[2], r[3], r[4].encode(), r[5]) for r in rows]

    def due(self, stream: str, now: float, limit: int = 50) -> list[tuple[QueuedEvent, int]]:
        """Events of a local stream whose next attempt is due, with their attempt count."""
        rows = self.conn.execute(
            "SELECT seq, event_id, stream, type, body, attempts FROM outbox "
            "WHERE stream = ? AND next_try <= ? ORDER BY seq LIMIT ?",
            (stream, now, limit),
        )
        return [(QueuedEvent(r[0], r[1], r[2], r[3], r[4].encode()), int(r[5])) for r in rows]

    def retry_later(self, event: QueuedEvent, next_try: float) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try = ? WHERE seq = ?",
                (next_try, event.seq),
            )

    def dead_letter(self, event: QueuedEvent, attempts: int, error: str, now: float) -> None:
        """Give up on an event: keep it (for staff and the backend), out of the queue."""
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO dead_letter (event_id, stream, body, attempts, "
                "last_error, failed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (event.event_id, event.stream, event.payload.decode(), attempts, error, now),
            )
            self.conn.execute("DELETE FROM outbox WHERE seq = ?", (event.seq,))

    def acknowledge(self, events: Sequence[QueuedEvent], now: float) -> None:
        """The broker has them: remember their ids as delivered and drop the rows."""
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT OR IGNORE INTO delivered (event_id, delivered_at) VALUES (?, ?)",
                [(e.event_id, now) for e in events],
            )
            self.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(e.seq,) for e in events])

    def prune_delivered(self, older_than: float) -> int:
        with transaction(self.conn):
            cur = self.conn.execute("DELETE FROM delivered WHERE delivered_at < ?", (older_than,))
        return cur.rowcount

    def depth(self, stream: str | None = None) -> int:
        if stream is None:
            return int(self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        row = self.conn.execute("SELECT count(*) FROM outbox WHERE stream = ?", (stream,))
        return int(row.fetchone()[0])

    def oldest_age(self, now: float) -> float | None:
        """How long the longest-waiting event has been queued (wall time), or None."""
        row = self.conn.execute("SELECT min(queued_at) FROM outbox").fetchone()
        return None if row[0] is None else max(0.0, now - float(row[0]))

    def depth_and_bytes(self) -> tuple[int, int]:
        """Events queued and the bytes of their bodies."""
        count, size = self.conn.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox"
        ).fetchone()
        return int(count), int(size)

    def depth_by_type(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT type, count(*) FROM outbox GROUP BY type ORDER BY type")
        return {str(r[0]): int(r[1]) for r in rows}

    def types(self) -> list[str]:
        """Event types in queue order (for summaries and tests)."""
        return [str(r[0]) for r in self.conn.execute("SELECT type FROM outbox ORDER BY seq")]


# Never shed, whatever the pressure: they are what the shop is paid for.
PROTECTED_STREAMS = ("redemption", "push")
# The notice that reports shedding is never shed itself, or the report would vanish with the
# next pass (it sits on the low-priority gateway stream with the adapter and downlink notices).
PROTECTED_TYPES = ("gateway.outbox_dropped",)


def enforce_bounds(
    conn: sqlite3.Connection,
    now: float,
    max_events: int,
    ttl_s: dict[str, float],
    *,
    max_bytes: int | None = None,
    free_bytes: int | None = None,
    min_free_bytes: int = 0,
) -> dict[str, int]:
    """Drop events queued longer than their stream's TTL and, past the quotas, the least
    important oldest ones. Age is queue time (wall clock at `append`), never the event's
    own time: a replayed old recording is as fresh as the moment it was queued.

    Quotas: `max_events` events, `max_bytes` bytes of event bodies, and `min_free_bytes`
    left on the state's filesystem (`free_bytes`, measured by the caller). Below that floor
    the database keeps `LOW_SPACE_RESERVE_BYTES` of free pages by shedding: new events reuse
    them, the file stops growing, and the shop floor does not meet SQLITE_FULL.

    Returns what was dropped, as {"expired:<stream>": n, "shed:<stream>": n}.
    """
    dropped: dict[str, int] = {}
    kept = ",".join("?" for _ in PROTECTED_TYPES)
    with transaction(conn):
        for stream, ttl in ttl_s.items():
            if ttl > 0 and stream not in PROTECTED_STREAMS:
                cur = conn.execute(
                    "DELETE FROM outbox WHERE stream = ? AND queued_at < ? "
                    f"AND type NOT IN ({kept})",
                    (stream, now - ttl, *PROTECTED_TYPES),
                )
                if cur.rowcount:
                    dropped[f"expired:{stream}"] = cur.rowcount
        count, size = conn.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox"
        ).fetchone()
        for key, n in shed_for_room(conn, int(count) - max_events).items():
            dropped[key] = dropped.get(key, 0) + n
        over = 0
        if max_bytes is not None:
            over = int(size) - max_bytes
        if free_bytes is not None and free_bytes < min_free_bytes:
            # Short of space: the file must not grow. Shed until the database holds a
            # reserve of free pages that new events reuse; once it does, nothing more is
            # shed until they are used up (shedding does not give the filesystem space back).
            over = max(over, LOW_SPACE_RESERVE_BYTES - free_pages_bytes(conn))
        for key, n in shed_bytes(conn, over).items():
            dropped[key] = dropped.get(key, 0) + n
    if free_bytes is not None and free_bytes < min_free_bytes:
        give_back_wal(conn)
    return dropped


def give_back_wal(conn: sqlite3.Connection) -> None:
    """Move the write-ahead log into the database and truncate it to nothing.

    In WAL mode every change, a reused free page or not, is first appended to the -wal file,
    which grows until a checkpoint (about 4 MB by default) and never shrinks: short of space,
    that file, not the database, is what fills the disk (the fault lab, docs/decisions.md
    §30). After the checkpoint the database's free pages take new rows and the log holds one
    commit's pages at a time. Not possible inside a transaction (the next pass does it).
    """
    if not conn.in_transaction:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def shed_bytes(conn: sqlite3.Connection, nbytes: int) -> dict[str, int]:
    """Shed the least important, oldest events until `nbytes` of bodies are gone (or only
    protected ones are left). Returns {"shed:<stream>": n}."""
    if nbytes <= 0:
        return {}
    streams = ",".join("?" for _ in PROTECTED_STREAMS)
    types = ",".join("?" for _ in PROTECTED_TYPES)
    rows = conn.execute(
        f"SELECT length(body) FROM outbox WHERE stream NOT IN ({streams}) "
        f"AND type NOT IN ({types}) ORDER BY priority DESC, seq",
        (*PROTECTED_STREAMS, *PROTECTED_TYPES),
    )
    count = freed = 0
    for (length,) in rows:
        if freed >= nbytes:
            break
        freed += int(length) + ROW_OVERHEAD_BYTES
        count += 1
    return shed_for_room(conn, count)


# Beside its body, a queued event's row and index entries take about this much.
ROW_OVERHEAD_BYTES = 120
# Free pages kept inside the database while the filesystem is short of space.
LOW_SPACE_RESERVE_BYTES = 2_000_000


def shed_for_room(conn: sqlite3.Connection, count: int) -> dict[str, int]:
    """Drop the `count` least important, oldest events, never the protected ones (past the
    quota, or on a full disk so SQLite can reuse their pages). Returns {"shed:<stream>": n}."""
    if count <= 0:
        return {}
    streams = ",".join("?" for _ in PROTECTED_STREAMS)
    types = ",".join("?" for _ in PROTECTED_TYPES)
    with transaction(conn):
        victims = conn.execute(
            f"SELECT seq, stream FROM outbox WHERE stream NOT IN ({streams}) "
            f"AND type NOT IN ({types}) ORDER BY priority DESC, seq LIMIT ?",
            (*PROTECTED_STREAMS, *PROTECTED_TYPES, count),
        ).fetchall()
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
    dropped: dict[str, int] = {}
    for _, stream in victims:
        dropped[f"shed:{stream}"] = dropped.get(f"shed:{stream}", 0) + 1
    return dropped


def free_pages_bytes(conn: sqlite3.Connection) -> int:
    """Space inside the database file that new rows can reuse without growing it."""
    pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(page_size)
