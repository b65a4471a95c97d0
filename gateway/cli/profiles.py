"""`gateway profiles` and `gateway stock`: load shopper profiles (with their carts) and stock
from files into the state database, export the profile cache. Formats: docs/data-formats.md."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli._common import BAR_WIDTH, CONFIG, bad_input, bar
from gateway.clock import SystemClock

if TYPE_CHECKING:
    import sqlite3

    from gateway.cli._common import Subparsers
    from gateway.config.sections import Config
    from gateway.identity.bulk import ImportReport

FORMAT_HELP = (
    "jsonl (one record per line), json (one document) or csv; default: by the file's suffix "
    "(.jsonl/.ndjson, .json, .csv)"
)


def _print_report(path: Path, report: ImportReport, what: str, dry_run: bool) -> int:
    for note in report.notes:
        print(f"{path}: note: {note}", file=sys.stderr)
    for line, field, reason in report.errors:
        print(f"{path}:{line}: {field or 'line'}: {reason}", file=sys.stderr)
    if report.errors:
        lines = len({line for line, _, _ in report.errors})
        print(
            f"nothing imported: {len(report.errors)} problem(s) on {lines} line(s) of {path} "
            f"(the other {report.records} {what} are fine); fix them and run again "
            "(--dry-run checks without writing)",
            file=sys.stderr,
        )
        return 2
    return 0


def _state(database: Path, dry_run: bool) -> sqlite3.Connection:
    """The state database to import into; for a dry run, one that cannot be written: the
    real one read-only if it exists (its stored identifiers are checked against), else an
    empty one in memory — a check on a box whose daemon never ran leaves nothing behind."""
    from gateway.store import db

    if not dry_run:
        return db.connect(database)
    if database.exists():
        return db.read_only(database)
    conn = sqlite3.connect(":memory:")
    db.migrate(conn)
    return conn


def _cmd_profiles_import(args: argparse.Namespace) -> int:
    from gateway.config.sections import load_config
    from gateway.identity.bulk import import_profiles

    config = load_config(args.config)
    path = Path(args.file)
    if not path.is_file():
        return bad_input(f"{path}: no such file")
    conn = _state(config.state_path / "gateway.db", args.dry_run)
    clock = SystemClock()
    started = clock.monotonic()
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if not tty:
            return  # a bar is for people watching; a log gets the summary line
        end = "\n" if done >= total else ""
        print(
            f"\r[{bar(BAR_WIDTH * done // total, '-')}] {100 * done // total:3d} %",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    try:
        report = import_profiles(conn, path, progress, form=args.format, dry_run=args.dry_run)
    finally:
        conn.close()
    code = _print_report(path, report, "profiles", args.dry_run)
    if code:
        return code
    counts = (
        f"{report.records} profiles ({report.identifiers} identifiers, "
        f"{report.cart_items} cart items)"
    )
    if args.dry_run:
        print(f"dry run: {path} is good: would import {counts}; nothing written")
    else:
        print(f"imported {counts} in {clock.monotonic() - started:.2f} s")
    return 0


def _cmd_stock_import(args: argparse.Namespace) -> int:
    from gateway.config.sections import load_config
    from gateway.identity.bulk import import_stock
    from gateway.site.storemap import load_map

    config = load_config(args.config)
    path = Path(args.file)
    if not path.is_file():
        return bad_input(f"{path}: no such file")
    # Stock names the zone it lies in: checked against the store's map (MapError: exit 2).
    store = load_map(config.resolve(config.map.path))
    zones = {zone.id for zone in store.zones}
    conn = _state(config.state_path / "gateway.db", args.dry_run)
    try:
        report = import_stock(
            conn, path, form=args.format, dry_run=args.dry_run, replace=args.replace, zones=zones
        )
        total = conn.execute("SELECT count(*) FROM stock").fetchone()[0]
        withdrawn = 0 if args.dry_run else _withdraw_over_held(conn, config)
    finally:
        conn.close()
    code = _print_report(path, report, "items", args.dry_run)
    if code:
        return code
    mode = "replacing the whole stock" if args.replace else "adding to and updating the stock"
    if withdrawn:
        print(f"{withdrawn} holds withdrawn: fewer units than were promised (newest first)")
    if args.dry_run:
        print(f"dry run: {path} is good: would import {report.records} items, {mode}")
    else:
        print(
            f"imported {report.records} stock items ({mode}); {total} items in stock now. "
            "A running daemon uses them at once; new shelf zones count for dwell triggers "
            "after `systemctl reload proximity-gateway`"
        )
    return 0


def _withdraw_over_held(conn: sqlite3.Connection, config: Config) -> int:
    """Fewer units than holds after the import: the newest holds are withdrawn (their
    shoppers told), as a stock document from the backend would (gateway.offers.pickup)."""
    from gateway.cli.stock import queue_events
    from gateway.model import HoldEvent
    from gateway.offers.pickup import reconcile_stock
    from gateway.store import db

    with db.transaction(conn):
        events = reconcile_stock(conn, SystemClock().wall())
        queue_events(conn, config, events)
    return sum(isinstance(e, HoldEvent) for e in events)


def _cmd_profiles_export(args: argparse.Namespace) -> int:
    from gateway.config.sections import load_config
    from gateway.identity.importer import export_profiles
    from gateway.store import db

    config = load_config(args.config)
    conn = db.connect(config.state_path / "gateway.db")
    try:
        if args.file == "-":
            count = export_profiles(conn, sys.stdout)
        else:
            with open(args.file, "w", encoding="utf-8") as out:
                count = export_profiles(conn, out)
    except OSError as exc:
        return bad_input(f"{args.file}: {exc.strerror}")
    finally:
        conn.close()
    print(f"exported {count} profiles to {args.file}", file=sys.stderr)
    return 0


def _import_options(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("file", help=example)
    p.add_argument("--format", choices=("jsonl", "json", "csv"), help=FORMAT_HELP)
    p.add_argument(
        "--dry-run", action="store_true", help="check the whole file and report; write nothing"
    )


def add_profiles(sub: Subparsers) -> None:
    profiles = sub.add_parser("profiles", help="the shopper profile cache: import, export")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", required=True)
    p = profiles_sub.add_parser(
        "import",
        parents=[CONFIG],
        help="import shopper profiles with their carts (JSON lines, JSON document or CSV); "
        "strict: one bad line and nothing is imported, every problem is listed",
        description="Import shopper profiles with their carts. The whole file is checked "
        "first; if any line is bad, every problem is listed (file:line: field: reason) and "
        "nothing is written (exit 2). Each profile replaces the stored one with the same "
        "profile_id (identifiers and cart included); others are kept. "
        "Formats: docs/data-formats.md.",
    )
    _import_options(p, "profiles.jsonl, profiles.json or profiles.csv")
    p.set_defaults(func=_cmd_profiles_import)
    p = profiles_sub.add_parser(
        "export",
        parents=[CONFIG],
        help="write every cached profile as JSON lines (the import format; '-' for stdout)",
    )
    p.add_argument("file", help="FILE.jsonl to write, or - for stdout")
    p.set_defaults(func=_cmd_profiles_export)


def add_stock(sub: Subparsers) -> None:
    stock = sub.add_parser("stock", help="what is on the shelves: import")
    stock_sub = stock.add_subparsers(dest="stock_command", required=True)
    p = stock_sub.add_parser(
        "import",
        parents=[CONFIG],
        help="import stock items (sku, title, quantity, zone_id) from JSON lines, a JSON "
        "document or CSV; zones checked against the map; all or nothing",
        description="Import stock items. Every item is checked (its zone_id against the "
        "configured map) before anything is written; one bad line and nothing is (exit 2). "
        "Items replace the stored ones with the same sku; with --replace the file is the "
        "whole stock. Formats: docs/data-formats.md.",
    )
    _import_options(p, "stock.jsonl, stock.json or stock.csv")
    p.add_argument(
        "--replace",
        action="store_true",
        help="the file is the whole stock: items not in it are removed",
    )
    p.set_defaults(func=_cmd_stock_import)
    from gateway.cli.stock import add_stock_list

    add_stock_list(stock_sub)
