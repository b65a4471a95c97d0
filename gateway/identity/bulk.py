"""Bulk imports from files: shopper profiles (with their carts) and stock.

Both are all-or-nothing with respect to bad input: the whole file is read and validated
first, every bad record reported (line, field, reason), and nothing is written when there is
one. `dry_run` stops after that check.

Stock is then written in one transaction. Profiles can be millions of lines on a box whose
daemon commits every few hundred milliseconds, so they are written in transactions of
`BATCH` records (each one short, the daemon's commits go on between them): an import cut off
by a crash or power loss leaves its first batches in, and running the same import again
completes it — each record replaces the shopper's profile, identifiers and cart, so nothing
is duplicated. An import adds and replaces; shoppers and items not in the file are kept
(stock: unless `replace`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.identity.importer import LineError, Rows, profile_rows, row_writes, stock_row
from gateway.identity.readers import Form, detect_form, read_records
from gateway.store.db import transaction

BATCH = 5000
STOCK_INSERT = "INSERT OR REPLACE INTO stock (sku, title, quantity, zone_id) VALUES (?,?,?,?)"


@dataclass(slots=True)
class ImportReport:
    form: Form = "jsonl"
    records: int = 0  # valid records found
    imported: int = 0  # records written (0 when any was bad, or on a dry run)
    identifiers: int = 0
    cart_items: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # line, field, reason
    notes: list[str] = field(default_factory=list)


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _profiles(
    path: Path, form: Form, report: ImportReport, conn: sqlite3.Connection | None = None
) -> Iterator[tuple[int, Rows]]:
    """(line, rows of one valid profile); every problem goes to `report.errors`. With `conn`,
    an identifier stored for a profile this file does not re-import is an error too: an
    import never moves a phone or card from one shopper to another unless the file says so
    (the other profile is in it, without that identifier)."""
    first_line: dict[str, int] = {}
    owner: dict[tuple[str, str], str] = {}
    stored_elsewhere: list[tuple[int, str, str, str]] = []  # line, kind, value, stored owner
    for number, doc in read_records(path, form, "profiles", report.notes):
        if isinstance(doc, LineError):
            report.errors.append((number, doc.field, doc.reason))
            continue
        rows = Rows()
        try:
            profile_rows(doc, rows)
            pid = rows.profiles[0][0]
            if pid in first_line:
                raise LineError("profile_id", f"{pid!r} is already on line {first_line[pid]}")
            for kind, value, _ in rows.identifiers:
                other = owner.get((kind, value))
                if other is not None and other != pid:
                    raise LineError(f"identifiers.{kind}", f"{value!r} also belongs to {other!r}")
        except LineError as exc:
            report.errors.append((number, exc.field, exc.reason))
            continue
        first_line[pid] = number
        for kind, value, _ in rows.identifiers:
            owner[(kind, value)] = pid
            if conn is not None:
                row = conn.execute(
                    "SELECT profile_id FROM identifiers WHERE kind = ? AND value = ?", (kind, value)
                ).fetchone()
                if row is not None and row[0] != pid:
                    stored_elsewhere.append((number, kind, value, str(row[0])))
        yield number, rows
    refused: set[int] = set()
    for number, kind, value, other in stored_elsewhere:
        if other not in first_line:  # re-imported in this file: the in-file check decides
            refused.add(number)
            report.errors.append(
                (
                    number,
                    f"identifiers.{kind}",
                    f"{value!r} belongs to profile {other!r}, which this file does not "
                    "re-import; import that profile too (without it) or remove it there first",
                )
            )
    report.errors.sort(key=lambda error: error[0])
    report.records -= len(refused)  # yielded (and counted) before their owner was known


def import_profiles(
    conn: sqlite3.Connection,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    form: Form | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Check every record of the file; if all are good (and not `dry_run`), write them.
    `progress(done, total)` counts lines read, checking and writing."""
    report = ImportReport(form=form or detect_form(path))
    lines = max(1, count_lines(path))
    total = lines if dry_run else 2 * lines
    for number, rows in _profiles(path, report.form, report, conn):
        report.records += 1
        report.identifiers += len(rows.identifiers)
        report.cart_items += len(rows.carts)
        if progress is not None and report.records % BATCH == 0:
            progress(min(number, lines), total)
    if report.errors or dry_run:
        if progress is not None:
            progress(total, total)
        return report
    batch = Rows()

    def flush() -> None:
        with transaction(conn):
            for sql, values in row_writes(batch, move_identifiers=True):
                if values:
                    conn.executemany(sql, values)
        report.imported += len(batch.profiles)

    for number, rows in _profiles(path, report.form, ImportReport()):
        batch.profiles += rows.profiles
        batch.identifiers += rows.identifiers
        batch.carts += rows.carts
        batch.replaced += rows.replaced
        if len(batch.profiles) >= BATCH:
            flush()
            batch = Rows()
            if progress is not None:
                progress(lines + min(number, lines), total)
    if batch.profiles:
        flush()
    if progress is not None:
        progress(total, total)
    return report


def import_stock(
    conn: sqlite3.Connection,
    path: Path,
    *,
    form: Form | None = None,
    dry_run: bool = False,
    replace: bool = False,
    zones: set[str] | None = None,
) -> ImportReport:
    """Check every stock item (against the map's `zones` when given); if all are good (and
    not `dry_run`), write them in one transaction. `replace`: the file is the whole stock,
    items not in it are removed."""
    report = ImportReport(form=form or detect_form(path))
    rows: list[tuple[str, str, int, str]] = []
    first_line: dict[str, int] = {}
    for number, doc in read_records(path, report.form, "stock", report.notes):
        if isinstance(doc, LineError):
            report.errors.extend((number, e.field, e.reason) for e in doc.each)
            continue
        problems: list[LineError] = []
        try:
            row: tuple[str, str, int, str] | None = stock_row(doc)
        except LineError as exc:
            problems, row = exc.each, None
        if row is not None and row[0] in first_line:
            problems.append(LineError("sku", f"{row[0]!r} is already on line {first_line[row[0]]}"))
        # the zone is checked even when other cells are wrong: the row is fixed once
        zone = doc.get("zone_id") if isinstance(doc, dict) else None
        zone = zone.strip() if isinstance(zone, str) else ""
        if zones is not None and zone and zone not in zones:
            known = ", ".join(sorted(zones)[:12]) + (" …" if len(zones) > 12 else "")
            problems.append(
                LineError("zone_id", f"{zone!r} is not a zone of the map (zones: {known})")
            )
        if problems or row is None:
            report.errors.extend((number, e.field, e.reason) for e in problems)
            continue
        first_line[row[0]] = number
        rows.append(row)
    report.records = len(rows)
    if report.errors or dry_run:
        return report
    with transaction(conn):
        if replace:
            conn.execute("DELETE FROM stock")
        conn.executemany(STOCK_INSERT, rows)
    report.imported = len(rows)
    return report
