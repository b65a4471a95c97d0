"""Events in words for shop staff: each event the console lists, as one sentence in the
store's time.

The console's event list shows the CloudEvents the gateway sends upstream (pseudonymous by
construction), but staff read sentences, not JSON:

    10:42 · Shopper dev-…3f2a entered Fiction
    10:43 · Offer to shopper p-alice-3f9c on entering Entrance: 10 % off “The Left Hand of
            Darkness”, code …6SEV, valid until 12:43
    10:45 · Tap at reader counter-reader (Pickup counter): shopper p-alice-3f9c, card verified

Times are the store's (`gateway.timezone`), whatever zone the server or the browser is in;
the full date, time and zone abbreviation go with each line (the page shows it on hover),
so the hour that repeats when summer time ends is never ambiguous. Zone ids become the map's
names, item codes (SKUs) the item's title, discount codes their last four characters, device
pseudonyms `dev-…` and their last four. Any field may be missing or of the wrong type (an
event from a newer gateway, a hand-made one): the sentence says less, never fails, and never
falls back to showing the raw document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

TYPE_PREFIX = "com.storegate."
TAIL = 4  # characters of a code or pseudonym staff read back
MAX_FREE_TEXT = 160  # a reason's detail, cut: a sentence, not a report

# Offer reason codes (gateway.offers.rules.Reason) as staff would say them.
REASONS = {
    "cart_item_in_stock": "an item from the cart is in stock",
    "unknown": "not a known shopper",
    "opted_out": "the shopper opted out",
    "no_consent": "no consent to offers",
    "no_saved_cart": "no saved cart",
    "out_of_stock": "nothing from the cart is in stock",
    "not_item_zone": "not where the item is",
    "already_redeemed": "already redeemed",
    "already_offered_today": "already offered today",
    "cap_day": "already had today's offer of this campaign",
    "cap_day_all_campaigns": "already had today's offers",
    "quiet_hours": "quiet hours",
    "cooldown": "too soon after the last offer",
    "cap_hour_store": "the store's hourly limit is reached",
    "not_in_segment": "not in this campaign's audience",
    "muted_by_shopper": "the shopper muted offers",
    "already_declined": "the shopper declined it before",
    "cap_day_shopper": "the shopper's daily limit is reached",
    "superseded": "another campaign made the offer",
}
ADAPTER_STATES = {
    "starting": ("is starting", ""),
    "scanning": ("is listening", ""),
    "reading": ("is waiting for taps", ""),
    "restarting": ("is restarting", "warn"),
    "power_cycled": ("was power-cycled", "warn"),
    "unavailable": ("is not available", "warn"),
}


@dataclass(frozen=True, slots=True)
class Line:
    """One event as the console lists it."""

    id: str
    type: str  # the CloudEvent type, e.g. "com.storegate.zone.enter"
    stream: str  # "zone", "offer", … (the list's filter)
    t: float | None  # Unix seconds; None: the event had no readable time
    clock: str  # "10:42", store-local
    when: str  # "2026-12-03 10:42:07 CET", store-local with the zone's abbreviation
    text: str  # the sentence
    tone: str  # "issued" | "suppressed" | "warn" | ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "stream": self.stream,
            "t": self.t,
            "clock": self.clock,
            "when": self.when,
            "text": self.text,
            "tone": self.tone,
        }


HOLD_ENDS = {
    "expired": "the offer expired",
    "redeemed": "sold",
    "withdrawn_stock": "the stock went down, offer withdrawn",
    "not_found": "staff could not find the copy, offer withdrawn",
}
TASK_ACTIONS = {
    "ready": "is ready at the counter",
    "not_found": "could not be found",
    "collected": "was collected",
    "expired": "lapsed with the offer",
    "withdrawn": "was withdrawn",
}


def short_device(pseudonym: str) -> str:
    """'dev-c933eb06aeb2bc75' → 'dev-…bc75': enough to tell shoppers apart on one screen and
    to match a dot on the plan (labelled '…bc75'); the full pseudonym stays in the data."""
    prefix, dash, rest = pseudonym.partition("-")
    if not dash:
        prefix, rest = "", pseudonym
    if len(rest) <= TAIL + 1:
        return pseudonym
    return f"{prefix}{dash}…{rest[-TAIL:]}"


def code_tail(code: str) -> str:
    """'PK-BX52-6SEV' → '…6SEV': the last four letters or digits, what staff ask for."""
    chars = [c for c in code if c.isalnum()]
    if not chars:
        return ""
    return "…" + "".join(chars[-TAIL:])


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str | int | float):
        return " ".join(str(value).split())[:MAX_FREE_TEXT]
    return ""


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _instant(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # RFC 3339 always names its offset; a time without one is not trusted
    return moment.timestamp()


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g} %"


@dataclass(slots=True)
class Wording:
    """How this store says its events: its time zone, zone names, readers, item titles."""

    tz: ZoneInfo
    zone_names: Mapping[str, str] = field(default_factory=dict)
    reader_zones: Mapping[str, str] = field(default_factory=dict)  # NFC reader → zone id
    # sku, profile id → the item's title (the shopper's cart, else the stock list), or None
    title_of: Callable[[str, str | None], str | None] = lambda _sku, _profile: None

    # --- pieces ---------------------------------------------------------------------------

    def clock(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.tz).strftime("%H:%M")

    def when(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.tz).strftime("%Y-%m-%d %H:%M:%S %Z")

    def until(self, t: float, since: float | None) -> str:
        """'12:43', or '4 Dec 09:00' when it is another store day than `since`."""
        moment = datetime.fromtimestamp(t, self.tz)
        if since is not None and moment.date() != datetime.fromtimestamp(since, self.tz).date():
            return f"{moment.day} {moment:%b %H:%M}"
        return moment.strftime("%H:%M")

    def zone(self, zone_id: str) -> str:
        return self.zone_names.get(zone_id, zone_id) if zone_id else "an unnamed zone"

    def shopper(self, data: Mapping[str, Any]) -> str:
        profile = _text(data, "profile_id")
        if profile:
            return f"shopper {profile}"
        device = _text(data, "device")
        return f"shopper {short_device(device)}" if device else "a shopper"

    def reader(self, data: Mapping[str, Any]) -> str:
        reader = _text(data, "reader")
        if not reader:
            return "an unnamed reader"
        zone = _text(data, "zone") or self.reader_zones.get(reader, "")
        return f"reader {reader} ({self.zone(zone)})" if zone else f"reader {reader}"

    def item(self, data: Mapping[str, Any]) -> str:
        sku = _text(data, "sku")
        if not sku:
            return "an item"
        title = self.title_of(sku, _text(data, "profile_id") or None)
        return f"“{title}”" if title else f"item {sku}"

    def trigger(self, trigger: str) -> str:
        kind, _colon, where = trigger.partition(":")
        if kind == "enter":
            return f"on entering {self.zone(where)}"
        if kind == "dwell":
            return f"after staying in {self.zone(where)}"
        if kind == "tap":
            return f"at a tap on {self.reader({'reader': where})}"
        return f"on {trigger}" if trigger else ""

    # --- sentences ------------------------------------------------------------------------

    def line(self, event: Mapping[str, Any]) -> Line:
        type_ = event.get("type") if isinstance(event.get("type"), str) else ""
        name = str(type_).removeprefix(TYPE_PREFIX)
        stream, _dot, kind = name.partition(".")
        raw = event.get("data")
        data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        t = _instant(event.get("time"))
        clock, when = "--:--", "time unknown"
        if t is not None:
            try:
                clock, when = self.clock(t), self.when(t)
            except (ValueError, OverflowError, OSError):  # a year the store's zone cannot show
                t = None
        try:
            text, tone = self._sentence(stream, kind, data, t, event)
        except (ValueError, OverflowError, OSError):  # a time out of range, and the like
            text, tone = f"{stream or 'unknown'} event ({kind or 'no type'})", ""
        return Line(
            id=_text(event, "id"),
            type=str(type_),
            stream=stream,
            t=t,
            clock=clock,
            when=when,
            text=text[:1].upper() + text[1:],
            tone=tone,
        )

    def _sentence(
        self,
        stream: str,
        kind: str,
        data: Mapping[str, Any],
        t: float | None,
        event: Mapping[str, Any],
    ) -> tuple[str, str]:
        if stream == "zone":
            return self._zone(kind, data), ""
        if stream == "offer":
            return self._offer(kind, data, t)
        if stream == "redemption":
            code = code_tail(_text(data, "code"))
            return (
                f"{self.shopper(data)} redeemed code {code or '(none)'} for {self.item(data)} "
                f"at {self.reader(data)}",
                "issued",
            )
        if stream == "nfc":
            return self._tap(data), ""
        if stream == "beacon":
            return self._beacon(data)
        if stream == "gateway":
            return self._gateway(kind, data, event)
        if stream == "hold":
            return self._hold(kind, data), ""
        if stream == "task":
            return self._task(kind, data), ""
        subject = _text(event, "subject")
        about = f" about {short_device(subject)}" if subject else ""
        return f"{stream or 'unknown'} event ({kind or 'no type'}){about}", ""

    def _hold(self, kind: str, data: Mapping[str, Any]) -> str:
        item, who = self.item(data), self.shopper(data)
        stock = _number(data, "available")
        left = "" if stock is None else f" ({stock:.0f} left for others)"
        if kind == "placed":
            return f"{item} set aside for {who}{left}"
        why = HOLD_ENDS.get(_text(data, "reason"), _text(data, "reason") or "ended")
        return f"{item} no longer set aside for {who}: {why}{left}"

    def _task(self, kind: str, data: Mapping[str, Any]) -> str:
        title = _text(data, "title")
        item = f"“{title}”" if title else self.item(data)
        code = _text(data, "code_hint")
        pickup = f"pickup of {item}" + (f" (code …{code})" if code else "")
        by = _text(data, "by")
        staff = f" (by {by})" if by and by != "gateway" else ""
        if kind == "opened":
            return f"New {pickup}: fetch it from {self.zone(_text(data, 'zone'))}"
        done = TASK_ACTIONS.get(kind, kind or "updated")
        return f"{pickup[:1].upper()}{pickup[1:]} {done}{staff}"

    def _zone(self, kind: str, data: Mapping[str, Any]) -> str:
        who = self.shopper({"device": data.get("device")})
        zone = self.zone(_text(data, "zone"))
        if kind == "enter":
            return f"{who} entered {zone}"
        if kind == "exit":
            return f"{who} left {zone}"
        if kind == "dwell":
            since = _instant(data.get("entered_at"))
            return f"{who} has stayed in {zone}" + (f" since {self.clock(since)}" if since else "")
        return f"{who}: {kind or 'event'} in {zone}"

    def _offer(self, kind: str, data: Mapping[str, Any], t: float | None) -> tuple[str, str]:
        who = self.shopper(data)
        trigger = self.trigger(_text(data, "trigger"))
        head = f"{who} {trigger}".rstrip()
        if kind == "issued":
            percent = _percent(_number(data, "percent"))
            what = f"{percent} off {self.item(data)}" if percent else self.item(data)
            parts = [what]
            code = code_tail(_text(data, "code"))
            if code:
                parts.append(f"code {code}")
            expires = _instant(data.get("expires_at"))
            if expires is not None:
                parts.append(f"valid until {self.until(expires, t)}")
            return f"Offer to {head}: " + ", ".join(parts), "issued"
        reason = _text(data, "reason")
        words = REASONS.get(reason, reason.replace("_", " ") or "no reason given")
        if kind == "suppressed":
            return f"No offer to {head}: {words}", "suppressed"
        return f"Offer {kind.replace('_', ' ') or 'event'} for {head}: {words}", ""

    def _tap(self, data: Mapping[str, Any]) -> str:
        where = self.reader(data)
        if _text(data, "profile_id"):
            card = "card verified" if data.get("token_verified") is True else "card not verified"
            return f"Tap at {where}: {self.shopper(data)}, {card}"
        device = _text(data, "device")
        return f"Tap at {where}: unknown card" + (f" {short_device(device)}" if device else "")

    def _beacon(self, data: Mapping[str, Any]) -> tuple[str, str]:
        beacon = f"beacon {_text(data, 'beacon') or '(unnamed)'}"
        status = _text(data, "status")
        if status == "ok":
            return f"{beacon} is working", ""
        if status == "missing":
            seen = _instant(data.get("last_seen"))
            heard = f"last heard at {self.clock(seen)}" if seen is not None else "never heard"
            return f"{beacon} is missing: {heard}", "warn"
        if status == "low_battery":
            pct, mv = _number(data, "battery_pct"), _number(data, "battery_mv")
            figures = [f"{pct:.0f} %" if pct is not None else "", f"{mv:.0f} mV" if mv else ""]
            shown = ", ".join(f for f in figures if f)
            return f"{beacon} needs a new battery" + (f" ({shown})" if shown else ""), "warn"
        if status == "slow":
            every = _number(data, "interval_s")
            heard = f" (heard every {every:.1f} s)" if every is not None else ""
            return f"{beacon} is heard less often than it should be{heard}", "warn"
        return f"{beacon}: {status.replace('_', ' ') or 'status unknown'}", ""

    def _gateway(
        self, kind: str, data: Mapping[str, Any], event: Mapping[str, Any]
    ) -> tuple[str, str]:
        subject = _text(event, "subject")
        if kind == "adapter":
            state = _text(data, "state")
            words, tone = ADAPTER_STATES.get(state, (state.replace("_", " ") or "changed", ""))
            reason = _text(data, "reason")
            restarts = _number(data, "restarts")
            extra = [reason] if reason else []
            if restarts:
                extra.append(f"{restarts:.0f} restarts so far")
            tail = f" ({'; '.join(extra)})" if extra else ""
            radio = _text(data, "adapter") or subject or "(unnamed)"
            return f"Radio {radio} {words}{tail}", tone
        if kind == "downlink_applied":
            version = _text(data, "version")
            return f"Update from head office applied: {subject or 'data'}" + (
                f", version {version}" if version else ""
            ), ""
        if kind == "downlink_rejected":
            reason = _text(data, "reason").replace("_", " ") or "no reason given"
            detail = _text(data, "detail")
            return f"Update from head office refused: {subject or 'data'}, {reason}" + (
                f" ({detail})" if detail else ""
            ), "warn"
        if kind == "command":
            if data.get("ok") is True:
                return f"Command from head office done: {subject}", ""
            reason = _text(data, "reason").replace("_", " ") or "no reason given"
            return f"Command from head office refused: {subject}, {reason}", "warn"
        if kind == "outbox_dropped":
            counts = [f"{str(k)[:32]} {_text(data, k)}" for k in sorted(data) if _text(data, k)]
            shown = ", ".join(counts) or "some"
            return f"Unsent events dropped to make room: {shown}", "warn"
        return f"Gateway {kind.replace('_', ' ') or 'event'}" + (
            f" about {short_device(subject)}" if subject else ""
        ), ""
