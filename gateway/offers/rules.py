"""The offer rule: campaign settings, the limits across campaigns, and `decide_pickup`, the pure
decision that returns an offer or the `Reason` there is none.

The settings are the offers stage's own:

Declared with the config schema (each key documented where it is defined); `[offers]` in the
configuration and campaign documents synced from the backend both build these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from gateway.config.schema import doc
from gateway.identity.store import CartItem, Profile, StockItem


@dataclass(frozen=True, slots=True)
class VariantSection:
    percent: int = doc("Discount in percent for this variant (0: the campaign's).", default=0)
    message: str = doc(
        "Push text for this variant ({title}, {percent}); empty: the campaign's templates.",
        default="",
    )
    enabled: bool = doc(
        "Serve this variant (false: switched off, kept for the report).", default=True
    )


@dataclass(frozen=True, slots=True)
class PickupDiscountSection:
    enabled: bool = doc("Run the pickup-discount campaign.", default=True)
    campaign: str = doc("Campaign id used in events and codes.", default="pickup-discount")
    percent: int = doc("Discount in percent.", default=10)
    enter_zones: list[str] = doc(
        "Zone ids whose enter event triggers the offer (e.g. the entrance).",
        default_factory=lambda: ["entrance"],
    )
    dwell_at_item_zone: bool = doc(
        "Also trigger when the shopper dwells in the zone where the cart item is stocked.",
        default=True,
    )
    pass_zones: list[str] = doc(
        "Zone ids (e.g. the pavement in front of the window) whose enter event triggers the "
        "offer for a shopper passing by.",
        default_factory=list,
    )
    segments: list[str] = doc(
        "Audience: only shoppers in at least one of these segments (from their profile). "
        "Empty: every consenting shopper.",
        default_factory=list,
    )
    priority: int = doc(
        "When several campaigns trigger on the same event, the highest priority decides "
        "first; once one issues an offer the others are recorded as 'superseded'.",
        default=0,
    )
    validity_s: int = doc("How long an issued code stays redeemable, in seconds.", default=7200)
    max_per_day: int = doc(
        "At most this many offers of this campaign per shopper per store day.", default=1
    )
    message: str = doc(
        "Push text; {title} and {percent} are filled in.",
        default="{title} from your cart is here: pick it up now with {percent} % off",
    )
    messages: dict[str, str] = doc(
        "Push text per shopper language (language tag → template); `message` otherwise.",
        default_factory=lambda: {
            "de": "{title} aus deinem Warenkorb ist hier: jetzt mit {percent} % Rabatt abholen",
            "fr": "{title} de votre panier est ici : à retirer avec {percent} % de remise",
        },
    )

    holdout_percent: float = doc(
        "Share of eligible shoppers kept as a control group (0–100): they get no push, the "
        "decision is recorded with reason 'holdout' and their outcome is still observed. A "
        "shopper's group is fixed per campaign (keyed hash of profile and campaign id). Above "
        "50 most shoppers get nothing: meant for tests and short measurement periods.",
        default=0.0,
    )
    attribution_window_days: float = doc(
        "An outcome (redemption, counter tap, pickup) counts for the decision that preceded it "
        "within this many days.",
        default=7.0,
    )
    variants: dict[str, VariantSection] = doc(
        "Variants to learn between (`[offers.campaigns.<id>.variants.<name>]`): Thompson "
        "sampling with the outcome as reward, after consent, caps, quiet hours and holdout.",
        default_factory=dict,
    )
    optimise: bool = doc(
        "Kill switch for the variants: false serves the campaign's own percent and message "
        "to everyone (outcomes are still counted).",
        default=True,
    )
    variant_floor_percent: float = doc(
        "Every enabled variant keeps at least this share of the offers, however it performs.",
        default=10.0,
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not 0 <= self.holdout_percent <= 100:
            problems["holdout_percent"] = "must be between 0 and 100"
        if not 0 < self.attribution_window_days <= 90:
            problems["attribution_window_days"] = "must be greater than 0 and at most 90"
        enabled = [v for v in self.variants.values() if v.enabled]
        if not 0 <= self.variant_floor_percent * max(1, len(enabled)) <= 100:
            problems["variant_floor_percent"] = "floor × enabled variants must be 0–100 %"
        for name, variant in self.variants.items():
            if not (variant.percent == 0 or 1 <= variant.percent <= 90):
                problems[f"variants.{name}.percent"] = "must be between 1 and 90 (0: campaign's)"
            try:
                variant.message.format(title="x", percent=1)
            except (KeyError, IndexError, ValueError):
                problems[f"variants.{name}.message"] = (
                    "only {title} and {percent} may be used as placeholders"
                )
        if not 1 <= self.percent <= 90:
            problems["percent"] = "must be between 1 and 90"
        if self.validity_s <= 0:
            problems["validity_s"] = "must be greater than 0"
        if self.max_per_day < 1:
            problems["max_per_day"] = "must be at least 1 (disable the campaign instead)"
        for key, template in [("message", self.message)] + [
            (f"messages.{lang}", t) for lang, t in self.messages.items()
        ]:
            try:
                template.format(title="x", percent=1)
            except (KeyError, IndexError, ValueError):
                problems[key] = "only {title} and {percent} may be used as placeholders"
        return problems

    def with_id(self, campaign: str) -> PickupDiscountSection:
        return dataclasses.replace(self, campaign=campaign)

    def message_for(self, language: str) -> str:
        """The template for a shopper's language: exact tag, then its primary language."""
        return (
            self.messages.get(language) or self.messages.get(language.split("-")[0]) or self.message
        )


