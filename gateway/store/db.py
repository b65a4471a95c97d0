"""The gateway's one SQLite state file: schema, migrations, connection settings.

WAL lets readers (status, doctor) run beside the writer; `synchronous=FULL` makes a commit
survive a power cut as well as a crash — shop gateways lose power, and the outbox promises
that an acknowledged event is on disk. Writes are batched into transactions by the callers
so FULL costs one fsync per batch, not per event.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by `migrate` only when a migration is due: it costs ~0.1 s
    import sqlite_utils

Migration = Callable[["sqlite_utils.Database"], None]


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


def _v6(db: sqlite_utils.Database) -> None:
    # Two time bases (docs/decisions.md, "Time"): an outbox row keeps when its event happened
    # (`occurred_at`, trace or radio time) and when this box queued it (`queued_at`, wall
    # clock); TTLs and the backlog's age count from the second. Decisions and offers get the
    # wall time they were recorded, which retention counts from. Rows from before this
    # version only had the event time: it stands in for both.
    db.execute("ALTER TABLE outbox RENAME COLUMN created_at TO occurred_at")
    db.execute("ALTER TABLE outbox ADD COLUMN queued_at REAL NOT NULL DEFAULT 0")
    db.execute("UPDATE outbox SET queued_at = occurred_at")
    db.execute("CREATE INDEX outbox_expiry ON outbox (stream, queued_at)")
    for table, event_time in (("decisions", "t"), ("offers", "issued_at")):
        db.execute(f"ALTER TABLE {table} ADD COLUMN recorded_at REAL")
        db.execute(f"UPDATE {table} SET recorded_at = {event_time}")
        # Serves retention (recorded_at < cutoff) and the stamping of the rows the pipeline
        # wrote in the open transaction (recorded_at IS NULL).
        db.execute(f"CREATE INDEX {table}_recorded ON {table} (recorded_at)")
    # A replayed trace is moved to the present once per state directory: the shift chosen
    # the first time is kept, so a replay run again (after a crash) re-derives the same
    # event ids instead of queueing the whole trace a second time.
    db.execute(
        "CREATE TABLE replay_shifts (origin_t REAL PRIMARY KEY, shift_s REAL NOT NULL, "
        "chosen_at REAL NOT NULL)"
    )


def _v7_holds(db: sqlite_utils.Database) -> None:
    # Stock holds (gateway.offers.holds) and the pickup tasks staff work through
    # (gateway.offers.pickup). Idempotent (IF NOT EXISTS): safe whatever number it gets.
    db.execute(
        """CREATE TABLE IF NOT EXISTS holds (
               hold_id TEXT PRIMARY KEY,
               offer_id TEXT NOT NULL UNIQUE,
               profile_id TEXT NOT NULL,
               sku TEXT NOT NULL,
               placed_at REAL NOT NULL,
               expires_at REAL NOT NULL,
               status TEXT NOT NULL,
               ended_at REAL
           )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS holds_sku ON holds (sku, status, expires_at)")
    db.execute("CREATE INDEX IF NOT EXISTS holds_due ON holds (status, expires_at)")
    db.execute(
        "CREATE INDEX IF NOT EXISTS holds_profile ON holds (profile_id, status, expires_at, sku)"
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS pickup_tasks (
               task_id TEXT PRIMARY KEY,
               offer_id TEXT NOT NULL UNIQUE,
               sku TEXT NOT NULL,
               title TEXT NOT NULL,
               zone_id TEXT NOT NULL,
               code_hint TEXT NOT NULL,
               language TEXT NOT NULL,
               device TEXT NOT NULL,
               opened_at REAL NOT NULL,
               status TEXT NOT NULL,
               updated_at REAL NOT NULL,
               updated_by TEXT NOT NULL
           )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS pickup_tasks_open ON pickup_tasks (status, opened_at)")


def _v8_attribution(db: sqlite_utils.Database) -> None:
    # Holdouts and attribution (gateway.offers.attribution): one exposure per campaign,
    # shopper and attribution window (group exposed / holdout, the variant served) and the
    # outcomes observed (redemptions, counter taps, pickups), each attributed at most once.
    db.execute(
        """CREATE TABLE exposures (
               exposure_id TEXT PRIMARY KEY, campaign TEXT NOT NULL, profile_id TEXT NOT NULL,
               grp TEXT NOT NULL, variant TEXT NOT NULL, sku TEXT NOT NULL, t REAL NOT NULL,
               until_t REAL NOT NULL, store_day TEXT NOT NULL, outcome_id TEXT,
               outcome_kind TEXT, outcome_t REAL, recorded_at REAL
           )"""
    )
    db.execute("CREATE INDEX exposures_profile ON exposures (profile_id, t)")
    db.execute("CREATE INDEX exposures_campaign ON exposures (campaign, t)")
    db.execute(
        """CREATE TABLE outcomes (
               outcome_id TEXT PRIMARY KEY, kind TEXT NOT NULL, profile_id TEXT NOT NULL,
               sku TEXT NOT NULL, t REAL NOT NULL, exposure_id TEXT, recorded_at REAL
           )"""
    )
    # The shop-floor insights, aggregated as they happen (never per person): distinct
    # pseudonymous devices per funnel stage and store day, seconds spent per square metre
    # and per zone and hour.
    db.execute(
        "CREATE TABLE funnel_marks (store_day TEXT NOT NULL, stage TEXT NOT NULL, "
        "device TEXT NOT NULL, recorded_at REAL, PRIMARY KEY (store_day, stage, device)) "
        "WITHOUT ROWID"
    )
    # Retention counts from the recording (wall clock), as for decisions (`stamp_recorded`).
    for table in ("exposures", "outcomes", "funnel_marks"):
        db.execute(f"CREATE INDEX {table}_recorded ON {table} (recorded_at)")
    db.execute(
        "CREATE TABLE heat_cells (store_day TEXT NOT NULL, cx INTEGER NOT NULL, "
        "cy INTEGER NOT NULL, seconds REAL NOT NULL, PRIMARY KEY (store_day, cx, cy))"
    )
    db.execute(
        "CREATE TABLE zone_occupancy (store_day TEXT NOT NULL, zone TEXT NOT NULL, "
        "hour INTEGER NOT NULL, seconds REAL NOT NULL, PRIMARY KEY (store_day, zone, hour))"
    )
    # Store days whose campaign aggregate went upstream (once each).
    db.execute("CREATE TABLE report_days (store_day TEXT PRIMARY KEY, sent_at REAL NOT NULL)")


MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7_holds, _v8_attribution]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    pass


