"""`gateway offers`: explain past decisions, redeem a code at the counter."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gateway.cli._common import CONFIG, bad_input
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


# Reasons whose code alone does not say enough.
EXPLAINED = {
    "held_for_other": "every copy on the shelf was set aside for another shopper's open "
    "offer; offered again once that hold ends (gateway holds list)",
    "holdout": "eligible, but in the campaign's control group (holdout_percent); no push, "
    "her outcome is still counted to measure the campaign's uplift",
}


def _cmd_offers_why(args: argparse.Namespace) -> int:
    """Every decision about a shopper, when it happened in the store's time."""
    from zoneinfo import ZoneInfo

    from gateway.config.sections import load_config
    from gateway.humantime import local_datetime
    from gateway.offers.engine import why
    from gateway.store import db

    config = load_config(args.config)
    tz = ZoneInfo(config.gateway.timezone)
    key = bytes.fromhex(config.gateway.pseudonym_key)
    conn = db.connect(config.state_path / "gateway.db")
    try:
        rows = why(conn, args.who, key)
        known = conn.execute("SELECT 1 FROM profiles WHERE profile_id = ?", (args.who,)).fetchone()
        offers = conn.execute(
            "SELECT code, sku, status, issued_at, redeemed_at FROM offers WHERE profile_id = ? "
            "ORDER BY issued_at",
            (args.who,),
        ).fetchall()
    finally:
        conn.close()
    if not rows and not known and not args.who.startswith("dev-"):
        return bad_input(
            f"{args.who}: no decisions, and not a profile id of this gateway's cache; give a "
            "profile id or the dev-… pseudonym the console and events show"
        )
    if not rows:
        print(f"no decisions recorded for {args.who}")
    for t, campaign, trigger, issued, reason in rows:
        verdict = "issued" if issued else "suppressed"
        if reason == "holdout":
            verdict = "held out"
        why_not = EXPLAINED.get(reason)
        more = f": {why_not}" if why_not else ""
        print(f"{local_datetime(t, tz)}  {campaign} {trigger}: {verdict} ({reason}{more})")
    for code, sku, status, issued_at, redeemed_at in offers:
        # What became of each offer, listed at its issue time; the code's last four, as staff
        # see it on the console.
        when = f" at {local_datetime(redeemed_at, tz)}" if redeemed_at else ""
        print(f"{local_datetime(issued_at, tz)}  offer …{str(code)[-4:]} for {sku}: {status}{when}")
    return 0


def _cmd_offers_redeem(args: argparse.Namespace) -> int:
    """Staff type a shopper's code at the counter: redeem it and queue the attribution."""
    from gateway.cli.stock import queue_events
    from gateway.config.sections import load_config
    from gateway.offers.engine import redeem_code
    from gateway.offers.holds import REDEEMED
    from gateway.offers.pickup import end_offer
    from gateway.store import db
    from gateway.store.outbox import Outbox
    from gateway.sync.envelopes import EnvelopeFactory

    config = load_config(args.config)
    # The daemon's envelopes, so the redemption event and its id are the ones the daemon would
    # queue; the map, radios and campaigns play no part in a redemption and are not loaded.
    envelopes = EnvelopeFactory.for_config(config)
    conn = db.connect(config.state_path / "gateway.db")
    try:
        now = SystemClock().wall()
        with db.transaction(conn):
            redemption, outcome = redeem_code(conn, args.code, now, args.touchpoint)
            if redemption is not None:
                envelope = envelopes.envelope(redemption)
                assert envelope is not None
                Outbox(conn).append([envelope], now)
                # the unit is sold: its hold and pickup task end (gateway.offers.pickup)
                ended = end_offer(conn, redemption.offer_id, now, REDEEMED, args.touchpoint)
                queue_events(conn, config, ended)
    finally:
        conn.close()
    if redemption is None:
        print(f"gateway offers redeem: {args.code}: {outcome.replace('_', ' ')}", file=sys.stderr)
        return 1
    print(f"redeemed {redemption.code}: {redemption.sku} (offer {redemption.offer_id})")
    return 0


def add_offers(sub: Subparsers) -> None:
    offers = sub.add_parser("offers", help="offer decisions")
    offers_sub = offers.add_subparsers(dest="offers_command", required=True)
    p = offers_sub.add_parser(
        "why", parents=[CONFIG], help="explain every decision for a profile or device"
    )
    p.add_argument(
        "who",
        help="a profile id (p-…) or a device as the console, logs and events show it (dev-…)",
    )
    p.set_defaults(func=_cmd_offers_why)
    p = offers_sub.add_parser("redeem", parents=[CONFIG], help="redeem a code typed at the counter")
    p.add_argument("code", help="the offer code, e.g. PK-7Q2M-XK4D (case and dashes optional)")
    p.add_argument(
        "--touchpoint", default="counter", help="where it was redeemed (default: counter)"
    )
    p.set_defaults(func=_cmd_offers_redeem)
