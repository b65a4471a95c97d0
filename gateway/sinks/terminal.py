"""Readable lines for people watching the pipeline (the demo, `gateway run -v`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO
from zoneinfo import ZoneInfo

from gateway.humantime import local, local_time
from gateway.model import (
    AdapterHealth,
    BeaconHealth,
    GatewayNotice,
    HoldEvent,
    IdentityMatch,
    OfferDecision,
    PickupTaskEvent,
    PipelineEvent,
    Redemption,
    TapEvent,
    ZoneEvent,
)

Pseudonym = Callable[[str], str]


class ConsoleReporter:
    """One line per event, stamped with the event's own time in the store's zone; the date
    is said once, and again whenever it changes."""

    def __init__(self, timezone: str, pseudonym: Pseudonym, out: TextIO | None = None) -> None:
        self.tz = ZoneInfo(timezone)
        self.pseudonym = pseudonym
        self.out = out or sys.stdout
        self._day = ""

    def clock(self, t: float) -> str:
        return local_time(t, self.tz)

    def _print(self, t: float, text: str) -> None:
        day = local(t, self.tz).strftime("%Y-%m-%d %A")
        if day != self._day:  # the date, said once and again when it changes
            self._day = day
            print(f"— {day}, {self.tz.key} —", file=self.out, flush=True)
        print(f"{self.clock(t)}  {text}", file=self.out, flush=True)

    def event(self, event: PipelineEvent) -> None:
        if isinstance(event, ZoneEvent):
            self._print(
                event.t,
                f"ZONE      {event.kind:<5} {event.zone:<16} {self.pseudonym(event.device)}"
                f"  confidence {event.confidence:.2f}",
            )
        elif isinstance(event, IdentityMatch):
            who = f"profile {event.profile_id}" if event.profile_id else "no profile (unknown)"
            self._print(event.t, f"IDENTITY  {event.via:<7} {self.pseudonym(event.device)} → {who}")
        elif isinstance(event, OfferDecision):
            who = event.profile_id or self.pseudonym(event.device)
            if event.issued:
                expires = self.clock(event.expires_at or event.t)
                self._print(
                    event.t,
                    f"OFFER     issue {who} on {event.trigger}: {event.percent} % off "
                    f"{event.title!r} ({event.sku}), code {event.code}, expires {expires}"
                    f"  reason {event.reason}",
                )
            else:
                self._print(
                    event.t, f"OFFER     none  {who} on {event.trigger}  reason {event.reason}"
                )
        elif isinstance(event, TapEvent):
            who = event.profile_id or "unknown"
            token = "verified token" if event.token_verified else "no verified token"
            self._print(event.t, f"NFC       tap   {event.reader} ({event.zone}) {who}, {token}")
        elif isinstance(event, GatewayNotice):
            self._print(event.t, f"GATEWAY   {event.kind} {event.subject} {event.data}")
        elif isinstance(event, AdapterHealth):
            why = f" ({event.reason})" if event.reason else ""
            self._print(event.t, f"ADAPTER   {event.adapter} {event.state}{why}")
        elif isinstance(event, BeaconHealth):
            extra = f", battery {event.battery_mv} mV" if event.battery_mv else ""
            self._print(event.t, f"BEACON    {event.beacon} {event.status}{extra}")
        elif isinstance(event, HoldEvent):
            left = max(event.quantity - event.held, 0)
            self._print(
                event.t,
                f"HOLD      {event.kind:<8} {event.sku} for {event.profile_id} ({event.reason}), "
                f"{left} of {event.quantity} free",
            )
        elif isinstance(event, PickupTaskEvent):
            self._print(
                event.t,
                f"PICKUP    {event.action:<9} {event.title!r} from {event.zone}, "
                f"code …{event.code_hint} ({event.language}) by {event.by}",
            )
        elif isinstance(event, Redemption):
            self._print(
                event.t,
                f"REDEEM    {event.profile_id} redeemed {event.code} ({event.sku}) "
                f"at {event.reader}",
            )

    def outbox(self, t: float, event_type: str, seq: int) -> None:
        self._print(t, f"OUTBOX    +{event_type} (#{seq})")

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)
