"""`gateway stock list`, `gateway holds list`, `gateway tasks list`: what is on the shelves,
what is set aside for whom (never who: no profile ids), and what staff have to fetch."""

from __future__ import annotations

import argparse
import json
import sqlite3
from typing import TYPE_CHECKING, Any

from gateway.cli._common import CONFIG
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers
    from gateway.config.sections import Config
    from gateway.model import PipelineEvent


def _open(args: argparse.Namespace) -> tuple[Config, sqlite3.Connection]:
    from gateway.config.sections import load_config
    from gateway.store import db

    config = load_config(args.config)
    return config, db.connect(config.state_path / "gateway.db")


def _clock_text(t: float | None, config: Config) -> str:
    from zoneinfo import ZoneInfo

    from gateway.humantime import local_datetime

    return "-" if t is None else local_datetime(t, ZoneInfo(config.gateway.timezone))


def _emit(
    args: argparse.Namespace, rows: list[dict[str, Any]], lines: list[str], empty: str
) -> int:
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    elif not rows:
        print(empty)
    else:
        print("\n".join(lines))
    return 0


def _cmd_stock_list(args: argparse.Namespace) -> int:
    """Every item with its quantity, its active holds and what is free to offer."""
    _config, conn = _open(args)
    now = SystemClock().wall()
    try:
        rows = conn.execute(
            "SELECT s.sku, s.title, s.quantity, s.zone_id, "
            "(SELECT count(*) FROM holds h WHERE h.sku = s.sku AND h.status = 'active' "
            "AND h.expires_at >= ?) FROM stock s ORDER BY s.zone_id, s.sku",
            (now,),
        ).fetchall()
    finally:
        conn.close()
    items = [
        {
            "sku": str(r[0]),
            "title": str(r[1] or ""),
            "quantity": int(r[2]),
            "zone_id": str(r[3] or ""),
            "held": int(r[4]),
            "available": max(int(r[2]) - int(r[4]), 0),
        }
        for r in rows
    ]
    lines = [f"{'SKU':<18} {'QTY':>4} {'HELD':>4} {'FREE':>4}  {'ZONE':<16} TITLE"] + [
        f"{i['sku']:<18} {i['quantity']:>4} {i['held']:>4} {i['available']:>4}  "
        f"{i['zone_id']:<16} {i['title']}"
        for i in items
    ]
    return _emit(args, items, lines, "no stock (gateway stock import FILE)")


def _cmd_holds_list(args: argparse.Namespace) -> int:
    from gateway.offers.holds import list_holds

    config, conn = _open(args)
    try:
        rows = list_holds(conn, active_only=not args.all)
    finally:
        conn.close()
    holds = [r._asdict() for r in rows]
    lines = [f"{'HOLD':<24} {'SKU':<18} {'STATUS':<16} PLACED → EXPIRES / ENDED"] + [
        f"{r.hold_id:<24} {r.sku:<18} {r.status:<16} {_clock_text(r.placed_at, config)} → "
        f"{_clock_text(r.ended_at if r.ended_at is not None else r.expires_at, config)}"
        for r in rows
    ]
    return _emit(args, holds, lines, "no active holds" if not args.all else "no holds")


def _cmd_tasks_list(args: argparse.Namespace) -> int:
    from gateway.offers.pickup import tasks

    _config, conn = _open(args)
    now = SystemClock().wall()
    try:
        rows = tasks(conn, open_only=not args.all)
    finally:
        conn.close()
    out = [
        {
            "task_id": r.task_id,
            "sku": r.sku,
            "title": r.title,
            "zone": r.zone,
            "code_hint": r.code_hint,
            "language": r.language,
            "status": r.status,
            "opened_at": r.opened_at,
            "age_s": round(max(now - r.opened_at, 0.0), 1),
            "updated_by": r.updated_by,
        }
        for r in rows
    ]
    lines = [f"{'TASK':<24} {'STATUS':<10} {'AGE':>6}  {'ZONE':<14} {'CODE':<6} LANG  TITLE"] + [
        f"{r.task_id:<24} {r.status:<10} {round(max(now - r.opened_at, 0.0)) // 60:>4} m  "
        f"{r.zone:<14} …{r.code_hint:<5} {r.language:<5} {r.title}"
        for r in rows
    ]
    return _emit(args, out, lines, "no open pickup tasks" if not args.all else "no tasks")


def queue_events(conn: sqlite3.Connection, config: Config, events: list[PipelineEvent]) -> int:
    """Queue what a command caused (hold and task events, redemptions) as the daemon would:
    the same envelopes and ids; an apology push waits for the webhook if one is set."""
    from gateway.model import HoldEvent
    from gateway.sinks.push import Push, push_event
    from gateway.store.outbox import Outbox
    from gateway.sync.envelopes import EnvelopeFactory

    envelopes = EnvelopeFactory.for_config(config)
    outbox = Outbox(conn)
    now = SystemClock().wall()
    queued = 0
    for event in events:
        envelope = envelopes.envelope(event)
        if envelope is not None:
            queued += len(outbox.append([envelope], now))
        if isinstance(event, HoldEvent) and event.message and config.sinks.webhook.url:
            outbox.append([push_event(Push.apology(event), "withdrawn")], now)
    return queued


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_stock_list(stock_sub: Subparsers) -> None:
    p = stock_sub.add_parser(
        "list",
        parents=[CONFIG],
        help="items with quantity, active holds and what is free to offer",
    )
    _json_flag(p)
    p.set_defaults(func=_cmd_stock_list)


def add_holds(sub: Subparsers) -> None:
    holds = sub.add_parser("holds", help="units set aside for issued offers")
    holds_sub = holds.add_subparsers(dest="holds_command", required=True)
    p = holds_sub.add_parser("list", parents=[CONFIG], help="active holds (--all: every hold)")
    p.add_argument("--all", action="store_true", help="also the holds that ended, and why")
    _json_flag(p)
    p.set_defaults(func=_cmd_holds_list)


def add_tasks(sub: Subparsers) -> None:
    tasks = sub.add_parser("tasks", help="pickup tasks for staff")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    p = tasks_sub.add_parser(
        "list", parents=[CONFIG], help="open pickup tasks with their ages (--all: every task)"
    )
    p.add_argument("--all", action="store_true", help="also the closed tasks")
    _json_flag(p)
    p.set_defaults(func=_cmd_tasks_list)