def private_file(path: Path) -> None:
    """Create `path` (and its directory) readable by its owner only, or make it so."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    existed = path.exists()
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    if not existed and os.geteuid() == 0:
        # `sudo gateway …` on an installed box: a file root creates in the service's state
        # directory must stay the service's, or the daemon cannot open it at its next start
        # (SQLite itself gives -wal/-shm files the database's owner when run as root).
        directory = path.parent.stat()
        if directory.st_uid != 0:
            os.chown(path, directory.st_uid, directory.st_gid)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the state database. It holds shoppers' data:
    only its owner may read it (SQLite gives the -wal and -shm files the database's mode)."""
    private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


def read_only(path: Path) -> sqlite3.Connection:
    """The state database opened for reading only (checks that must not write)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)


def migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"state database is at schema {current}, newer than this gateway ({SCHEMA_VERSION});"
            " upgrade the gateway or point state_dir elsewhere"
        )
    if current == SCHEMA_VERSION:
        return SCHEMA_VERSION  # every start but the first: no migration, no sqlite_utils
    import sqlite_utils

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
        conn.execute("COMMIT")  # may fail too (a full disk): the transaction is still open then
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def is_disk_full(exc: BaseException) -> bool:
    """SQLite ran out of room (SQLITE_FULL), or the file system under it did (ENOSPC)."""
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def stamp_recorded(conn: sqlite3.Connection, now: float) -> None:
    """Give the decisions and offers written in this transaction their recording time (the
    pipeline itself knows only when things happened, never the wall clock)."""
    for table in ("decisions", "offers", "exposures", "outcomes", "funnel_marks"):
        conn.execute(f"UPDATE {table} SET recorded_at = ? WHERE recorded_at IS NULL", (now,))


def purge_expired(conn: sqlite3.Connection, now: float, retention_s: float) -> dict[str, int]:
    """Forget what concerns shoppers after the retention window, counted from when this box
    recorded it (wall clock): decisions (they name the device and the profile), offers that
    whose validity ended before the window, dead-lettered pushes. Raw
    sightings are never stored; delivered-event ids have their own retention
    (`mqtt.delivered_retention_s`). Returns rows removed per table."""
    cutoff = now - retention_s
    removed: dict[str, int] = {}
    with transaction(conn):
        for table, sql, args in (
            ("decisions", "DELETE FROM decisions WHERE recorded_at < ?", (cutoff,)),
            # An offer ends with its validity (redeemed or not): kept that long after.
            (
                "offers",
                "DELETE FROM offers WHERE recorded_at + (expires_at - issued_at) < ?",
                (cutoff,),
            ),
            ("dead_letter", "DELETE FROM dead_letter WHERE failed_at < ?", (cutoff,)),
            # Holds and pickup tasks name an offer (and a shopper): they go with it.
            ("holds", "DELETE FROM holds WHERE offer_id NOT IN (SELECT offer_id FROM offers)", ()),
            (
                "pickup_tasks",
                "DELETE FROM pickup_tasks WHERE offer_id NOT IN (SELECT offer_id FROM offers)",
                (),
            ),
            # Attribution and funnel rows name a profile or a device pseudonym: forgotten
            # like the decisions (the heat map and occupancy hold no one and stay).
            ("exposures", "DELETE FROM exposures WHERE recorded_at < ?", (cutoff,)),
            ("outcomes", "DELETE FROM outcomes WHERE recorded_at < ?", (cutoff,)),
            ("funnel_marks", "DELETE FROM funnel_marks WHERE recorded_at < ?", (cutoff,)),
        ):
            count = conn.execute(sql, args).rowcount
            if count:
                removed[table] = count
    return removed


def replay_shift(conn: sqlite3.Connection, origin_t: float, now: float) -> float:
    """The seconds that move a trace starting at `origin_t` to the present: chosen (as
    `now - origin_t`) the first time this state replays it, the same ever after."""
    with transaction(conn):
        row = conn.execute(
            "SELECT shift_s FROM replay_shifts WHERE origin_t = ?", (origin_t,)
        ).fetchone()
        if row is not None:
            return float(row[0])
        shift = now - origin_t
        conn.execute(
            "INSERT INTO replay_shifts (origin_t, shift_s, chosen_at) VALUES (?, ?, ?)",
            (origin_t, shift, now),
        )
    return shift
