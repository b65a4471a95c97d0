"""Campaign rules and the limits across campaigns: the offers stage's own settings.

Declared with the config schema (each key documented where it is defined); `[offers]` in the
configuration and campaign documents synced from the backend both build these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gateway.config.schema import doc


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

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
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
