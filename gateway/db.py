"""The gateway's one SQLite state file: schema, migrations, connection settings.

WAL lets readers (status, doctor) run beside the writer; `synchronous=FULL` makes a commit
survive a power cut as well as a crash — shop gateways lose power, and the outbox promises
that an acknowledged event is on disk. Writes are batched into transactions by the callers
so FULL costs one fsync per batch, not per event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]


def _v1(db: sqlite_utils.Database) -> None:
    db.table("profiles").create(
        {
            "profile_id": str,
            "consent_offers": int,
            "consent_at": str,
            "consent_source": str,
            "language": str,
            "opted_out": int,
            "version": int,
        },
        pk="profile_id",
    )
    db.table("identifiers").create(
        {"kind": str, "value": str, "profile_id": str}, pk=("kind", "value")
    )
    db.table("identifiers").create_index(["profile_id"])
    db.table("cart_items").create(
        {"profile_id": str, "sku": str, "title": str, "price": float, "added_at": str},
        pk=("profile_id", "sku"),
    )
    db.table("stock").create({"sku": str, "title": str, "quantity": int, "zone_id": str}, pk="sku")
    db.table("offers").create(
        {
            "offer_id": str,
            "profile_id": str,
            "campaign": str,
            "sku": str,
            "code": str,
            "issued_at": float,
            "expires_at": float,
            "store_day": str,
            "status": str,
            "redeemed_at": float,
        },
        pk="offer_id",
    )
    db.table("offers").create_index(["profile_id", "store_day"])
    db.table("offers").create_index(["code"], unique=True)
    db.table("decisions").create(
        {
            "decision_id": str,
            "t": float,
            "device": str,
            "profile_id": str,
            "campaign": str,
            "trigger": str,
            "issued": int,
            "reason": str,
            "offer_id": str,
        },
        pk="decision_id",
    )
    db.table("decisions").create_index(["profile_id"])
    db.table("decisions").create_index(["device"])
    db.execute(
        """CREATE TABLE outbox (
               seq INTEGER PRIMARY KEY AUTOINCREMENT,
               event_id TEXT NOT NULL UNIQUE,
               stream TEXT NOT NULL,
               type TEXT NOT NULL,
               priority INTEGER NOT NULL,
               created_at REAL NOT NULL,
               body TEXT NOT NULL
           )"""
    )


def _v2(db: sqlite_utils.Database) -> None:
    # Ids of events the broker acknowledged: a replayed or re-derived event with a known id is
    # not queued again (pruned after a retention period).
    db.execute("CREATE TABLE delivered (event_id TEXT PRIMARY KEY, delivered_at REAL NOT NULL)")
    db.execute("CREATE INDEX delivered_at ON delivered (delivered_at)")
    db.execute("CREATE INDEX outbox_drain ON outbox (priority, seq)")
    # Downlink document families (stock, profiles, ...) and the version last applied.
    db.execute("CREATE TABLE doc_versions (family TEXT PRIMARY KEY, version INTEGER NOT NULL)")


def _v3(db: sqlite_utils.Database) -> None:
    # Local push delivery (webhook): retries are scheduled per row; what never succeeds is
    # kept in a dead-letter table instead of being dropped.
    db.execute("ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE outbox ADD COLUMN next_try REAL NOT NULL DEFAULT 0")
    db.execute(
        """CREATE TABLE dead_letter (
               event_id TEXT PRIMARY KEY,
               stream TEXT NOT NULL,
               body TEXT NOT NULL,
               attempts INTEGER NOT NULL,
               last_error TEXT NOT NULL,
               failed_at REAL NOT NULL
           )"""
    )


def _v4(db: sqlite_utils.Database) -> None:
    # Downlink documents kept whole (campaign rules), applied again at start-up.
    db.execute("CREATE TABLE documents (family TEXT PRIMARY KEY, body TEXT NOT NULL)")


def _v5(db: sqlite_utils.Database) -> None:
    # Audience and the shopper's own wishes: segments (campaign targeting), preferences
    # (a personal daily cap, muted campaigns) and items the shopper declined.
    db.execute("ALTER TABLE profiles ADD COLUMN segments TEXT NOT NULL DEFAULT '[]'")
    db.execute("ALTER TABLE profiles ADD COLUMN preferences TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE profiles ADD COLUMN declined_skus TEXT NOT NULL DEFAULT '[]'")


MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    pass


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the state database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"state database is at schema {current}, newer than this gateway ({SCHEMA_VERSION});"
            " upgrade the gateway or point state_dir elsewhere"
        )
    db = sqlite_utils.Database(conn)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with transaction(conn):
            MIGRATIONS[version - 1](db)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return SCHEMA_VERSION


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; nested use joins the outer one.

    The pipeline shell wraps a batch of sightings in one transaction so that an offer row,
    its decision and its outbox event are committed together or not at all.
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def purge_expired(conn: sqlite3.Connection, now: float, retention_s: float) -> dict[str, int]:
    """Forget what concerns shoppers after the retention window: decisions (they name the
    device and the profile), offers that ended before it (issued-and-expired or redeemed),
    dead-lettered pushes. Raw sightings are never stored; delivered-event ids have their
    own retention (`mqtt.delivered_retention_s`). Returns rows removed per table."""
    cutoff = now - retention_s
    removed: dict[str, int] = {}
    with transaction(conn):
        for table, sql in (
            ("decisions", "DELETE FROM decisions WHERE t < ?"),
            ("offers", "DELETE FROM offers WHERE expires_at < ?"),
            ("dead_letter", "DELETE FROM dead_letter WHERE failed_at < ?"),
        ):
            count = conn.execute(sql, (cutoff,)).rowcount
            if count:
                removed[table] = count
    return removed
