"""Shopper trust, as properties over random shoppers, carts, stock, clocks and walks."""

from __future__ import annotations

import itertools
import sqlite3
from collections import Counter, defaultdict
from datetime import datetime
from typing import TypedDict
from zoneinfo import ZoneInfo

from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.identity.store import IdentityStore
from gateway.model import HoldEvent, OfferDecision, ZoneEvent, ZoneEventKind
from gateway.offers import holds, pickup
from gateway.offers.engine import OfferEngine
from gateway.offers.rules import LimitsSection, PickupDiscountSection, Reason, in_quiet_hours
from gateway.store import db

TZ = ZoneInfo("Europe/Berlin")
ZONES = ["entrance", "aisle-a", "aisle-b"]
SKUS = ["s1", "s2", "s3", "s4"]
REASONS = set(Reason)
T0 = datetime(2026, 11, 23, 9, 30, tzinfo=TZ).timestamp()


class Shopper(TypedDict):
    """One drawn shopper (profiles_st), before it becomes a profile in the import format."""

    consent: bool
    opted_out: bool
    cart: list[str]
    segments: list[str]
    declined: list[str]


profiles_st = st.lists(
    st.fixed_dictionaries(
        {
            # Mostly shoppers who could get an offer, so the limits are actually exercised.
            "consent": st.sampled_from([True, True, True, False]),
            "opted_out": st.sampled_from([False, False, False, True]),
            "cart": st.lists(st.sampled_from(SKUS), unique=True, max_size=3),
            "segments": st.sampled_from([[], [], ["vip"], ["students"]]),
            "declined": st.lists(st.sampled_from(SKUS), unique=True, max_size=1),
        }
    ),
    min_size=1,
    max_size=5,
)
stock_st = st.fixed_dictionaries(
    {sku: st.tuples(st.sampled_from([0, 1, 2, 5]), st.sampled_from(ZONES[1:])) for sku in SKUS}
)
ENTER: tuple[ZoneEventKind, str] = (ZoneEventKind.ENTER, "entrance")
TRIGGERS: list[tuple[ZoneEventKind, str]] = [ENTER] * 4 + [
    (ZoneEventKind.DWELL, "aisle-a"),
    (ZoneEventKind.DWELL, "aisle-b"),
    (ZoneEventKind.EXIT, "entrance"),
    (ZoneEventKind.ENTER, "aisle-a"),
]
walk_st = st.lists(
    st.tuples(
        st.integers(0, 50),  # which shopper (mapped onto the profiles, or an unknown device)
        st.sampled_from(TRIGGERS),
        st.one_of(st.floats(0, 120), st.floats(0, 7200)),  # seconds since the previous event
    ),
    min_size=10,
    max_size=60,
)
limits_st = st.builds(
    LimitsSection,
    quiet_hours=st.sampled_from([[], ["20:00", "09:00"], ["12:00", "13:00"]]),
    cooldown_s=st.sampled_from([0.0, 600.0, 3600.0]),
    max_per_day=st.integers(1, 3),
    max_per_hour_store=st.integers(1, 4),
)


def _engine(
    profiles: list[Shopper],
    stock: dict[str, tuple[int, str]],
    rule: PickupDiscountSection | list[PickupDiscountSection],
    limits: LimitsSection,
) -> OfferEngine:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn)
    store = IdentityStore(conn)
    store.load_seed(
        {
            "profiles": [
                {
                    "profile_id": f"p{i}",
                    "consent": {"proximity_offers": p["consent"]},
                    "opted_out": p["opted_out"],
                    "segments": p["segments"],
                    "declined_skus": p["declined"],
                    "cart": [
                        {"sku": s, "title": s, "price": 1.0, "added_at": f"2026-11-0{j + 1}"}
                        for j, s in enumerate(p["cart"])
                    ],
                }
                for i, p in enumerate(profiles)
            ],
            "stock": [
                {"sku": s, "title": s, "quantity": q, "zone_id": z} for s, (q, z) in stock.items()
            ],
        }
    )
    return OfferEngine(conn, store, rule, "Europe/Berlin", b"k" * 16, limits)


