"""Pipeline events → CloudEvents 1.0 envelopes for the outbox (structured JSON mode).

`id` is derived from the event's content, so the same event produced twice (a replay, a
restart mid-batch) has the same id and consumers dedupe on `source` + `id`. Nothing here
carries a raw MAC address or NFC UID: devices are pseudonyms, shoppers are profile ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from gateway.config.sections import Config
from gateway.identity.store import pseudonymise
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
from gateway.store.outbox import OutboxEvent

TYPE_PREFIX = "com.storegate."
# Lower is more important: what the shop is paid for goes first when the link is thin.
PRIORITY = {
    "redemption": 0,
    "offer": 1,
    "hold": 1,  # the backend's stock view and the tills count on them
    "task": 2,
    "nfc": 2,
    "zone": 3,
    "beacon": 4,
    "gateway": 4,
}


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


class EnvelopeFactory:
    def __init__(self, store: str, gateway: str, pseudonym: Callable[[str], str]) -> None:
        self.source = f"/stores/{store}/gateways/{gateway}"
        self.pseudonym = pseudonym

    @classmethod
    def for_config(cls, config: Config) -> EnvelopeFactory:
        """This gateway's envelopes: its source and its keyed pseudonyms. The daemon and
        `gateway offers redeem` use the same, so an event's id does not depend on who queued
        it."""
        key = bytes.fromhex(config.gateway.pseudonym_key)
        return cls(config.gateway.store, config.gateway.id, partial(pseudonymise, key))

    def _envelope(
        self,
        stream: str,
        kind: str,
        t: float,
        subject: str,
        data: dict[str, Any],
        *id_parts: object,
    ) -> OutboxEvent:
        event_type = f"{TYPE_PREFIX}{stream}.{kind}"
        event_id = _event_id(self.source, event_type, *id_parts)
        body = {
            "specversion": "1.0",
            "id": event_id,
            "source": self.source,
            "type": event_type,
            "time": rfc3339(t),
            "subject": subject,
            "datacontenttype": "application/json",
            "data": data,
        }
        return OutboxEvent(event_id, stream, f"{stream}.{kind}", PRIORITY[stream], t, body)

    def envelope(self, event: PipelineEvent) -> OutboxEvent | None:
        """The uplink event for a pipeline event, or None for local-only events."""
        if isinstance(event, ZoneEvent):
            device = self.pseudonym(event.device)
            return self._envelope(
                "zone",
                event.kind,
                event.t,
                device,
                {
                    "device": device,
                    "zone": event.zone,
                    "entered_at": rfc3339(event.entered_at),
                    "confidence": event.confidence,
                },
                device,
                event.zone,
                event.kind,
                event.entered_at,
            )
        if isinstance(event, OfferDecision):
            device = self.pseudonym(event.device)
            data: dict[str, Any] = {
                "decision_id": event.decision_id,
                "campaign": event.campaign,
                "trigger": event.trigger,
                "profile_id": event.profile_id,
                "device": device,
                "reason": event.reason,
            }
            if event.issued:
                data |= {
                    "offer_id": event.offer_id,
                    "sku": event.sku,
                    "code": event.code,
                    "percent": event.percent,
                    "expires_at": rfc3339(event.expires_at or event.t),
                }
                if event.variant:
                    data["variant"] = event.variant
            kind = "issued" if event.issued else "suppressed"
            subject = event.profile_id or device
            return self._envelope("offer", kind, event.t, subject, data, event.decision_id)
        if isinstance(event, Redemption):
            return self._envelope(
                "redemption",
                "redeemed",
                event.t,
                event.profile_id,
                {
                    "offer_id": event.offer_id,
                    "profile_id": event.profile_id,
                    "sku": event.sku,
                    "code": event.code,
                    "reader": event.reader,
                },
                event.offer_id,
            )
        if isinstance(event, HoldEvent):
            return self._envelope(
                "hold",
                event.kind,
                event.t,
                event.sku,
                {
                    "hold_id": event.hold_id,
                    "offer_id": event.offer_id,
                    "profile_id": event.profile_id,
                    "sku": event.sku,
                    "reason": event.reason,
                    "expires_at": rfc3339(event.expires_at),
                    "quantity": event.quantity,
                    "held": event.held,
                    "available": max(event.quantity - event.held, 0),
                },
                event.hold_id,
                event.kind,
            )
        if isinstance(event, PickupTaskEvent):
            return self._envelope(
                "task",
                event.action,
                event.t,
                event.task_id,
                {
                    "task_id": event.task_id,
                    "sku": event.sku,
                    "title": event.title,
                    "zone": event.zone,
                    "code_hint": event.code_hint,
                    "language": event.language,
                    "by": event.by,
                },
                event.task_id,
                event.action,
            )
        if isinstance(event, TapEvent):
            return self._envelope(
                "nfc",
                "tap",
                event.t,
                event.device,
                {
                    "reader": event.reader,
                    "zone": event.zone,
                    "device": event.device,
                    "profile_id": event.profile_id,
                    "token_verified": event.token_verified,
                },
                event.device,
                event.reader,
                event.t,
            )
        if isinstance(event, BeaconHealth):
            return self._envelope(
                "beacon",
                "health",
                event.t,
                event.beacon,
                {
                    "beacon": event.beacon,
                    "status": event.status,
                    "last_seen": rfc3339(event.last_seen) if event.last_seen else None,
                    "interval_s": None if event.interval_s is None else round(event.interval_s, 3),
                    "battery_mv": event.battery_mv,
                    "battery_pct": event.battery_pct,
                    "temperature": event.temperature,
                },
                event.beacon,
                event.status,
                event.t,
            )
        if isinstance(event, AdapterHealth):
            return self._envelope(
                "gateway",
                "adapter",
                event.t,
                event.adapter,
                {
                    "adapter": event.adapter,
                    "state": event.state,
                    "reason": event.reason,
                    "restarts": event.restarts,
                },
                event.adapter,
                event.state,
                event.t,
            )
        if isinstance(event, GatewayNotice):
            return self._envelope(
                "gateway",
                event.kind,
                event.t,
                event.subject,
                dict(event.data),
                event.kind,
                event.subject,
                event.t,
                sorted(event.data.items()).__repr__(),
            )
        if isinstance(event, IdentityMatch):
            return None  # stays on the box: who-is-which-device is not uplinked
        raise TypeError(f"no envelope for {type(event).__name__}")
