"""The offer engine: decide, explain, record, redeem.

`decide_pickup` (`gateway.offers.rules`) is the pure rule: given the facts about one shopper at
one trigger it returns an offer or the reason there is none. `OfferEngine` gathers those facts
from the state database, records every decision (issued or suppressed) and the offers, inside
the caller's transaction so that an offer and its outbox event are committed together.

Idempotency: decision and offer ids are derived from their content (campaign, profile, item,
store day, trigger, time), so replaying the same sightings re-derives the same ids and the
inserts are no-ops; the per-day cap then holds across restarts as well.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gateway.identity.store import IdentityStore, pseudonymise
from gateway.model import OfferDecision, PipelineEvent, Redemption, ZoneEvent
from gateway.offers import holds, pickup
from gateway.offers.codes import _stable_id, normalise_code, offer_code
from gateway.offers.experiment import experiment, redeemed_outcomes
from gateway.offers.insights import FloorInsights
from gateway.offers.rules import (
    LimitsSection,
    PickupDiscountSection,
    PickupFacts,
    Reason,
    Verdict,
    decide_pickup,
)
from gateway.store.db import transaction


class OfferEngine:
    """Every campaign, highest priority first. For one trigger each campaign that reacts to
    it decides in turn; once one issues an offer, the rest are recorded as superseded: a
    shopper gets at most one push per moment, and every campaign's answer is explained."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        identity: IdentityStore,
        rule: PickupDiscountSection | list[PickupDiscountSection],
        timezone: str,
        key: bytes,
        limits: LimitsSection | None = None,
    ) -> None:
        self.conn = conn
        self.identity = identity
        self.campaigns: list[PickupDiscountSection] = []
        self.set_campaigns(rule if isinstance(rule, list) else [rule])
        self.limits = limits
        self.tz = ZoneInfo(timezone)
        self.key = key
        self._stocked_zones = identity.stocked_zones()
        self.floor = FloorInsights(
            conn,
            key,
            self.tz,
            lambda: {z for c in self.campaigns if c.enabled for z in c.pass_zones},
            lambda: set(self._stocked_zones),
        )
        _pseudonymise_recorded_devices(conn, key)
        # Hold and pickup-task events of the last call, for the pipeline (`take_events`).
        self.pending: list[PipelineEvent] = []
        self._next_lapse = holds.next_expiry(conn)

    def set_campaigns(self, campaigns: list[PickupDiscountSection]) -> None:
        self.campaigns = sorted(campaigns, key=lambda c: (-c.priority, c.campaign))

    def reconfigure(self, limits: LimitsSection, timezone: str) -> None:
        self.limits = limits
        self.tz = ZoneInfo(timezone)
        self.floor.set_timezone(self.tz)

    def refresh_stock(self) -> None:
        """Re-read where stock lies (after seeding or a downlink update)."""
        self._stocked_zones = self.identity.stocked_zones()

    @property
    def rule(self) -> PickupDiscountSection:
        """The campaign that decides first."""
        return self.campaigns[0]

    def store_day(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.tz).date().isoformat()

    def trigger_for(self, rule: PickupDiscountSection, event: ZoneEvent) -> str | None:
        """Which zone events a campaign reacts to."""
        if not rule.enabled:
            return None
        if event.kind == "enter" and event.zone in rule.enter_zones:
            return f"enter:{event.zone}"
        if event.kind == "enter" and event.zone in rule.pass_zones:
            return f"pass:{event.zone}"
        if event.kind == "dwell" and rule.dwell_at_item_zone and event.zone in self._stocked_zones:
            return f"dwell:{event.zone}"
        return None

    def facts(self, profile_id: str | None, t: float, campaign: str = "") -> PickupFacts:
        if profile_id is None:
            return PickupFacts(None, [], [], frozenset(), 0)
        profile = self.identity.profile(profile_id)
        if profile is None:
            return PickupFacts(None, [], [], frozenset(), 0)
        cart = self.identity.cart(profile_id)
        # Only units not set aside for someone else count (gateway.offers.holds).
        in_stock, held_for_others, held_for_self = holds.cart_stock(
            self.conn, self.identity, cart, profile_id, t
        )
        redeemed = frozenset(
            str(r[0])
            for r in self.conn.execute(
                "SELECT sku FROM offers WHERE profile_id = ? AND status = 'redeemed'",
                (profile_id,),
            )
        )
        day = self.store_day(t)
        today, today_all = self.conn.execute(
            "SELECT sum(campaign = ?), count(*) FROM offers WHERE profile_id = ? AND store_day = ?",
            (campaign or self.rule.campaign, profile_id, day),
        ).fetchone()
        last_any = self.conn.execute(
            "SELECT max(issued_at) FROM offers WHERE profile_id = ? AND issued_at <= ?",
            (profile_id, t),
        ).fetchone()[0]
        offered_today = frozenset(
            str(r[0])
            for r in self.conn.execute(
                "SELECT sku FROM offers WHERE profile_id = ? AND store_day = ?", (profile_id, day)
            )
        )
        store_hour = self.conn.execute(
            "SELECT count(*) FROM offers WHERE issued_at > ? AND issued_at <= ?", (t - 3600, t)
        ).fetchone()[0]
        local = datetime.fromtimestamp(t, self.tz)
        return PickupFacts(
            profile,
            cart,
            in_stock,
            redeemed,
            int(today or 0),
            offers_today_all=int(today_all or 0),
            since_last_push_s=None if last_any is None else t - float(last_any),
            store_offers_last_hour=int(store_hour),
            minute_of_day=local.hour * 60 + local.minute,
            offered_today_skus=offered_today | held_for_self,
            held_for_others=held_for_others,
        )

    def evaluate_all(
        self, event: ZoneEvent, device: str, profile_id: str | None
    ) -> list[OfferDecision]:
        """Every campaign's decision for one zone event, in priority order (recorded).

        Empty: the event triggers no campaign, or these very decisions were already taken (a
        replay or a restart re-reading the same sightings): nothing is decided twice."""
        self.floor.zone_event(event)
        dwell_zone = event.zone if event.kind == "dwell" else None
        triggered = [
            (rule, trigger)
            for rule in self.campaigns
            if (trigger := self.trigger_for(rule, event)) is not None
        ]
        return self._decide_in_turn(triggered, event.t, device, profile_id, dwell_zone)

    def evaluate(
        self, event: ZoneEvent, device: str, profile_id: str | None
    ) -> OfferDecision | None:
        """The decision that counts for one zone event: the issued one, else the first."""
        decisions = self.evaluate_all(event, device, profile_id)
        return next((d for d in decisions if d.issued), decisions[0] if decisions else None)

    def evaluate_trigger_all(
        self, trigger: str, t: float, device: str, profile_id: str | None, dwell_zone: str | None
    ) -> list[OfferDecision]:
        """Every enabled campaign's decision for a non-zone trigger ("tap:…")."""
        triggered = [(rule, trigger) for rule in self.campaigns if rule.enabled]
        return self._decide_in_turn(triggered, t, device, profile_id, dwell_zone)

    def evaluate_trigger(
        self, trigger: str, t: float, device: str, profile_id: str | None, dwell_zone: str | None
    ) -> OfferDecision | None:
        decisions = self.evaluate_trigger_all(trigger, t, device, profile_id, dwell_zone)
        return next((d for d in decisions if d.issued), decisions[0] if decisions else None)

    def _decide_in_turn(
        self,
        triggered: list[tuple[PickupDiscountSection, str]],
        t: float,
        device: str,
        profile_id: str | None,
        dwell_zone: str | None,
    ) -> list[OfferDecision]:
        decisions: list[OfferDecision] = []
        issued = False
        for rule, trigger in triggered:
            decision = self._decide(rule, trigger, t, device, profile_id, dwell_zone, issued)
            if decision is not None:
                decisions.append(decision)
                issued = issued or decision.issued
        return decisions

    def _decide(
        self,
        rule: PickupDiscountSection,
        trigger: str,
        t: float,
        device: str,
        profile_id: str | None,
        dwell_zone: str | None,
        superseded: bool,
    ) -> OfferDecision | None:
        decision_id = _stable_id("dc", rule.campaign, device, trigger, t)
        seen = self.conn.execute(
            "SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        if seen is not None:
            return None
        if superseded:
            verdict = Verdict(Reason.SUPERSEDED)
        else:
            facts = self.facts(profile_id, t, rule.campaign)
            verdict = decide_pickup(rule, facts, dwell_zone, self.limits)
        trial = experiment(self.conn, self.key, rule, verdict, profile_id, decision_id)
        verdict = trial.verdict
        decision = OfferDecision(
            t=t,
            device=device,
            profile_id=profile_id,
            campaign=rule.campaign,
            trigger=trigger,
            issued=False,
            reason=verdict.reason,
            decision_id=decision_id,
        )
        if verdict.item is not None and profile_id is not None:
            cart_item, stock = verdict.item
            day = self.store_day(t)
            offer_id = _stable_id("of", rule.campaign, profile_id, cart_item.sku, day)
            code = offer_code(self.key, offer_id)
            expires = t + rule.validity_s
            self.conn.execute(
                "INSERT OR IGNORE INTO offers (offer_id, profile_id, campaign, sku, code, "
                "issued_at, expires_at, store_day, status) VALUES (?,?,?,?,?,?,?,?, 'issued')",
                (offer_id, profile_id, rule.campaign, cart_item.sku, code, t, expires, day),
            )
            title = cart_item.title or stock.title
            decision = dataclasses.replace(
                decision,
                issued=True,
                sku=cart_item.sku,
                title=title,
                code=code,
                expires_at=expires,
                percent=trial.percent,
                message=trial.template(self._language(profile_id)).format(
                    title=title, percent=trial.percent
                ),
                offer_id=offer_id,
                variant=trial.variant,
            )
            self._on_issued(decision, stock.zone_id)
        self.conn.execute(
            "INSERT INTO decisions (decision_id, t, device, profile_id, campaign, "
            "trigger, issued, reason, offer_id) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                decision_id,
                t,
                pseudonymise(self.key, device),  # never a raw beacon id or UID on disk
                profile_id,
                rule.campaign,
                trigger,
                int(decision.issued),
                decision.reason,
                decision.offer_id,
            ),
        )
        trial.record(self.conn, t, self.store_day(t))
        return decision

    def _on_issued(self, decision: OfferDecision, zone: str) -> None:
        """Set the offer's unit aside and open its pickup task (gateway.offers.pickup)."""
        device = pseudonymise(self.key, decision.device)
        self.pending.extend(pickup.on_issued(self.conn, decision, zone, device))
        if decision.expires_at is not None:
            self._next_lapse = min(self._next_lapse or decision.expires_at, decision.expires_at)

    def lapse_due(self, now: float) -> bool:
        """Whether `lapse_holds(now)` would end a hold."""
        return self._next_lapse is not None and now > self._next_lapse

    def lapse_holds(self, now: float) -> None:
        """End the holds whose offers expired before `now` (events wait in `pending`)."""
        if self._next_lapse is None or now <= self._next_lapse:
            return
        self.pending.extend(pickup.expire(self.conn, now))
        self._next_lapse = holds.next_expiry(self.conn)

    def take_events(self) -> list[PipelineEvent]:
        """The hold and pickup-task events since the last call, in order."""
        out, self.pending = self.pending, []
        return out

    def _language(self, profile_id: str) -> str:
        profile = self.identity.profile(profile_id)
        return profile.language if profile is not None else "en"

    def redeem(self, profile_id: str, t: float, reader: str) -> list[Redemption]:
        """Mark every open (issued, unexpired) offer of the profile redeemed."""
        rows = self.conn.execute(
            "SELECT offer_id, code, sku FROM offers WHERE profile_id = ? AND status = 'issued' "
            "AND expires_at >= ? AND issued_at <= ? ORDER BY issued_at",
            (profile_id, t, t),
        ).fetchall()
        out = []
        for offer_id, code, sku in rows:
            self.conn.execute(
                "UPDATE offers SET status = 'redeemed', redeemed_at = ? WHERE offer_id = ?",
                (t, offer_id),
            )
            out.append(Redemption(t, profile_id, offer_id, code, sku, reader))
            self.pending.extend(pickup.end_offer(self.conn, offer_id, t, holds.REDEEMED, reader))
        redeemed_outcomes(self.conn, out, profile_id, t, reader)
        return out

    def redeem_code(self, typed: str, t: float, where: str) -> tuple[Redemption | None, str]:
        redemption, outcome = redeem_code(self.conn, typed, t, where)
        if redemption is not None:  # the unit is sold: its hold and pickup task end
            ended = pickup.end_offer(self.conn, redemption.offer_id, t, holds.REDEEMED, where)
            self.pending.extend(ended)
        return redemption, outcome

    def why(self, who: str) -> list[PastDecision]:
        return why(self.conn, who, self.key)


