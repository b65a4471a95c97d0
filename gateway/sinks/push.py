"""Local push sinks: where an issued offer is delivered on the shop floor.

The local sink writes one JSON line per push (for the in-store push service / a display to
pick up) and optionally a readable line on stdout. Webhook and MQTT sinks come with their
issues; they all take the same `Push`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from gateway.model import HoldEvent, OfferDecision, PickupTaskEvent
from gateway.store.db import private_file
from gateway.store.outbox import OutboxEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Push:
    offer_id: str
    profile_id: str
    t: float
    sku: str
    code: str
    expires_at: float
    message: str

    @classmethod
    def from_decision(cls, d: OfferDecision) -> Push:
        assert d.issued and d.offer_id and d.profile_id and d.sku and d.code and d.message
        return cls(d.offer_id, d.profile_id, d.t, d.sku, d.code, d.expires_at or d.t, d.message)

    @classmethod
    def apology(cls, h: HoldEvent) -> Push:
        """The shopper's promised copy is gone (gateway.offers.pickup): her code is withdrawn.
        Only the code's last four characters: the code no longer redeems anyway."""
        assert h.message is not None
        return cls(h.offer_id, h.profile_id, h.t, h.sku, "", h.t, h.message)


class LocalPushSink:
    def __init__(self, log_path: Path | None, stdout: bool, out: TextIO | None = None) -> None:
        self.log_path = log_path
        self.stdout = stdout
        self.out = out or sys.stdout
        self.pushed = 0
        self.log_failures = 0  # push log lines not written (a full disk)
        if log_path is not None:
            try:
                private_file(log_path)  # offer codes and profile ids: the owner's only
            except OSError as exc:
                log.warning("push log %s: %s", log_path, exc)

    def push(self, push: Push, clock: str) -> None:
        if self.log_path is not None:
            try:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(push), separators=(",", ":")) + "\n")
            except OSError as exc:  # a full disk must not stop the push itself
                self.log_failures += 1
                log.warning("push log %s not written: %s", self.log_path, exc)
        if self.stdout:
            print(
                f'{clock}  PUSH      → {push.profile_id}: "{push.message}" code {push.code}',
                file=self.out,
                flush=True,
            )
        self.pushed += 1


def push_event(push: Push, kind: str = "offer") -> OutboxEvent:
    """A push as a durable outbox row on the local `push` stream (id stable per offer and
    kind: the offer itself, or the apology for a withdrawn one)."""
    event_id = f"push-{push.offer_id}" if kind == "offer" else f"push-{kind}-{push.offer_id}"
    return OutboxEvent(event_id, "push", f"push.{kind}", 0, push.t, asdict(push))


TASKS_DISPLAY = "pickup-tasks"  # the display topic's last level for pickup tasks


class PickupDisplay:
    """Offers for the screen at the pickup counter (or the shelf), over the store's MQTT:
    `{prefix}/{store}/{gateway}/display/{zone}`, QoS 1, one message per issued offer.

    A shop screen is public: it shows the item, the discount and the *last four* characters
    of the code (so staff can match the shopper's phone), never the full code (a bearer
    token), the shopper or the device. Real-time only: an offer shown an hour late is wrong,
    so at most `MAX_PENDING` wait while the broker is away, the oldest go first.
    """

    MAX_PENDING = 100

    def __init__(self) -> None:
        self.pending: deque[tuple[str, bytes]] = deque(maxlen=self.MAX_PENDING)

    def add(self, decision: OfferDecision, zone: str) -> None:
        assert decision.code is not None
        body = {
            "offer_id": decision.offer_id,
            "zone": zone,
            "title": decision.title,
            "percent": decision.percent,
            "code_hint": "…" + decision.code[-4:],
            "expires_at": decision.expires_at,
            "issued_at": decision.t,
        }
        self.pending.append((zone or "store", json.dumps(body, ensure_ascii=False).encode()))

    def task(self, event: PickupTaskEvent) -> None:
        """A pickup task opened or acted on, for the screen at the pickup counter:
        `…/display/pickup-tasks` (gateway.offers.pickup; the same public fields)."""
        body = {
            "task_id": event.task_id,
            "action": event.action,
            "zone": event.zone,
            "title": event.title,
            "code_hint": "…" + event.code_hint,
            "language": event.language,
            "by": event.by,
            "t": event.t,
        }
        self.pending.append((TASKS_DISPLAY, json.dumps(body, ensure_ascii=False).encode()))

    def take(self) -> list[tuple[str, bytes]]:
        out = list(self.pending)
        self.pending.clear()
        return out


def prune_push_log(path: Path, known_offers: set[str]) -> int:
    """Forget the pushes of offers the state database no longer holds (retention purged
    them): the log holds offer codes and profile ids, and must not outlive the database's
    promise. Rewritten beside and renamed over, so a crash loses nothing. Returns the lines
    removed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    kept = []
    for line in lines:
        try:
            offer_id = json.loads(line).get("offer_id")
        except (ValueError, AttributeError):
            offer_id = None  # unreadable: keep it for a person to look at
        if offer_id is None or offer_id in known_offers:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    private_file(tmp)
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)
    return len(lines) - len(kept)