@settings(max_examples=400, deadline=None)
@given(profiles_st, stock_st, walk_st, limits_st, st.integers(1, 2))
def test_trust_properties_hold_on_random_walks(
    profiles: list[Shopper],
    stock: dict[str, tuple[int, str]],
    walk: list[tuple[int, tuple[ZoneEventKind, str], float]],
    limits: LimitsSection,
    per_campaign_day: int,
) -> None:
    rule = PickupDiscountSection(max_per_day=per_campaign_day)
    vip = PickupDiscountSection(
        campaign="vip", percent=20, segments=["vip"], priority=5, max_per_day=per_campaign_day
    )
    engine = _engine(profiles, stock, [rule, vip], limits)
    t = T0
    decisions = []
    for pick, (kind, zone), gap in walk:
        t += gap
        who = pick % (len(profiles) + 1) - 1  # -1: an unknown device
        known = who >= 0
        device = f"dev-{who}"
        zone_event = ZoneEvent(kind, device, zone, t, t - 30, 0.9)
        with db.transaction(engine.conn):
            moment = engine.evaluate_all(zone_event, device, f"p{who}" if known else None)
        assert sum(d.issued for d in moment) <= 1, "two pushes for one moment"
        decisions.extend(moment)

    issued = [d for d in decisions if d.issued]
    event(f"offers issued: {min(len(issued), 3)}{'+' if len(issued) >= 3 else ''}")
    event(f"suppressed by: {sorted({d.reason for d in decisions if not d.issued})[:1]}")
    for d in decisions:
        assert d.reason in REASONS  # every decision, issued or not, is explained
        assert d.issued == (d.reason == Reason.ISSUED)
    by_profile: dict[str, list[float]] = defaultdict(list)
    per_day: Counter[tuple[str, str]] = Counter()
    campaign_day: Counter[tuple[str, str, str]] = Counter()
    per_item_day: Counter[tuple[str, str, str]] = Counter()
    for d in issued:
        assert d.profile_id is not None and d.sku is not None
        p = profiles[int(d.profile_id[1:])]
        assert p["consent"] and not p["opted_out"], "offer to a shopper without consent"
        assert d.sku in p["cart"] and stock[d.sku][0] > 0
        assert d.sku not in p["declined"], "offer of an item the shopper declined"
        if d.campaign == "vip":
            assert "vip" in p["segments"], "segment campaign outside its audience"
        local = datetime.fromtimestamp(d.t, TZ)
        assert not in_quiet_hours(limits.quiet_hours, local.hour * 60 + local.minute)
        by_profile[d.profile_id].append(d.t)
        per_day[(d.profile_id, local.date().isoformat())] += 1
        campaign_day[(d.profile_id, d.campaign, local.date().isoformat())] += 1
        per_item_day[(d.profile_id, d.sku, local.date().isoformat())] += 1
    assert all(n <= limits.max_per_day for n in per_day.values())
    assert all(n <= per_campaign_day for n in campaign_day.values())
    assert all(n == 1 for n in per_item_day.values())
    for times in by_profile.values():
        assert all(b - a >= limits.cooldown_s for a, b in itertools.pairwise(times))
    for d in issued:
        in_hour = [o for o in issued if d.t - 3600 < o.t <= d.t]
        assert len(in_hour) <= limits.max_per_hour_store


def test_quiet_hours_wrap_midnight() -> None:
    quiet = ["20:00", "09:00"]
    assert in_quiet_hours(quiet, 22 * 60) and in_quiet_hours(quiet, 8 * 60 + 59)
    assert not in_quiet_hours(quiet, 9 * 60) and not in_quiet_hours(quiet, 19 * 60 + 59)
    assert in_quiet_hours(["12:00", "13:00"], 12 * 60 + 30)
    assert not in_quiet_hours([], 0)


# --- holds (issue 20) -----------------------------------------------------------------------

