"""The asyncio shell around the synchronous pipeline.

One `asyncio.TaskGroup` owns every task: the sources put items on a bounded queue, one
consumer task drains it in batches. Each batch is processed inside one SQLite transaction:
decisions, offers and outbox events commit together, and only after the commit are pushes
delivered and events reported — "queued in the outbox" always means "on disk".
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.clock import Clock
from gateway.config.edges import BleAdapterSection
from gateway.config.sections import Config
from gateway.humantime import local_datetime, parse_instant
from gateway.identity.store import IdentityStore
from gateway.model import AdapterHealth, Advert, GatewayNotice, OfferDecision, PipelineEvent, Tap
from gateway.offers.engine import OfferEngine
from gateway.offers.rules import PickupDiscountSection
from gateway.pipeline import Pipeline
from gateway.sinks.push import LocalPushSink, PickupDisplay, Push, push_event
from gateway.sinks.terminal import ConsoleReporter
from gateway.site.hardware import load_beacon_profile
from gateway.site.storemap import load_map
from gateway.sources.replay import Rebase, ReplayProgress, replay
from gateway.store import db
from gateway.store.outbox import Outbox, OutboxEvent, enforce_bounds
from gateway.sync import downlink, peers
from gateway.sync.envelopes import EnvelopeFactory
from gateway.sync.peers import ShareBuffer
from gateway.trace import TraceError

if TYPE_CHECKING:
    from gateway.sinks.webhook import WebhookSender
    from gateway.sources.ble import BleSource
    from gateway.sources.nfc import NfcSource
    from gateway.sync.uplink import Topics, Uplink

log = logging.getLogger(__name__)

Item = Advert | Tap | AdapterHealth
Enqueued = tuple[list[int | None], list[OutboxEvent | None]]
BATCH = 256


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


class Gateway:
    """All stages wired together over one state database."""

    def __init__(
        self,
        config: Config,
        reporter: ConsoleReporter | None = None,
        quiet_sink: bool = False,
        *,
        clock: Clock,
    ) -> None:
        self.config = config
        self.clock = clock  # wall: queue times, TTLs, retention; monotonic: progress
        self.store_map = load_map(config.resolve(config.map.path))
        device_profile = load_beacon_profile(config.presence.device_profile)
        state = config.state_path
        self.conn: sqlite3.Connection = db.connect(state / "gateway.db")
        self.identity = IdentityStore(self.conn)
        key = bytes.fromhex(config.gateway.pseudonym_key)
        self.offers = OfferEngine(
            self.conn,
            self.identity,
            self._campaigns(),
            config.gateway.timezone,
            key,
            config.offers.limits,
        )
        self.pipeline = Pipeline(config, self.store_map, self.identity, self.offers, device_profile)
        self.outbox = Outbox(self.conn)
        self.envelopes = EnvelopeFactory(
            config.gateway.store, config.gateway.id, self.pipeline.pseudonym
        )
        push_log = state / config.sinks.push_log if config.sinks.push_log else None
        self.sink = LocalPushSink(push_log, config.sinks.stdout and not quiet_sink)
        self.reporter = reporter
        self.summary = RunSummary()
        self.ble_sources: list[BleSource] = []
        self.nfc_sources: list[NfcSource] = []
        self.on_commit: Callable[[], None] | None = None  # e.g. wake the uplink
        self.nonces = downlink.NonceCache()
        self.uplink: Uplink | None = None
        self.webhook: WebhookSender | None = None
        self._last_bound = 0.0
        self._last_purge = 0.0
        self.outbox_dropped: Counter[str] = Counter()
        self.share: ShareBuffer | None = None  # shopper sightings for peer gateways
        if config.mqtt.share_sightings:
            self.share = ShareBuffer()
            self.pipeline.share = self.share.add
        # Peer sightings: accepted, and rejected by reason (bad batches and bad sightings).
        self.peer_stats: Counter[str] = Counter()
        self.adverts_by_receiver: Counter[str] = Counter()
        self.display = PickupDisplay() if config.sinks.display else None
        self.last_progress = clock.monotonic()  # the consumer's last batch (watchdog health)
        self.replay_progress = ReplayProgress()  # the shift a replay source applied
        self.queue: asyncio.Queue[Item | None] | None = None  # set while the pipeline runs
        # status and console: each committed event with its uplink envelope (None: local only)
        self.on_events: Callable[[list[PipelineEvent], list[OutboxEvent | None]], None] | None
        self.on_events = None
        self.on_advert_seen: Callable[[Advert], None] | None = None  # console calibration

    def _campaigns(self) -> list[PickupDiscountSection]:
        """Campaign rules synced from the backend win over the local defaults."""
        return downlink.stored_campaigns(self.conn) or self.config.offers.all_campaigns()

    def refresh(self) -> None:
        """Re-read caches derived from the database (after seeding or a downlink update)."""
        self.offers._stocked_zones = self.identity.stocked_zones()
        self.offers.set_campaigns(self._campaigns())
        self.pipeline.reload_identities()

    def process(self, batch: list[Item]) -> list[PipelineEvent]:
        """Run a batch through the pipeline and commit everything it caused at once."""
        events: list[PipelineEvent] = []
        with db.transaction(self.conn):
            run: list[Advert] = []  # consecutive sightings go through the pipeline together
            for item in batch:
                if isinstance(item, Advert):
                    self.adverts_by_receiver[item.receiver] += 1
                    if self.on_advert_seen is not None:
                        self.on_advert_seen(item)
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
            enqueued = self._enqueue(events)
        self._after_commit(events, enqueued)
        self.last_progress = self.clock.monotonic()
        if not self.summary.items and batch:
            log.info("first sighting processed")  # start-up is measured to here (bench)
        self.summary.items += len(batch)
        if batch:
            self.summary.first_t = self.summary.first_t or batch[0].t
            self.summary.last_t = batch[-1].t
        return events

    def advance(self, now: float) -> list[PipelineEvent]:
        with db.transaction(self.conn):
            events = self.pipeline.advance(now)
            enqueued = self._enqueue(events)
        self._after_commit(events, enqueued)
        return events

    def _enqueue(self, events: list[PipelineEvent]) -> Enqueued:
        """Queue each event's envelope; (outbox seq or None, envelope or None) per event.
        Runs inside the caller's transaction: also stamps what the pipeline recorded."""
        now = self.clock.wall()
        db.stamp_recorded(self.conn, now)
        seqs: list[int | None] = []
        envelopes = [self.envelopes.envelope(event) for event in events]
        for event, envelope in zip(events, envelopes, strict=True):
            if envelope is None:
                seqs.append(None)
                continue
            added = self.outbox.append([envelope], now)
            seqs.append(added[0] if added else None)
            if added:
                self.summary.outbox_added[envelope.type] += 1
            issued = isinstance(event, OfferDecision) and event.issued
            if added and issued and self.config.sinks.webhook.url:
                # The push itself waits durably for the webhook's 2xx.
                assert isinstance(event, OfferDecision)
                self.outbox.append([push_event(Push.from_decision(event))], now)
        return seqs, envelopes

    def _after_commit(self, events: list[PipelineEvent], enqueued: Enqueued) -> None:
        seqs, envelopes = enqueued
        if self.on_events is not None and events:
            self.on_events(events, envelopes)
        if any(s is not None for s in seqs):
            if self.on_commit is not None:
                self.on_commit()
            self._bound_outbox()
        for event, seq, envelope in zip(events, seqs, envelopes, strict=True):
            if self.reporter is not None:
                self.reporter.event(event)
            if isinstance(event, OfferDecision) and event.issued and seq is not None:
                clock = (
                    self.reporter.clock(event.t)
                    if self.reporter
                    else local_datetime(event.t, ZoneInfo(self.config.gateway.timezone))
                )
                self.sink.push(Push.from_decision(event), clock)
                self.summary.pushes += 1
                if self.display is not None and event.sku is not None:
                    stock = self.identity.stock(event.sku)
                    self.display.add(event, stock.zone_id if stock else "")
            if seq is not None and self.reporter is not None:
                assert envelope is not None
                self.reporter.outbox(event.t, envelope.type, seq)

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
            if purged:
                log.info("retention: removed %s", purged)
        bounds = self.config.outbox
        dropped = enforce_bounds(self.conn, now, bounds.max_events, bounds.ttl_s)
        if dropped:
            for key, n in dropped.items():
                self.outbox_dropped[key] += n
            log.warning("outbox over its bounds, dropped %s", dropped)
            self.notify([GatewayNotice(now, "outbox_dropped", "outbox", dict(dropped))])

    def notify(self, notices: list[PipelineEvent]) -> None:
        """Queue events that did not come from a sensor (downlink outcomes, commands)."""
        with db.transaction(self.conn):
            enqueued = self._enqueue(notices)
        self._after_commit(notices, enqueued)

    def local_feeds(self, topics: Topics) -> list[Callable[[], list[tuple[str, bytes, int]]]]:
        """What the uplink publishes in real time beside the outbox."""
        feeds: list[Callable[[], list[tuple[str, bytes, int]]]] = []
        share = self.share
        if share is not None:

            def sightings() -> list[tuple[str, bytes, int]]:
                payload = share.take(self.config.gateway.id)
                return [] if payload is None else [(topics.sightings, payload, 0)]

            feeds.append(sightings)
        if self.display is not None:
            display = self.display

            def displays() -> list[tuple[str, bytes, int]]:
                return [(topics.display(zone), body, 1) for zone, body in display.take()]

            feeds.append(displays)
        return feeds

    def on_peer_sightings(self, peer: str, payload: bytes) -> None:
        """A peer gateway's shopper sightings: into the pipeline as if heard here."""
        if peer == self.config.gateway.id:
            return  # our own batch, echoed by the broker
        try:
            batch = peers.decode(payload, peer)
        except peers.PeerRejected as exc:
            self.peer_stats[f"rejected_{exc.reason}"] += 1
            log.warning("peer sightings from %s rejected: %s", peer, exc)
            return
        for error in batch.errors:
            self.peer_stats["rejected_sighting"] += 1
            log.warning("peer sightings from %s: %s", peer, error)
        self.peer_stats["accepted"] += len(batch.adverts)
        if batch.adverts:
            self.process(list(batch.adverts))

    async def on_downlink(self, message: aiomqtt.Message, uplink: Uplink) -> None:
        topic = str(message.topic)
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        )
        peer = uplink.topics.sightings_gateway(topic)
        if peer is not None:
            if self.config.mqtt.peer_sightings:
                self.on_peer_sightings(peer, payload)
            return
        *_, channel, name = topic.split("/")
        key = bytes.fromhex(self.config.mqtt.downlink_key)
        now = self.clock.wall()
        document = downlink.verify(key, payload)
        if isinstance(document, downlink.Rejected):
            self._reject(now, topic, document.reason, document.detail)
            return
        if channel == "cmd":
            await self._command(message, uplink, document, name, now)
            return
        if document.get("family") != name:
            self._reject(now, topic, "family_mismatch", f"{document.get('family')!r} on {topic}")
            return
        try:
            outcome = downlink.apply_document(self.conn, document)
        except downlink.DocumentRejected as exc:
            self._reject(now, topic, exc.reason, exc.detail)
            if exc.reason == "version_gap":
                row = self.conn.execute(
                    "SELECT version FROM doc_versions WHERE family = ?", (name,)
                ).fetchone()
                await uplink.publish_json(
                    uplink.topics.resync, {"family": name, "have": int(row[0]) if row else 0}
                )
            return
        if outcome == "applied":
            if name == "campaigns":
                # The good campaigns apply; each bad one is reported on its own.
                for where, problem in downlink.campaign_rules(document["data"])[1]:
                    self._reject(now, topic, "invalid_campaign", f"{where}: {problem}")
            self.refresh()
            self.pipeline.profiles.clear()  # identities may have changed: resolve again
            self.notify(
                [
                    GatewayNotice(
                        now,
                        "downlink_applied",
                        name,
                        {"topic": topic, "version": document["version"], "kind": document["kind"]},
                    )
                ]
            )

    def _reject(self, now: float, topic: str, reason: str, detail: str) -> None:
        log.warning("downlink rejected on %s: %s (%s)", topic, reason, detail)
        self.notify(
            [
                GatewayNotice(
                    now,
                    "downlink_rejected",
                    topic.rsplit("/", 1)[-1],
                    {"topic": topic, "reason": reason, "detail": detail},
                )
            ]
        )

    async def _command(
        self,
        message: aiomqtt.Message,
        uplink: Uplink,
        document: dict[str, object],
        name: str,
        now: float,
    ) -> None:
        reason = downlink.check_command(document, self.nonces, now)
        if not reason and document.get("command") != name:
            reason = "command_mismatch"
        result: dict[str, object] = {}
        if not reason:
            if name == "flush":
                uplink.notify()
                result = {"outbox_depth": self.outbox.depth()}
            elif name == "diagnose":
                result = {
                    "outbox_depth": self.outbox.depth(),
                    "uplink": {
                        "connects": uplink.stats.connects,
                        "delivered": uplink.stats.delivered,
                    },
                    "adverts": self.pipeline.stats.adverts,
                    "decode_rejected": dict(self.pipeline.stats.decode.rejected),
                }
            elif name == "reload":
                self.refresh()
                self.pipeline.profiles.clear()
                result = {"reloaded": ["stock", "profiles"]}
        response = {
            "command": name,
            "nonce": document.get("nonce"),
            "ok": not reason,
            "reason": reason or None,
            "result": result,
        }
        props = getattr(message, "properties", None)
        topic = getattr(props, "ResponseTopic", None) or f"{uplink.topics.base}/cmd-resp/{name}"
        kwargs: dict[str, object] = {}
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None and self.config.mqtt.protocol == "5":
            out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            out.CorrelationData = correlation
            kwargs["properties"] = out
        await uplink.publish_json(topic, response, **kwargs)
        self.notify(
            [GatewayNotice(now, "command", name, {"ok": not reason, "reason": reason or None})]
        )

    def queue_depth(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    def reload(self, new: Config) -> list[str]:
        """Apply a re-read config (SIGHUP) without dropping state. Raises MapError if the new
        map is broken (the caller keeps running on the old one). Returns what could not be
        applied live: those sections need a restart."""
        store_map = load_map(new.resolve(new.map.path))
        device_profile = load_beacon_profile(new.presence.device_profile)
        old = self.config
        needs_restart = [
            name
            for name in ("mqtt", "sources", "outbox", "service")
            if getattr(old, name) != getattr(new, name)
        ]
        if (old.gateway.id, old.gateway.store, old.gateway.state_dir) != (
            new.gateway.id,
            new.gateway.store,
            new.gateway.state_dir,
        ):
            needs_restart.append("gateway")
        # What needs a restart keeps its running value until then.
        applied = dataclasses.replace(
            new,
            gateway=dataclasses.replace(
                new.gateway,
                id=old.gateway.id,
                store=old.gateway.store,
                state_dir=old.gateway.state_dir,
            ),
            mqtt=old.mqtt,
            sources=old.sources,
            outbox=old.outbox,
            service=old.service,
            base_dir=old.base_dir,
        )
        self.config = applied
        self.store_map = store_map
        self.pipeline.reconfigure(applied, store_map, device_profile)
        self.offers.limits = applied.offers.limits
        self.offers.tz = ZoneInfo(applied.gateway.timezone)
        self.sink.stdout = applied.sinks.stdout
        self.refresh()  # campaigns: a synced document still wins over the local default
        return needs_restart

    def close(self) -> None:
        self.conn.close()


class Inlet:
    """Where sources put items. Replay awaits (back-pressure); radio callbacks must never
    block the event loop, so they use `put_nowait`, and an overflow is counted, not hidden."""

    def __init__(self, queue: asyncio.Queue[Item | None]) -> None:
        self.queue = queue
        self.dropped = 0

    async def put(self, item: Item) -> None:
        await self.queue.put(item)

    def put_nowait(self, item: Item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1


Source = Callable[[Inlet], Awaitable[object]]


async def run_pipeline(
    gateway: Gateway, sources: list[Source], stop: asyncio.Event | None = None
) -> RunSummary:
    """Run sources through the pipeline until they all end (replay) or `stop` is set (live),
    then let time pass so that every device that went quiet leaves its zones."""
    started = gateway.clock.monotonic()
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=16 * BATCH)
    gateway.queue = queue
    inlet = Inlet(queue)

    async def source_task(source: Source) -> None:
        try:
            await source(inlet)
        finally:
            # The consumer counts one end marker per source; never block here on a full queue.
            while True:
                try:
                    queue.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    await asyncio.sleep(0.01)

    async def consume(n_sources: int) -> None:
        finished = 0
        while finished < n_sources:
            item = await queue.get()
            batch: list[Item] = []
            while True:
                if item is None:
                    finished += 1
                else:
                    batch.append(item)
                if len(batch) >= BATCH or queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                gateway.process(batch)

    async def watch_stop(tasks: list[asyncio.Task[None]]) -> None:
        assert stop is not None
        while not all(t.done() for t in tasks):
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
                for t in tasks:
                    t.cancel()
                return

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume(len(sources)))
        tasks = [tg.create_task(source_task(source)) for source in sources]
        if stop is not None:
            tg.create_task(watch_stop(tasks))
    if gateway.summary.last_t is not None:
        gateway.advance(gateway.summary.last_t + gateway.config.presence.stale_after_s + 1.0)
    gateway.summary.wall_s = gateway.clock.monotonic() - started
    gateway.summary.dropped = inlet.dropped
    return gateway.summary


