"""The engine's experiment hook: holdout, variant, exposure and outcomes for one decision.

`experiment` runs after the rule (`decide_pickup`) has decided; it never turns a "no" into a
"yes". An eligible shopper in the campaign's holdout gets reason `holdout` instead of the
offer; an exposed one gets the variant the bandit picks. `Trial.record` then opens the
exposure the outcomes are attributed to (`gateway.offers.attribution`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.model import Redemption
from gateway.offers import attribution
from gateway.offers.bandit import BASE, pick_variant
from gateway.offers.holdout import in_holdout
from gateway.offers.rules import PickupDiscountSection, Reason, VariantSection, Verdict


@dataclass(frozen=True, slots=True)
class Trial:
    verdict: Verdict
    rule: PickupDiscountSection
    decision_id: str
    profile_id: str | None
    group: str = ""  # "" (not eligible), attribution.EXPOSED or attribution.HOLDOUT
    sku: str = ""
    variant: str = BASE
    settings: VariantSection | None = None

    @property
    def percent(self) -> int:
        return (
            self.settings.percent if self.settings and self.settings.percent else self.rule.percent
        )

    def template(self, language: str) -> str:
        if self.settings is not None and self.settings.message:
            return self.settings.message
        return self.rule.message_for(language)

    def record(self, conn: sqlite3.Connection, t: float, store_day: str) -> None:
        if self.group and self.profile_id is not None:
            attribution.open_exposure(
                conn,
                self.decision_id,
                self.rule.campaign,
                self.profile_id,
                self.group,
                self.variant,
                self.sku,
                t,
                self.rule.attribution_window_days,
                store_day,
            )


def experiment(
    conn: sqlite3.Connection,
    key: bytes,
    rule: PickupDiscountSection,
    verdict: Verdict,
    profile_id: str | None,
    decision_id: str,
) -> Trial:
    if verdict.item is None or profile_id is None:
        return Trial(verdict, rule, decision_id, profile_id)
    sku = verdict.item[0].sku
    if in_holdout(key, rule.campaign, profile_id, rule.holdout_percent):
        return Trial(
            Verdict(Reason.HOLDOUT), rule, decision_id, profile_id, attribution.HOLDOUT, sku
        )
    variant, settings = BASE, None
    if rule.variants and rule.optimise:
        variant, settings = pick_variant(rule, attribution.arms(conn, rule.campaign), decision_id)
    return Trial(
        verdict, rule, decision_id, profile_id, attribution.EXPOSED, sku, variant, settings
    )


def redeemed_outcomes(
    conn: sqlite3.Connection,
    redemptions: Sequence[Redemption],
    profile_id: str,
    t: float,
    where: str,
) -> None:
    """Outcomes of a verified tap or a typed code at the counter: each redemption, or (no
    offer to redeem, as for a held-out shopper) the visit to the counter itself."""
    for r in redemptions:
        row = conn.execute("SELECT campaign FROM offers WHERE offer_id = ?", (r.offer_id,))
        campaign = row.fetchone()
        attribution.record_outcome(
            conn,
            "redemption",
            r.offer_id,
            profile_id,
            t,
            r.sku,
            str(campaign[0]) if campaign else "",
        )
    if not redemptions:
        attribution.record_outcome(
            conn, "counter_tap", f"{profile_id}|{t!r}|{where}", profile_id, t
        )