# (what, which shopper or item, trigger, seconds since the previous step, a new quantity)
Step = tuple[str, int, tuple[ZoneEventKind, str], float, int]
steps_st = st.lists(
    st.tuples(
        st.sampled_from(["trigger"] * 6 + ["redeem", "stock"]),
        st.integers(0, 50),
        st.sampled_from(TRIGGERS),
        st.one_of(st.floats(0, 60), st.floats(0, 1200)),
        st.sampled_from([0, 1, 1, 2]),
    ),
    min_size=10,
    max_size=60,
)
# Few copies and shared wishes: the last copy is often wanted by several shoppers at once.
scarce_st = st.fixed_dictionaries(
    {sku: st.tuples(st.sampled_from([1, 1, 2, 0]), st.sampled_from(ZONES[1:])) for sku in SKUS}
)
sharing_st = st.lists(
    st.fixed_dictionaries(
        {
            "consent": st.sampled_from([True, True, True, False]),
            "opted_out": st.sampled_from([False, False, False, True]),
            "cart": st.lists(st.sampled_from(SKUS[:2]), unique=True, min_size=1, max_size=2),
            "segments": st.just([]),
            "declined": st.just([]),
        }
    ),
    min_size=2,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(sharing_st, scarce_st, steps_st)
def test_holds_keep_the_promise_on_random_walks(
    profiles: list[Shopper], stock: dict[str, tuple[int, str]], steps: list[Step]
) -> None:
    rule = PickupDiscountSection(validity_s=900, max_per_day=3)
    limits = LimitsSection(quiet_hours=[], cooldown_s=0.0, max_per_day=5, max_per_hour_store=50)
    engine = _engine(profiles, stock, rule, limits)
    conn = engine.conn
    consenting = {f"p{i}" for i, p in enumerate(profiles) if p["consent"] and not p["opted_out"]}
    t = T0
    issued: list[OfferDecision] = []
    hold_events: list[HoldEvent] = []
    held_for_other = 0
    for what, pick, (kind, zone), gap, quantity in steps:
        t += gap
        who = pick % (len(profiles) + 1) - 1
        profile = f"p{who}" if who >= 0 else None
        with db.transaction(conn):
            engine.lapse_holds(t)  # as the pipeline does before anything else at `t`
            if what == "trigger":
                device = f"dev-{who}"
                for d in engine.evaluate_all(
                    ZoneEvent(kind, device, zone, t, t - 30, 0.9), device, profile
                ):
                    if d.reason == Reason.HELD_FOR_OTHER:
                        held_for_other += 1
                        assert d.profile_id in consenting, "held_for_other to a non-consenting"
                    if d.issued:
                        issued.append(d)
            elif what == "redeem" and profile is not None:
                engine.redeem(profile, t, "counter")
            elif what == "stock":
                sku = SKUS[pick % len(SKUS)]
                conn.execute("UPDATE stock SET quantity = ? WHERE sku = ?", (quantity, sku))
                engine.pending.extend(pickup.reconcile_stock(conn, t))
            events = engine.take_events()
        hold_events.extend(e for e in events if isinstance(e, HoldEvent))
        for sku in SKUS:
            on_shelf = conn.execute("SELECT quantity FROM stock WHERE sku = ?", (sku,)).fetchone()
            units = max(int(on_shelf[0]), 0) if on_shelf else 0
            assert holds.held(conn, sku, t) <= units, "more active holds than units"
            open_offers = conn.execute(
                "SELECT count(*) FROM offers WHERE sku = ? AND status = 'issued' "
                "AND expires_at >= ?",
                (sku, t),
            ).fetchone()[0]
            assert open_offers <= units, "two open offers on one unit"
    event(f"holds placed: {min(sum(h.kind == 'placed' for h in hold_events), 3)}")
    event(f"held_for_other seen: {held_for_other > 0}")
    event(f"holds released by: {sorted({h.reason for h in hold_events if h.kind == 'released'})}")
    for d in issued:  # every offer set its unit aside
        assert d.offer_id is not None
        assert conn.execute("SELECT 1 FROM holds WHERE offer_id = ?", (d.offer_id,)).fetchone()
    for h in hold_events:  # nothing about holds reaches a shopper who did not consent
        assert h.profile_id in consenting
        assert h.message is None or h.reason in ("withdrawn_stock", "not_found")
    # every hold ends: expiry at the latest, each at or before its offer's expiry
    with db.transaction(conn):
        engine.lapse_holds(t + 3 * 86400)
    assert holds.list_holds(conn, active_only=True) == []
    for row in holds.list_holds(conn):
        assert row.status in holds.RELEASE_REASONS
        assert row.ended_at is not None and row.placed_at <= row.ended_at <= row.expires_at
    # ... and an ended hold frees its unit for the next eligible shopper
    for sku in SKUS:
        assert holds.held(conn, sku, t + 3 * 86400) == 0


def test_an_expired_hold_frees_the_unit_for_the_next_shopper() -> None:
    shopper: Shopper = {
        "consent": True,
        "opted_out": False,
        "cart": ["s1"],
        "segments": [],
        "declined": [],
    }
    engine = _engine(
        [shopper, shopper],
        {s: (1, "aisle-a") for s in SKUS},
        PickupDiscountSection(),
        LimitsSection(quiet_hours=[]),
    )
    enter = [ZoneEvent(ZoneEventKind.ENTER, f"d{i}", "entrance", T0 + i, T0, 0.9) for i in (0, 1)]
    with db.transaction(engine.conn):
        first = engine.evaluate(enter[0], "d0", "p0")
        second = engine.evaluate(enter[1], "d1", "p1")
    assert first is not None and first.issued and first.expires_at is not None
    assert second is not None and second.reason == Reason.HELD_FOR_OTHER
    later = first.expires_at + 1
    with db.transaction(engine.conn):
        engine.lapse_holds(later)
        again = engine.evaluate(
            ZoneEvent(ZoneEventKind.ENTER, "d1", "entrance", later, later, 0.9), "d1", "p1"
        )
    assert again is not None and again.issued and again.sku == "s1"