async def run_gateway(
    gateway: Gateway,
    sources: list[Source],
    stop: asyncio.Event | None = None,
    drain_s: float = 0.0,
) -> tuple[RunSummary, Uplink | None]:
    """The daemon: sources → pipeline, and, when [mqtt] is enabled, the uplink beside it.
    After the sources end, wait up to `drain_s` for the outbox to empty."""
    from gateway.sync.uplink import Uplink

    uplink = None
    tasks: list[asyncio.Task[None]] = []
    if gateway.config.mqtt.enabled:
        uplink = Uplink(
            gateway.config, gateway.outbox, on_downlink=gateway.on_downlink, clock=gateway.clock
        )
        uplink.local_feeds = gateway.local_feeds(uplink.topics)
        gateway.on_commit = uplink.notify
        gateway.uplink = uplink
        tasks.append(asyncio.create_task(uplink.run()))
    if gateway.config.sinks.webhook.url:
        from gateway.sinks.webhook import WebhookSender

        sender = WebhookSender(gateway.config.sinks.webhook, gateway.outbox, gateway.clock)
        gateway.webhook = sender
        tasks.append(asyncio.create_task(sender.run()))
    try:
        summary = await run_pipeline(gateway, sources, stop)
        deadline = gateway.clock.monotonic() + drain_s

        def waiting() -> bool:
            """Anything a running sink could still deliver before we stop?"""
            backend = uplink is not None and gateway.outbox.depth() > gateway.outbox.depth("push")
            pushes = gateway.webhook is not None and gateway.outbox.depth("push") > 0
            return backend or pushes

        while waiting() and gateway.clock.monotonic() < deadline:
            if uplink is not None:
                uplink.notify()
            await asyncio.sleep(0.05)
        return summary, uplink
    finally:
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def replay_rebase(gateway: Gateway, keep_times: bool = False, start: str = "") -> Rebase:
    """How a replay places a recorded trace in time: its recorded times (`keep_times`), from
    a start a person typed (`start`: HH:MM store-local or ISO 8601), or — the default — from
    the moment this state first replayed it (stable across runs: the same event ids)."""
    if keep_times:
        return Rebase.keep()
    if start:
        tz = ZoneInfo(gateway.config.gateway.timezone)
        return Rebase.to(parse_instant(start, tz, gateway.clock.wall()))
    return Rebase(lambda first: db.replay_shift(gateway.conn, first, gateway.clock.wall()))


