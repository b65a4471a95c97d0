"""Several campaigns: priorities, segments, the shopper's own wishes, passing the window,
and campaign documents where one bad campaign leaves the good ones running."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config.sections import parse_config
from gateway.identity.store import IdentityStore
from gateway.model import OfferDecision, ZoneEvent, ZoneEventKind
from gateway.offers.engine import OfferEngine
from gateway.offers.rules import LimitsSection, PickupDiscountSection, Reason
from gateway.resources import data_file
from gateway.store.db import transaction
from gateway.sync.downlink import apply_document, campaign_rules, stored_campaigns

T0 = datetime(2026, 11, 23, 11, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
FLAGSHIP = PickupDiscountSection()
VIP = PickupDiscountSection(
    campaign="vip-20",
    percent=20,
    segments=["vip"],
    priority=10,
    message="VIP: {title} -{percent} %",
)
WINDOW = PickupDiscountSection(
    campaign="window", percent=5, enter_zones=[], pass_zones=["window"], dwell_at_item_zone=False
)
NO_LIMITS = LimitsSection(quiet_hours=[], cooldown_s=0, max_per_day=10, max_per_hour_store=1000)


def _seed(conn: sqlite3.Connection, **alice: Any) -> IdentityStore:
    store = IdentityStore(conn)
    seed = json.loads(data_file("demo-profiles.json").read_text())
    seed["profiles"][0].update(alice)
    carol = {
        "profile_id": "p-carol-77aa",
        "consent": {"proximity_offers": True},
        "cart": [{"sku": "978-0553283686", "title": "Hyperion", "price": 10.5, "added_at": "x"}],
    }
    seed["profiles"].append(carol)
    store.load_seed(seed)
    return store


def _decide(engine: OfferEngine, zone: str, profile: str, t: float = T0) -> list[OfferDecision]:
    event = ZoneEvent(ZoneEventKind.ENTER, f"dev-{profile}", zone, t, t, 0.9)
    with transaction(engine.conn):
        return engine.evaluate_all(event, event.device, profile)


def test_highest_priority_decides_first_and_the_rest_are_superseded(
    conn: sqlite3.Connection,
) -> None:
    store = _seed(conn, segments=["vip", "sci-fi"])
    engine = OfferEngine(conn, store, [FLAGSHIP, VIP], "Europe/Berlin", b"k" * 16, NO_LIMITS)
    assert [c.campaign for c in engine.campaigns] == ["vip-20", "pickup-discount"]
    alice = _decide(engine, "entrance", "p-alice-3f9c")
    assert [(d.campaign, d.issued, d.reason) for d in alice] == [
        ("vip-20", True, Reason.ISSUED),
        ("pickup-discount", False, Reason.SUPERSEDED),
    ]
    assert alice[0].percent == 20 and alice[0].message == "VIP: The Left Hand of Darkness -20 %"
    carol = _decide(engine, "entrance", "p-carol-77aa")
    assert [(d.campaign, d.issued, d.reason) for d in carol] == [
        ("vip-20", False, Reason.NOT_IN_SEGMENT),
        ("pickup-discount", True, Reason.ISSUED),
    ]
    # the same trigger again (a replay): nothing decided twice
    assert _decide(engine, "entrance", "p-carol-77aa") == []
    # every decision is on record with its reason
    rows = conn.execute("SELECT campaign, reason FROM decisions ORDER BY campaign").fetchall()
    assert sorted(rows) == sorted(
        [
            ("vip-20", Reason.ISSUED),
            ("pickup-discount", Reason.SUPERSEDED),
            ("vip-20", Reason.NOT_IN_SEGMENT),
            ("pickup-discount", Reason.ISSUED),
        ]
    )


def test_passing_the_window_triggers_only_window_campaigns(conn: sqlite3.Connection) -> None:
    store = _seed(conn)
    engine = OfferEngine(conn, store, [FLAGSHIP, WINDOW], "Europe/Berlin", b"k" * 16, NO_LIMITS)
    decisions = _decide(engine, "window", "p-alice-3f9c")
    assert [(d.campaign, d.trigger, d.issued) for d in decisions] == [
        ("window", "pass:window", True)
    ]
    assert _decide(engine, "aisle-kids", "p-alice-3f9c", T0 + 5) == []  # no trigger there


def test_the_shoppers_own_wishes_win(conn: sqlite3.Connection) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"declined_skus": ["978-0441478125"]}, Reason.ALREADY_DECLINED),
        ({"preferences": {"muted_campaigns": ["pickup-discount"]}}, Reason.MUTED),
        ({"preferences": {"max_offers_per_day": 0}}, Reason.CAP_DAY_SHOPPER),
    ]
    for alice, reason in cases:
        conn.execute("DELETE FROM decisions")
        conn.execute("DELETE FROM offers")
        store = _seed(conn, **alice)
        engine = OfferEngine(conn, store, [FLAGSHIP], "Europe/Berlin", b"k" * 16, NO_LIMITS)
        (decision,) = _decide(engine, "entrance", "p-alice-3f9c")
        assert (decision.issued, decision.reason) == (False, reason), alice


def test_a_declined_item_leaves_the_next_one_in_the_cart(conn: sqlite3.Connection) -> None:
    store = _seed(conn, declined_skus=["978-0441478125"])
    store.conn.execute(
        "INSERT OR REPLACE INTO stock (sku, title, quantity, zone_id) "
        "VALUES ('978-0765326355', 'The Way of Kings', 4, 'aisle-scifi')"
    )
    engine = OfferEngine(conn, store, [FLAGSHIP], "Europe/Berlin", b"k" * 16, NO_LIMITS)
    (decision,) = _decide(engine, "entrance", "p-alice-3f9c")
    assert decision.issued and decision.sku == "978-0765326355"


def test_local_campaigns_from_the_config() -> None:
    config = parse_config(
        "[offers.campaigns.vip-20]\npercent = 20\nsegments = ['vip']\npriority = 10\n"
        "[offers.campaigns.window]\nenter_zones = []\npass_zones = ['window']\n",
        "gw.toml",
    )
    assert [c.campaign for c in config.offers.all_campaigns()] == [
        "pickup-discount",
        "vip-20",
        "window",
    ]


def test_a_bad_campaign_never_disables_the_good_ones(conn: sqlite3.Connection) -> None:
    data = {
        "campaigns": [
            {"campaign": "vip-20", "percent": 20, "segments": ["vip"], "priority": 10},
            {"campaign": "broken", "percent": 500},
            {"campaign": "vip-20", "percent": 25},
            "not an object",
        ]
    }
    good, bad = campaign_rules(data)
    assert [rule.campaign for rule, _raw in good] == ["vip-20"]
    assert [where for where, _ in bad] == [
        "data.campaigns[1].percent",
        "data.campaigns[2].campaign",
        "data.campaigns[3]",
    ]
    doc = {"family": "campaigns", "kind": "snapshot", "version": 1, "data": data}
    assert apply_document(conn, doc) == "applied"
    assert [c.campaign for c in stored_campaigns(conn)] == ["vip-20"]


def test_codes_typed_at_the_counter(conn: sqlite3.Connection) -> None:
    from gateway.offers.codes import normalise_code

    assert normalise_code(" pk 7q2m-xk4d ") == "PK-7Q2M-XK4D"
    assert normalise_code("PK-7Q2M-XK4O") == "PK-7Q2M-XK40"  # O read as zero
    assert normalise_code("PK-7Q2M") is None and normalise_code("PK-UUUU-UUUU") is None
    store = _seed(conn)
    engine = OfferEngine(conn, store, [FLAGSHIP], "Europe/Berlin", b"k" * 16, NO_LIMITS)
    (offer,) = _decide(engine, "entrance", "p-alice-3f9c")
    assert offer.code is not None and offer.expires_at is not None
    typed = offer.code.lower().replace("-", " ")
    assert engine.redeem_code("PK-0000-0000", T0 + 60, "counter") == (None, "unknown_code")
    assert engine.redeem_code(typed, offer.expires_at + 1, "counter") == (None, "expired")
    redemption, outcome = engine.redeem_code(typed, T0 + 60, "counter")
    assert outcome == "redeemed" and redemption is not None
    assert (redemption.offer_id, redemption.sku, redemption.reader) == (
        offer.offer_id,
        offer.sku,
        "counter",
    )
    assert engine.redeem_code(offer.code, T0 + 90, "counter") == (None, "already_redeemed")


def test_redeem_command_queues_the_attribution(tmp_path: Any) -> None:
    import subprocess
    import sys

    from gateway.clock import SystemClock
    from gateway.runtime.gateway import Gateway

    config_file = tmp_path / "gw.toml"
    config_file.write_text(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[offers.limits]\nquiet_hours = []\n"
    )
    # The offer is issued now by the system clock: the redeem command runs in another process
    # and judges the code's validity by that same clock.
    clock = SystemClock()
    config = parse_config(config_file.read_text(), str(config_file))
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    now = clock.wall()
    with transaction(gateway.conn):
        event = ZoneEvent(ZoneEventKind.ENTER, "dev-a", "entrance", now, now, 0.9)
        offer = gateway.offers.evaluate(event, "dev-a", "p-alice-3f9c")
    gateway.close()
    assert offer is not None and offer.issued and offer.code
    command = [
        sys.executable,
        "-m",
        "gateway",
        "offers",
        "redeem",
        offer.code.lower(),
        "--config",
        str(config_file),
        "--touchpoint",
        "till-2",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"redeemed {offer.code}" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already redeemed" in again.stderr
    state = sqlite3.connect(tmp_path / "state" / "gateway.db")
    bodies = [
        json.loads(b)
        for (b,) in state.execute("SELECT body FROM outbox WHERE stream = 'redemption'")
    ]
    assert len(bodies) == 1 and bodies[0]["data"]["offer_id"] == offer.offer_id
    assert bodies[0]["data"]["reader"] == "till-2"


def test_personal_data_is_forgotten_after_the_retention_window(conn: sqlite3.Connection) -> None:
    from gateway.store.db import purge_expired, stamp_recorded

    store = _seed(conn)
    engine = OfferEngine(conn, store, [FLAGSHIP], "Europe/Berlin", b"k" * 16, NO_LIMITS)
    # Recorded 40 days apart (wall clock) about visits on the same day (occurrence time, a
    # replay): retention counts from the recording.
    recorded = 1_900_000_000.0
    old = _decide(engine, "entrance", "p-alice-3f9c", T0)
    stamp_recorded(conn, recorded)
    recent = _decide(engine, "entrance", "p-carol-77aa", T0 + 60)
    stamp_recorded(conn, recorded + 40 * 86400)
    assert old[0].issued and recent[0].issued
    removed = purge_expired(conn, recorded + 41 * 86400, 30 * 86400)
    assert removed == {
        "decisions": 1,
        "offers": 1,
        "holds": 1,
        "pickup_tasks": 1,
        "exposures": 1,
        "funnel_marks": 1,
    }
    # her exposure and her funnel mark (issue 21) go with her decision
    assert conn.execute("SELECT profile_id FROM exposures").fetchall() == [("p-carol-77aa",)]
    left = conn.execute("SELECT profile_id FROM decisions").fetchall()
    assert left == [("p-carol-77aa",)]
    assert conn.execute("SELECT profile_id FROM offers").fetchall() == [("p-carol-77aa",)]