@dataclass(frozen=True, slots=True)
class LimitsSection:
    quiet_hours: list[str] = doc(
        "Store-local [start, end] times ('HH:MM') with no pushes at all; may wrap midnight. "
        "Empty list: none.",
        default_factory=lambda: ["20:00", "09:00"],
    )
    cooldown_s: float = doc("No push to a shopper this long after any push.", default=1800.0)
    max_per_day: int = doc(
        "At most this many offers per shopper per store day, all campaigns together.", default=2
    )
    max_per_hour_store: int = doc(
        "At most this many offers per hour in the whole store (a flood stops here).", default=120
    )

    def validate(self) -> dict[str, str]:
        clocks_ok = len(self.quiet_hours) == 2 and all(_is_clock(t) for t in self.quiet_hours)
        if self.quiet_hours and not clocks_ok:
            return {"quiet_hours": "give ['HH:MM', 'HH:MM'] (start, end) or []"}
        if self.cooldown_s < 0:
            return {"cooldown_s": "must not be negative"}
        if self.max_per_day < 1:
            return {"max_per_day": "must be at least 1"}
        if self.max_per_hour_store < 1:
            return {"max_per_hour_store": "must be at least 1"}
        return {}


def _is_clock(text: str) -> bool:
    parts = text.split(":")
    return (
        len(parts) == 2
        and all(p.isdigit() and len(p) == 2 for p in parts)
        and int(parts[0]) < 24
        and int(parts[1]) < 60
    )


class Reason(StrEnum):
    """Why an offer was made or not: stable strings, part of the uplink contract."""

    ISSUED = "cart_item_in_stock"
    UNKNOWN = "unknown"
    OPTED_OUT = "opted_out"
    NO_CONSENT = "no_consent"
    NO_SAVED_CART = "no_saved_cart"
    OUT_OF_STOCK = "out_of_stock"
    NOT_ITEM_ZONE = "not_item_zone"
    ALREADY_REDEEMED = "already_redeemed"
    ALREADY_OFFERED = "already_offered_today"
    CAP_DAY = "cap_day"
    CAP_DAY_ALL = "cap_day_all_campaigns"
    QUIET_HOURS = "quiet_hours"
    COOLDOWN = "cooldown"
    CAP_HOUR_STORE = "cap_hour_store"
    NOT_IN_SEGMENT = "not_in_segment"
    MUTED = "muted_by_shopper"
    ALREADY_DECLINED = "already_declined"
    CAP_DAY_SHOPPER = "cap_day_shopper"
    SUPERSEDED = "superseded"  # a higher-priority campaign made the offer for this trigger
    HELD_FOR_OTHER = "held_for_other"  # on the shelf, but every unit is promised to others
    HOLDOUT = "holdout"  # eligible, but in the campaign's control group: no push, observed