class PastDecision(NamedTuple):
    t: float  # when the decision's moment happened (occurrence time)
    campaign: str
    trigger: str
    issued: bool
    reason: str


def _pseudonymise_recorded_devices(conn: sqlite3.Connection, key: bytes) -> None:
    """Decisions recorded before devices were kept pseudonymous named raw beacon ids and
    UIDs: rewrite them once (what is already a pseudonym starts with "dev-")."""
    raw = [
        str(r[0])
        for r in conn.execute("SELECT DISTINCT device FROM decisions WHERE device NOT LIKE 'dev-%'")
    ]
    if raw:
        with transaction(conn):
            conn.executemany(
                "UPDATE decisions SET device = ? WHERE device = ?",
                [(pseudonymise(key, d), d) for d in raw],
            )


def why(conn: sqlite3.Connection, who: str, key: bytes | None = None) -> list[PastDecision]:
    """Past decisions for a profile id or a device: its pseudonym (`dev-…`, as events and
    the console show it) or, given the pseudonym key, its raw id (`ibeacon:…`)."""
    device = pseudonymise(key, who) if key is not None and not who.startswith("dev-") else who
    rows = conn.execute(
        "SELECT t, campaign, trigger, issued, reason FROM decisions "
        "WHERE profile_id = ? OR device = ? ORDER BY t",
        (who, device),
    )
    return [PastDecision(float(r[0]), str(r[1]), str(r[2]), bool(r[3]), str(r[4])) for r in rows]


def redeem_code(
    conn: sqlite3.Connection, typed: str, t: float, where: str
) -> tuple[Redemption | None, str]:
    """A code typed at the counter: (the redemption, "redeemed") or (None, why not).
    Needs only the state database, so the counter command need not build the daemon."""
    code = normalise_code(typed)
    if code is None:
        return None, "malformed_code"
    row = conn.execute(
        "SELECT offer_id, profile_id, sku, status, expires_at, issued_at FROM offers "
        "WHERE code = ?",
        (code,),
    ).fetchone()
    if row is None:
        return None, "unknown_code"
    offer_id, profile_id, sku, status, expires_at, issued_at = row
    if status == "redeemed":
        return None, "already_redeemed"
    if status == "withdrawn":
        return None, "withdrawn"  # its copy was not there after all (gateway.offers.pickup)
    if t > float(expires_at) or t < float(issued_at):
        return None, "expired"
    conn.execute(
        "UPDATE offers SET status = 'redeemed', redeemed_at = ? WHERE offer_id = ?",
        (t, offer_id),
    )
    redemption = Redemption(t, str(profile_id), str(offer_id), code, str(sku), where)
    redeemed_outcomes(conn, [redemption], str(profile_id), t, where)
    return redemption, "redeemed"