def replay_source(gateway: Gateway, path: Path, speed: float, rebase: Rebase) -> Source:
    def on_error(error: TraceError) -> None:
        gateway.summary.trace_errors.append(str(error))
        print(f"{path}: rejected {error}", file=sys.stderr)

    async def source(inlet: Inlet) -> int:
        return await replay(
            path, speed, inlet.put, on_error, gateway.clock, rebase, gateway.replay_progress
        )

    return source


def nfc_sources(gateway: Gateway) -> list[Source]:
    """One source per touchpoint that has a reader (profile or device string)."""
    from gateway.site.hardware import load_reader_profile
    from gateway.sources.nfc import NfcSource

    out: list[Source] = []
    for touchpoint, settings in gateway.config.nfc.touchpoints.items():
        device = settings.device
        if not device and settings.reader_profile:
            device = load_reader_profile(settings.reader_profile).device
        if not device:
            continue

        def make(reader: str = touchpoint, device: str = device) -> Source:
            async def source(inlet: Inlet) -> None:
                nfc = NfcSource(reader, device, inlet.put_nowait, gateway.clock)
                gateway.nfc_sources.append(nfc)
                await nfc.run()

            return source

        out.append(make())
    return out


def ble_sources(gateway: Gateway) -> list[Source]:
    """One source per configured adapter; each scans until cancelled."""
    from gateway.sources.ble import BleSource

    out: list[Source] = []
    for adapter, settings in gateway.config.sources.ble.items():
        receiver = settings.receiver or gateway.config.gateway.id

        def make(
            adapter: str = adapter, settings: BleAdapterSection = settings, receiver: str = receiver
        ) -> Source:
            async def source(inlet: Inlet) -> None:
                ble = BleSource(adapter, settings, receiver, inlet.put_nowait, gateway.clock)
                gateway.ble_sources.append(ble)
                await ble.run()

            return source

        out.append(make())
    return out