@dataclass(frozen=True, slots=True)
class PickupFacts:
    profile: Profile | None
    cart: list[CartItem]
    in_stock: list[tuple[CartItem, StockItem]]  # cart items with quantity > 0 here
    redeemed_skus: frozenset[str]
    offers_today: int  # of this campaign, to this profile, this store day
    offers_today_all: int = 0  # all campaigns, to this profile, this store day
    since_last_push_s: float | None = None  # None: never pushed to
    store_offers_last_hour: int = 0
    minute_of_day: int = 12 * 60  # store-local
    offered_today_skus: frozenset[str] = frozenset()  # items already offered this store day
    # cart items on the shelf with every unit held for other shoppers (gateway.offers.holds)
    held_for_others: tuple[tuple[CartItem, StockItem], ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Reason
    item: tuple[CartItem, StockItem] | None = None

    @property
    def issued(self) -> bool:
        return self.item is not None


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def in_quiet_hours(quiet: list[str], minute_of_day: int) -> bool:
    if not quiet:
        return False
    start, end = _minutes(quiet[0]), _minutes(quiet[1])
    if start <= end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end  # wraps midnight


def decide_pickup(
    rule: PickupDiscountSection,
    facts: PickupFacts,
    dwell_zone: str | None,
    limits: LimitsSection | None = None,
) -> Verdict:
    """The flagship rule. `dwell_zone` is set for a dwell trigger (the item must be there).

    Relevance first (who, what, where), then the limits that keep it from becoming spam."""
    if facts.profile is None:
        return Verdict(Reason.UNKNOWN)
    if facts.profile.opted_out:
        return Verdict(Reason.OPTED_OUT)
    if not facts.profile.consent_offers:
        return Verdict(Reason.NO_CONSENT)
    if rule.campaign in facts.profile.muted_campaigns:
        return Verdict(Reason.MUTED)
    if rule.segments and not facts.profile.segments.intersection(rule.segments):
        return Verdict(Reason.NOT_IN_SEGMENT)
    if not facts.cart:
        return Verdict(Reason.NO_SAVED_CART)
    if not facts.in_stock:
        return Verdict(Reason.HELD_FOR_OTHER if facts.held_for_others else Reason.OUT_OF_STOCK)
    candidates = facts.in_stock
    if dwell_zone is not None:
        candidates = [c for c in candidates if c[1].zone_id == dwell_zone]
        if not candidates:
            held_here = any(s.zone_id == dwell_zone for _, s in facts.held_for_others)
            return Verdict(Reason.HELD_FOR_OTHER if held_here else Reason.NOT_ITEM_ZONE)
    candidates = [c for c in candidates if c[0].sku not in facts.redeemed_skus]
    if not candidates:
        return Verdict(Reason.ALREADY_REDEEMED)
    candidates = [c for c in candidates if c[0].sku not in facts.profile.declined_skus]
    if not candidates:
        return Verdict(Reason.ALREADY_DECLINED)
    if limits is not None and in_quiet_hours(limits.quiet_hours, facts.minute_of_day):
        return Verdict(Reason.QUIET_HOURS)
    if facts.offers_today >= rule.max_per_day:
        return Verdict(Reason.CAP_DAY)
    if limits is not None and facts.offers_today_all >= limits.max_per_day:
        return Verdict(Reason.CAP_DAY_ALL)
    own_cap = facts.profile.max_offers_per_day
    if own_cap is not None and facts.offers_today_all >= own_cap:
        return Verdict(Reason.CAP_DAY_SHOPPER)
    if limits is not None:
        if facts.since_last_push_s is not None and facts.since_last_push_s < limits.cooldown_s:
            return Verdict(Reason.COOLDOWN)
        if facts.store_offers_last_hour >= limits.max_per_hour_store:
            return Verdict(Reason.CAP_HOUR_STORE)
    # One offer per (shopper, item, day): never the same item twice, whatever the caps allow.
    candidates = [c for c in candidates if c[0].sku not in facts.offered_today_skus]
    if not candidates:
        return Verdict(Reason.ALREADY_OFFERED)
    return Verdict(Reason.ISSUED, candidates[0])  # cart is ordered newest first
