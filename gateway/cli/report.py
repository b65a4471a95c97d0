"""`gateway report`: did the campaigns bring people to the counter who would not have come?"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from gateway.cli._common import CONFIG
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


def _cmd_report(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from gateway.config.sections import load_config
    from gateway.offers.report import render_text, report_for
    from gateway.store import db
    from gateway.sync.downlink import stored_campaigns

    config = load_config(args.config)
    tz = ZoneInfo(config.gateway.timezone)
    conn = db.connect(config.state_path / "gateway.db")
    try:
        campaigns = stored_campaigns(conn) or config.offers.all_campaigns()
        try:
            report = report_for(conn, campaigns, tz, SystemClock().wall(), args.since)
        except ValueError as exc:
            print(f"gateway report: {exc}", file=sys.stderr)
            return 2
    finally:
        conn.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render_text(report))
    return 0


def add_report(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report",
        parents=[CONFIG],
        help="campaign results: exposed vs held-out shoppers, uplift with 95 % intervals, funnel",
    )
    p.add_argument(
        "--since",
        metavar="D",
        default=None,
        help="from this store-local date (2026-11-01) or days back (7d); default: all recorded",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_report)
