"""The offer engine: every reason, the daily cap, idempotency, codes, redemption."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TypedDict, Unpack
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import PinnedClock
from gateway.identity.store import CartItem, IdentityStore, Profile, StockItem
from gateway.model import OfferDecision, ZoneEvent, ZoneEventKind
from gateway.offers.engine import OfferEngine
from gateway.offers.rules import (
    LimitsSection,
    PickupDiscountSection,
    PickupFacts,
    Reason,
    decide_pickup,
)
from gateway.store.db import transaction

RULE = PickupDiscountSection()
KEY = b"k" * 16
CODE = re.compile(r"^PK-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
ALICE_DEVICE = "ibeacon:5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:1"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()

ITEM = CartItem("sku-1", "Book", 10.0, "2026-11-01")
STOCK = StockItem("sku-1", "Book", 2, "aisle-scifi")


class FactsChanges(TypedDict, total=False):
    """PickupFacts fields a case sets differently from the base facts in `_facts`."""

    profile: Profile | None
    cart: list[CartItem]
    in_stock: list[tuple[CartItem, StockItem]]
    redeemed_skus: frozenset[str]
    offers_today: int
    offers_today_all: int
    since_last_push_s: float | None
    store_offers_last_hour: int
    minute_of_day: int
    offered_today_skus: frozenset[str]


def _facts(**kw: Unpack[FactsChanges]) -> PickupFacts:
    base = PickupFacts(
        profile=Profile("p", True, False, "en"),
        cart=[ITEM],
        in_stock=[(ITEM, STOCK)],
        redeemed_skus=frozenset(),
        offers_today=0,
    )
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize(
    ("facts", "dwell_zone", "reason"),
    [
        (_facts(profile=None), None, Reason.UNKNOWN),
        (_facts(profile=Profile("p", True, True, "en")), None, Reason.OPTED_OUT),
        (_facts(profile=Profile("p", False, False, "en")), None, Reason.NO_CONSENT),
        (_facts(cart=[], in_stock=[]), None, Reason.NO_SAVED_CART),
        (_facts(in_stock=[]), None, Reason.OUT_OF_STOCK),
        (_facts(), "aisle-kids", Reason.NOT_ITEM_ZONE),
        (_facts(redeemed_skus=frozenset({"sku-1"})), None, Reason.ALREADY_REDEEMED),
        (_facts(offers_today=1), None, Reason.CAP_DAY),
        (_facts(offered_today_skus=frozenset({"sku-1"})), None, Reason.ALREADY_OFFERED),
        (_facts(), None, Reason.ISSUED),
        (_facts(), "aisle-scifi", Reason.ISSUED),
    ],
)
def test_every_outcome_has_its_reason(
    facts: PickupFacts, dwell_zone: str | None, reason: str
) -> None:
    verdict = decide_pickup(RULE, facts, dwell_zone)
    assert verdict.reason == reason
    assert verdict.issued == (reason == Reason.ISSUED)


@settings(max_examples=300, deadline=None)
@given(
    consent=st.booleans(),
    opted_out=st.booleans(),
    known=st.booleans(),
    offers_today=st.integers(0, 3),
    in_stock=st.booleans(),
    max_per_day=st.integers(1, 3),
)
def test_trust_properties(
    consent: bool, opted_out: bool, known: bool, offers_today: int, in_stock: bool, max_per_day: int
) -> None:
    rule = PickupDiscountSection(max_per_day=max_per_day)
    profile = Profile("p", consent, opted_out, "en") if known else None
    verdict = decide_pickup(
        rule,
        _facts(
            profile=profile, offers_today=offers_today, in_stock=[(ITEM, STOCK)] if in_stock else []
        ),
        None,
    )
    if verdict.issued:
        assert known and consent and not opted_out and in_stock
        assert offers_today < max_per_day
    assert verdict.reason


def _engine(conn: sqlite3.Connection, seeded: IdentityStore) -> OfferEngine:
    return OfferEngine(conn, seeded, RULE, "Europe/Berlin", KEY)


def _evaluate(
    engine: OfferEngine, kind: str, zone: str, t: float, profile: str | None
) -> OfferDecision | None:
    event = ZoneEvent(ZoneEventKind(kind), ALICE_DEVICE, zone, t, t, 0.9)
    with transaction(engine.conn):
        return engine.evaluate(event, ALICE_DEVICE, profile)


def test_issue_then_cap_then_next_day(conn: sqlite3.Connection, seeded: IdentityStore) -> None:
    engine = _engine(conn, seeded)
    first = _evaluate(engine, "enter", "entrance", T0, "p-alice-3f9c")
    assert first is not None and first.issued
    assert first.sku == "978-0441478125"  # newest in-stock item; The Way of Kings is sold out
    assert first.code is not None and CODE.match(first.code)
    assert first.expires_at == T0 + RULE.validity_s
    assert (
        first.message
        == "The Left Hand of Darkness from your cart is here: pick it up now with 10 % off"
    )
    again = _evaluate(engine, "dwell", "aisle-scifi", T0 + 60, "p-alice-3f9c")
    assert again is not None and not again.issued and again.reason == Reason.CAP_DAY
    # 23:59 local is still the same store day; 00:01 the next day is a new one.
    late = datetime(2026, 11, 23, 23, 59, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    at_late = _evaluate(engine, "enter", "entrance", late, "p-alice-3f9c")
    assert at_late is not None and at_late.reason == Reason.CAP_DAY
    tomorrow = datetime(2026, 11, 24, 0, 1, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    next_day = _evaluate(engine, "enter", "entrance", tomorrow, "p-alice-3f9c")
    assert next_day is not None and next_day.issued and next_day.code != first.code


def test_replay_is_idempotent(conn: sqlite3.Connection, seeded: IdentityStore) -> None:
    engine = _engine(conn, seeded)
    first = _evaluate(engine, "enter", "entrance", T0, "p-alice-3f9c")
    assert first is not None and first.issued
    assert _evaluate(engine, "enter", "entrance", T0, "p-alice-3f9c") is None  # already decided
    assert conn.execute("SELECT count(*) FROM offers").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 1


def test_non_trigger_events_are_not_decisions(
    conn: sqlite3.Connection, seeded: IdentityStore
) -> None:
    engine = _engine(conn, seeded)
    assert _evaluate(engine, "exit", "entrance", T0, "p-alice-3f9c") is None
    assert (
        _evaluate(engine, "dwell", "aisle-fiction", T0, "p-alice-3f9c") is None
    )  # nothing stocked
    assert _evaluate(engine, "enter", "aisle-scifi", T0, "p-alice-3f9c") is None


def test_redeem_marks_open_offers_once(conn: sqlite3.Connection, seeded: IdentityStore) -> None:
    engine = _engine(conn, seeded)
    issued = _evaluate(engine, "enter", "entrance", T0, "p-alice-3f9c")
    assert issued is not None
    with transaction(conn):
        redemptions = engine.redeem("p-alice-3f9c", T0 + 100, "counter-reader")
    assert [(r.offer_id, r.code) for r in redemptions] == [(issued.offer_id, issued.code)]
    with transaction(conn):
        assert engine.redeem("p-alice-3f9c", T0 + 200, "counter-reader") == []
    next_day = _evaluate(engine, "enter", "entrance", T0 + 86400, "p-alice-3f9c")
    assert next_day is not None and next_day.reason == Reason.ALREADY_REDEEMED
    assert [row[4] for row in engine.why("p-alice-3f9c")] == [
        Reason.ISSUED,
        Reason.ALREADY_REDEEMED,
    ]


def test_expired_offers_are_not_redeemed(conn: sqlite3.Connection, seeded: IdentityStore) -> None:
    engine = _engine(conn, seeded)
    _evaluate(engine, "enter", "entrance", T0, "p-alice-3f9c")
    with transaction(conn):
        assert engine.redeem("p-alice-3f9c", T0 + RULE.validity_s + 1, "counter-reader") == []


LIMITS = LimitsSection(
    quiet_hours=["20:00", "09:00"], cooldown_s=600, max_per_day=2, max_per_hour_store=5
)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (_facts(minute_of_day=21 * 60), Reason.QUIET_HOURS),
        (_facts(minute_of_day=8 * 60 + 59), Reason.QUIET_HOURS),
        (_facts(offers_today_all=2), Reason.CAP_DAY_ALL),
        (_facts(since_last_push_s=599.0), Reason.COOLDOWN),
        (_facts(since_last_push_s=600.0), Reason.ISSUED),
        (_facts(store_offers_last_hour=5), Reason.CAP_HOUR_STORE),
        (_facts(minute_of_day=9 * 60), Reason.ISSUED),
    ],
)
def test_limits(facts: PickupFacts, reason: str) -> None:
    assert decide_pickup(RULE, facts, None, LIMITS).reason == reason


def test_a_tap_can_trigger_the_offer(tmp_path: Path, clock: PinnedClock) -> None:
    from gateway.config.sections import parse_config
    from gateway.model import Tap
    from gateway.resources import data_file
    from gateway.runtime.gateway import Gateway

    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path}'\n[sinks]\nstdout = false\n"
        "[offers.limits]\nquiet_hours = []\n"
        "[nfc.touchpoints.scifi-shelf]\nzone = 'aisle-scifi'\noffer_on_tap = true\n"
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    events = gateway.process([Tap(T0, "scifi-shelf", bytes.fromhex("04a2246a8b5c80"))])
    [decision] = [e for e in events if isinstance(e, OfferDecision)]
    assert decision.issued and decision.trigger == "tap:scifi-shelf"
    assert decision.profile_id == "p-alice-3f9c"  # the card's UID identifies her
    # A tap with an unknown card is a decision too, with its reason.
    events = gateway.process([Tap(T0 + 10, "scifi-shelf", bytes.fromhex("04000000000001"))])
    assert [e.reason for e in events if isinstance(e, OfferDecision)] == ["unknown"]
