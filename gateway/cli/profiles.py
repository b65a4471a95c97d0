"""`gateway profiles`: bulk import and export of the shopper profile cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli._common import BAR_WIDTH, CONFIG, bad_input, bar
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


def _cmd_profiles_import(args: argparse.Namespace) -> int:
    from gateway.config.sections import load_config
    from gateway.identity.importer import import_profiles
    from gateway.store import db

    config = load_config(args.config)
    path = Path(args.file)
    if not path.is_file():
        return bad_input(f"{path}: no such file")
    conn = db.connect(config.state_path / "gateway.db")
    clock = SystemClock()
    started = clock.monotonic()

    def progress(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(
            f"\r[{bar(BAR_WIDTH * done // total, '-')}] {100 * done // total:3d} %  "
            f"{done}/{total} lines",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    report = import_profiles(conn, path, progress)
    conn.close()
    for line, field, reason in report.errors:
        print(f"{path}:{line}: {field or 'line'}: {reason}", file=sys.stderr)
    print(
        f"imported {report.imported} profiles, rejected {len(report.errors)} lines "
        f"in {clock.monotonic() - started:.2f} s"
    )
    return 1 if report.errors else 0


def _cmd_profiles_export(args: argparse.Namespace) -> int:
    from gateway.config.sections import load_config
    from gateway.identity.importer import export_profiles
    from gateway.store import db

    config = load_config(args.config)
    conn = db.connect(config.state_path / "gateway.db")
    with open(args.file, "w", encoding="utf-8") as out:
        count = export_profiles(conn, out)
    conn.close()
    print(f"exported {count} profiles to {args.file}")
    return 0


def add_profiles(sub: Subparsers) -> None:
    profiles = sub.add_parser("profiles", help="the shopper profile cache")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", required=True)
    p = profiles_sub.add_parser(
        "import",
        parents=[CONFIG],
        help="import profiles from JSON lines or CSV; bad lines are reported, not fatal",
    )
    p.add_argument("file", help="FILE.jsonl or FILE.csv")
    p.set_defaults(func=_cmd_profiles_import)
    p = profiles_sub.add_parser(
        "export", parents=[CONFIG], help="write every cached profile as JSON lines"
    )
    p.add_argument("file", help="FILE.jsonl (the import format)")
    p.set_defaults(func=_cmd_profiles_export)
