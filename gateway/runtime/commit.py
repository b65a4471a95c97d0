"""The unit of work: one batch → one SQLite transaction → the event sinks.

Decisions, offers and outbox events of a batch commit together; only after the commit do the
event sinks see the events (the console, the status, the uplink's wake-up, the shop floor), so
"queued in the outbox" always means "on disk". Housekeeping (outbox bounds, retention) runs
after commits, on wall-clock time.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.config.sections import Config
from gateway.humantime import local, local_datetime
from gateway.identity.store import IdentityStore
from gateway.model import (
    AdapterHealth,
    Advert,
    GatewayNotice,
    HoldEvent,
    NoticeKind,
    OfferDecision,
    PickupTaskEvent,
    PipelineEvent,
    Tap,
)
from gateway.offers.report import daily_reports
from gateway.pipeline import Pipeline
from gateway.sinks.push import LocalPushSink, PickupDisplay, Push, prune_push_log, push_event
from gateway.sinks.terminal import ConsoleReporter
from gateway.store import db
from gateway.store.outbox import (
    LOW_SPACE_RESERVE_BYTES,
    Outbox,
    OutboxEvent,
    enforce_bounds,
    free_pages_bytes,
    shed_for_room,
)
from gateway.sync.envelopes import EnvelopeFactory

log = logging.getLogger(__name__)

Item = Advert | Tap | AdapterHealth


@dataclass(slots=True)
class RunSummary:
    items: int = 0
    trace_errors: list[str] = field(default_factory=list)
    outbox_added: Counter[str] = field(default_factory=Counter)
    pushes: int = 0
    wall_s: float = 0.0
    first_t: float | None = None
    last_t: float | None = None
    dropped: int = 0  # items a radio produced while the queue was full


class Queued(NamedTuple):
    """What became of one committed event upstream."""

    seq: int | None  # its outbox sequence number; None: not queued (local only, or dropped)
    envelope: OutboxEvent | None  # its uplink envelope; None: the event stays on the box
    # True when the disk was full: nothing of the batch is on disk, the shop floor still acts
    unsaved: bool = False


# Sees every committed batch: its events and, per event, what was queued.
EventSink = Callable[[list[PipelineEvent], list[Queued]], None]


class ShopFloor:
    """The sink on the shop floor: each issued offer pushed (and shown at the pickup
    counter), each event told to the terminal reporter, in event order."""

    def __init__(
        self,
        config: Config,
        identity: IdentityStore,
        summary: RunSummary,
        quiet: bool,
        reporter: ConsoleReporter | None,
    ) -> None:
        push_log = config.state_path / config.sinks.push_log if config.sinks.push_log else None
        self.push = LocalPushSink(push_log, config.sinks.stdout and not quiet)
        self.display = PickupDisplay() if config.sinks.display else None
        self.reporter = reporter
        self.identity = identity
        self.summary = summary
        self.tz = ZoneInfo(config.gateway.timezone)
        # Pushes made while the disk was full are in no table the caps read: at most one per
        # shopper and store day then, whatever the caps would allow.
        self.unsaved_pushes: set[tuple[str | None, str]] = set()
        self.unsaved_suppressed = 0

    def _first_unsaved_today(self, event: OfferDecision) -> bool:
        key = (event.profile_id, local(event.t, self.tz).date().isoformat())
        if key in self.unsaved_pushes:
            self.unsaved_suppressed += 1
            return False
        self.unsaved_pushes.add(key)
        return True

    def __call__(self, events: list[PipelineEvent], queued: list[Queued]) -> None:
        for event, (seq, envelope, unsaved) in zip(events, queued, strict=True):
            if self.reporter is not None:
                self.reporter.event(event)
            if (
                isinstance(event, OfferDecision)
                and event.issued
                and (seq is not None or (unsaved and self._first_unsaved_today(event)))
            ):
                when = (
                    self.reporter.clock(event.t)
                    if self.reporter
                    else local_datetime(event.t, self.tz)
                )
                self.push.push(Push.from_decision(event), when)
                self.summary.pushes += 1
                if self.display is not None and event.sku is not None:
                    stock = self.identity.stock(event.sku)
                    self.display.add(event, stock.zone_id if stock else "")
            if self.display is not None and isinstance(event, PickupTaskEvent):
                self.display.task(event)
            if isinstance(event, HoldEvent) and event.message and (seq is not None or unsaved):
                # the copy promised to her is gone: she is told (gateway.offers.pickup)
                self.push.push(Push.apology(event), local_datetime(event.t, self.tz))
                self.summary.pushes += 1
            if seq is not None and self.reporter is not None:
                assert envelope is not None
                self.reporter.outbox(event.t, envelope.type, seq)


class UnitOfWork:
    """Runs batches through the pipeline, each inside one transaction, then fans out."""

    def __init__(
        self,
        config: Config,
        conn: sqlite3.Connection,
        pipeline: Pipeline,
        outbox: Outbox,
        envelopes: EnvelopeFactory,
        clock: Clock,
        summary: RunSummary,
    ) -> None:
        self.config = config  # replaced on reload
        self.conn = conn
        self.pipeline = pipeline
        self.outbox = outbox
        self.envelopes = envelopes
        self.clock = clock
        self.summary = summary
        self.sinks: list[EventSink] = []  # in order; the shop floor last
        self.advert_watchers: list[Callable[[Advert], None]] = []  # e.g. console calibration
        self.adverts_by_receiver: Counter[str] = Counter()
        self.outbox_dropped: Counter[str] = Counter()  # since start, by "reason:stream"
        self.degraded = False  # the disk is full: batches run without being saved
        self.disk_full_events = 0
        self._queued_since_bound = 0  # events queued since the last bounds check
        self._depth_at_bound = 0
        self._bytes_per_event = 1000.0  # of a queued event's body, at the last bounds check
        self.last_progress = clock.monotonic()  # the last committed batch (watchdog health)
        self._last_bound = 0.0
        self._last_purge = 0.0

    def process(self, batch: list[Item]) -> list[PipelineEvent]:
        """Run a batch through the pipeline and commit everything it caused at once."""
        events: list[PipelineEvent] = []
        try:
            with db.transaction(self.conn):
                self._run(batch, events)
                queued = self._enqueue(events)
        except (sqlite3.OperationalError, OSError) as exc:
            if not db.is_disk_full(exc):
                raise
            # The disk is full: nothing of the batch is saved, but the pipeline has decided
            # (its state moved on: running the batch again would count it twice). The shop
            # floor still acts on what was decided; what would have been queued is counted.
            self._disk_full()
            queued = self._unsaved_envelopes(events)
        else:
            if self.degraded:  # a batch saved: there is room again
                self.degraded = False
                log.warning("state disk has room again: events are saved and queued again")
        self._after_commit(events, queued)
        self.last_progress = self.clock.monotonic()
        if not self.summary.items and batch:
            log.info("first sighting processed")  # start-up is measured to here (bench)
        self.summary.items += len(batch)
        if batch:
            self.summary.first_t = self.summary.first_t or batch[0].t
            self.summary.last_t = batch[-1].t
        return events

    def _disk_full(self) -> None:
        """Shed the outbox so SQLite can reuse pages, and say so once per episode."""
        entering = not self.degraded
        if entering:
            log.error(
                "state disk full: shedding the outbox; decisions continue in memory until "
                "there is room again (free space under %s)",
                self.config.state_path,
            )
        self.degraded = True
        self.disk_full_events += 1
        try:
            dropped = shed_for_room(self.conn, self.outbox.depth() // 2)
        except (sqlite3.OperationalError, OSError) as exc:  # even the delete needs a page
            if entering:
                log.error("state disk full: shedding failed too: %s", exc)
            return
        for key, n in dropped.items():
            self.outbox_dropped[key] += n

    def _first_from(self, receiver: str) -> None:
        """Say once when sightings come from a receiver the map does not have: they are
        dropped (counted as unknown_receiver), and a misnamed adapter would hear for nothing."""
        if receiver not in self.pipeline.map.receivers and len(self.adverts_by_receiver) < 256:
            log.warning(
                "sightings from receiver %.64r, which is not on the store map: they are "
                "dropped (name the adapter as a gateway feature of the map, or add it)",
                receiver,
            )

    def _run(self, batch: list[Item], events: list[PipelineEvent]) -> None:
        """The batch through the stages, appending to `events` as they come (so a failure
        in the transaction still leaves what was decided)."""
        if self.pipeline.inbox:  # readings peers forwarded to us, their devices' owner
            events.extend(self.pipeline.take_inbox())
        run: list[Advert] = []  # consecutive sightings go through the pipeline together
        for item in batch:
            if isinstance(item, Advert):
                if item.receiver not in self.adverts_by_receiver:
                    self._first_from(item.receiver)
                self.adverts_by_receiver[item.receiver] += 1
                for watch in self.advert_watchers:
                    watch(item)
                run.append(item)
                continue
            if run:
                events.extend(self.pipeline.on_adverts(run))
                run = []
            if isinstance(item, Tap):
                events.extend(self.pipeline.on_tap(item))
            else:
                events.append(item)  # source health goes straight to the outbox
        if run:
            events.extend(self.pipeline.on_adverts(run))

    def advance(self, now: float) -> list[PipelineEvent]:
        """Let occurrence time pass with no sighting (devices time out, dwell events fire)."""
        with db.transaction(self.conn):
            events = self.pipeline.advance(now)
            queued = self._enqueue(events)
        self._after_commit(events, queued)
        return events

    def notify(self, notices: list[PipelineEvent]) -> None:
        """Queue events that did not come from a sensor (downlink outcomes, commands). On a
        full disk they are counted as dropped, never raised into whoever reported them."""
        try:
            with db.transaction(self.conn):
                queued = self._enqueue(notices)
        except (sqlite3.OperationalError, OSError) as exc:
            if not db.is_disk_full(exc):
                raise
            self._disk_full()
            for notice in notices:
                envelope = self.envelopes.envelope(notice)
                if envelope is not None:
                    self.outbox_dropped[f"disk_full:{envelope.stream}"] += 1
            return
        self._after_commit(notices, queued)

    def _enqueue(self, events: list[PipelineEvent]) -> list[Queued]:
        """Queue each event's envelope. Runs inside the caller's transaction: also stamps
        what the pipeline recorded with the queue time."""
        now = self.clock.wall()
        db.stamp_recorded(self.conn, now)
        queued: list[Queued] = []
        for event in events:
            envelope = self.envelopes.envelope(event)
            if envelope is None:
                queued.append(Queued(None, None))
                continue
            added = self.outbox.append([envelope], now)
            queued.append(Queued(added[0] if added else None, envelope))
            if added:
                self.summary.outbox_added[envelope.type] += 1
            issued = isinstance(event, OfferDecision) and event.issued
            if added and issued and self.config.sinks.webhook.url:
                # The push itself waits durably for the webhook's 2xx.
                assert isinstance(event, OfferDecision)
                self.outbox.append([push_event(Push.from_decision(event))], now)
            apology = isinstance(event, HoldEvent) and event.message
            if added and apology and self.config.sinks.webhook.url:
                assert isinstance(event, HoldEvent)
                self.outbox.append([push_event(Push.apology(event), "withdrawn")], now)
        return queued

    def _unsaved_envelopes(self, events: list[PipelineEvent]) -> list[Queued]:
        lost = [self.envelopes.envelope(event) for event in events]
        for envelope in lost:
            if envelope is not None:
                self.outbox_dropped[f"disk_full:{envelope.stream}"] += 1
        return [Queued(None, envelope, unsaved=True) for envelope in lost]

    def _after_commit(self, events: list[PipelineEvent], queued: list[Queued]) -> None:
        if not events:
            return
        for sink in self.sinks:
            sink(events, queued)
        added = sum(1 for q in queued if q.seq is not None)
        if added:
            self._queued_since_bound += added
            # The quotas hold at every commit: checked now if this commit may have passed one
            # (or the disk is short of space and the database's reserve is used up), else at
            # most every 10 s (TTLs and retention are not that urgent).
            bounds = self.config.outbox
            depth = self._depth_at_bound + self._queued_since_bound
            over = depth > bounds.max_events or (
                depth * self._bytes_per_event > bounds.max_mb * 1e6
            )
            if not over and self._free_bytes() < bounds.min_free_mb * 1e6:
                over = free_pages_bytes(self.conn) < LOW_SPACE_RESERVE_BYTES
            self._bound_outbox(every_s=0.0 if over else 10.0)

    def _campaign_reports(self, now: float) -> None:
        """Each ended store day's campaign aggregate upstream, once (issue 21)."""
        offers = self.pipeline.offers
        with db.transaction(self.conn):
            days = daily_reports(self.conn, offers.campaigns, offers.tz, now)
        if days:
            kind = NoticeKind.CAMPAIGN_REPORT
            self.notify([GatewayNotice(now, kind, day, data) for day, data in days])

    def _free_bytes(self) -> float:
        try:
            return float(shutil.disk_usage(self.config.state_path).free)
        except OSError:
            return float("inf")

    def _bound_outbox(self, every_s: float = 10.0) -> None:
        """Keep the outbox within its quota and TTLs (checked at most every `every_s`), and
        personal data within its retention window (hourly); wall-clock time throughout."""
        now = self.clock.wall()
        if now - self._last_bound < every_s:
            return
        self._last_bound = now
        if now - self._last_purge >= 3600:
            self._last_purge = now
            purged = db.purge_expired(self.conn, now, self.config.gateway.retention_days * 86400)
            push_log = self.config.sinks.push_log
            if purged.get("offers") and push_log:
                offers = {str(r[0]) for r in self.conn.execute("SELECT offer_id FROM offers")}
                try:
                    purged["push_log"] = prune_push_log(self.config.state_path / push_log, offers)
                except OSError as exc:
                    log.warning("retention: push log not pruned: %s", exc)
            if purged:
                log.info("retention: removed %s", purged)
            self._campaign_reports(now)
        bounds = self.config.outbox
        free = self._free_bytes()
        try:
            dropped = enforce_bounds(
                self.conn,
                now,
                bounds.max_events,
                bounds.ttl_s,
                max_bytes=int(bounds.max_mb * 1e6),
                free_bytes=None if free == float("inf") else int(free),
                min_free_bytes=int(bounds.min_free_mb * 1e6),
            )
        except (sqlite3.OperationalError, OSError) as exc:
            if not db.is_disk_full(exc):
                raise
            self._disk_full()  # even deleting needs a page: shed what can be shed
            return
        depth, size = self.outbox.depth_and_bytes()
        self._depth_at_bound = depth
        self._bytes_per_event = size / depth if depth else 1000.0
        self._queued_since_bound = 0
        if dropped:
            for key, n in dropped.items():
                self.outbox_dropped[key] += n
            log.warning("outbox over its bounds, dropped %s", dropped)
            self.notify([GatewayNotice(now, NoticeKind.OUTBOX_DROPPED, "outbox", dict(dropped))])
