"""Webhook sink: delivers pushes to the in-store push service over HTTP, durably.

Each push sits in the outbox (stream `push`) until the service answers 2xx. Requests carry
`Idempotency-Key` (stable per offer, so a retry after a lost answer is not a second push)
and `X-Signature: sha256=<hex HMAC-SHA256 of the body>`. Timeouts, connection errors, 5xx
and 429 are retried with exponential backoff and jitter (429's Retry-After is honoured);
other 4xx answers mean the request itself is wrong and go straight to the dead letters, as
does anything still failing after `max_attempts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from dataclasses import dataclass, field

import httpx

from gateway.clock import Clock
from gateway.config.edges import WebhookSection
from gateway.store.outbox import Outbox, QueuedEvent

log = logging.getLogger(__name__)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class WebhookStats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    last_error: str = ""


@dataclass(slots=True)
class WebhookSender:
    settings: WebhookSection
    outbox: Outbox
    clock: Clock  # wall: when a push is due, retried, given up
    stats: WebhookStats = field(default_factory=WebhookStats)
    poll_s: float = 0.2

    def _backoff(self, attempts: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.settings.backoff_max_s, retry_after)
        base = min(self.settings.backoff_max_s, 0.5 * 2.0 ** min(attempts, 12))
        return base * random.uniform(0.5, 1.0)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
            while True:
                sent = await self.deliver_due(client)
                if not sent:
                    await asyncio.sleep(self.poll_s)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        due = self.outbox.due("push", self.clock.wall())
        for event, attempts in due:
            await self._deliver(client, event, attempts)
        return len(due)

    async def _deliver(self, client: httpx.AsyncClient, event: QueuedEvent, attempts: int) -> None:
        body = event.payload
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": event.event_id,
            "X-Signature": signature(self.settings.secret, body),
        }
        retry_after: float | None = None
        try:
            response = await client.post(self.settings.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            error, permanent = f"{type(exc).__name__}: {exc}", False
        else:
            if 200 <= response.status_code < 300:
                self.outbox.acknowledge([event], self.clock.wall())
                self.stats.delivered += 1
                return
            error = f"HTTP {response.status_code}"
            permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
            if response.status_code == 429:
                retry_after = _seconds(response.headers.get("Retry-After"))
        self.stats.last_error = error
        tries = attempts + 1
        if permanent or tries >= self.settings.max_attempts:
            self.outbox.dead_letter(event, tries, error, self.clock.wall())
            self.stats.dead += 1
            log.warning("push %s dead-lettered after %d tries: %s", event.event_id, tries, error)
            return
        self.outbox.retry_later(event, self.clock.wall() + self._backoff(tries, retry_after))
        self.stats.retried += 1


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
