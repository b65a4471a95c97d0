"""The composition root: one running gateway, its stages wired over one state database.

It builds the collaborators and connects them; the work itself happens elsewhere: the unit
of work (`commit`: batch → one transaction → event sinks), the message handler
(`commands`), the reload diff (`reload`), the loop and its sources (`loop`, `sources`) and the
read-only view (`status`). Other parts attach to it through its methods (`add_sink`,
`watch_adverts`, `attach_uplink`, ...), never by assigning into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.config.sections import Config
from gateway.identity.store import IdentityStore
from gateway.model import Advert, OfferDecision, PipelineEvent
from gateway.offers import pickup
from gateway.offers.engine import OfferEngine
from gateway.offers.rules import PickupDiscountSection
from gateway.pipeline import Pipeline
from gateway.runtime.commands import Commands
from gateway.runtime.commit import EventSink, Item, Queued, RunSummary, ShopFloor, UnitOfWork
from gateway.runtime.fleet import FleetWork
from gateway.runtime.metrics import DECISION_BUCKETS, DELIVERY_BUCKETS, Histogram
from gateway.runtime.reload import plan_reload
from gateway.sinks.terminal import ConsoleReporter
from gateway.site.hardware import load_beacon_profile
from gateway.site.storemap import load_map
from gateway.sources.replay import ReplayProgress
from gateway.store import db
from gateway.store.outbox import Outbox
from gateway.sync import downlink
from gateway.sync.envelopes import EnvelopeFactory
from gateway.sync.peers import PeerTopic, ShareBuffer
from gateway.sync.topics import LocalFeed, Publication

if TYPE_CHECKING:
    from gateway.sinks.webhook import WebhookSender
    from gateway.sources.ble import BleSource
    from gateway.sources.nfc import NfcSource
    from gateway.sync.homeassistant import StoreState
    from gateway.sync.topics import Topics
    from gateway.sync.uplink import Uplink

log = logging.getLogger(__name__)

OTHER_WRITERS_CHECK_S = 2.0


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
        self.conn: sqlite3.Connection = db.connect(config.state_path / "gateway.db")
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
        self.envelopes = EnvelopeFactory.for_config(config)
        self.summary = RunSummary()
        self.shop_floor = ShopFloor(config, self.identity, self.summary, quiet_sink, reporter)
        self.work = UnitOfWork(
            config, self.conn, self.pipeline, self.outbox, self.envelopes, clock, self.summary
        )
        self.work.sinks.append(self.shop_floor)
        self.commands = Commands(self)
        self.decision_latency = Histogram(DECISION_BUCKETS)  # sighting → offer decision
        self.delivery_age = Histogram(DELIVERY_BUCKETS)  # queued → acknowledged by the broker
        self.work.sinks.insert(0, self._observe_decisions)
        self.share: ShareBuffer | None = None  # shopper sightings for peer gateways
        if config.mqtt.share_sightings:
            self.share = ShareBuffer()
            self.pipeline.share = self.share.add
        self.fleet_work: FleetWork | None = None  # one owner per shopper device (work sharing)
        if config.mqtt.share_sightings and config.mqtt.peer_sightings:
            self.fleet_work = FleetWork(self)
        self.ble_sources: list[BleSource] = []
        self.nfc_sources: list[NfcSource] = []
        self.sources_up = asyncio.Event()  # set each time a radio source comes up
        self.uplink: Uplink | None = None
        self.webhook: WebhookSender | None = None
        self.replay_progress = ReplayProgress()  # the shift a replay source applied
        self.queue: asyncio.Queue[Item | None] | None = None  # set while the pipeline runs
        # Another process (`gateway profiles import`, `stock import`, ...) may change the
        # database under the daemon: seen by SQLite's data_version, at most every few seconds.
        self.data_check_s = OTHER_WRITERS_CHECK_S
        self._next_data_check = 0.0
        self._data_version = self._read_data_version()

    # --- the work, delegated -----------------------------------------------------------

    def process(self, batch: list[Item]) -> list[PipelineEvent]:
        self._follow_other_writers()
        return self.work.process(batch)

    def _read_data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def _follow_other_writers(self) -> None:
        """Refresh the caches when another connection committed (an import on the command
        line): an opt-out or a removed identifier is honoured within seconds, not at the
        next reload. Checking costs one PRAGMA; refreshing only happens on a change."""
        now = self.clock.monotonic()
        if now < self._next_data_check:
            return
        self._next_data_check = now + self.data_check_s
        version = self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            log.info("the database was changed by another process: caches refreshed")
            self.refresh()

    def advance(self, now: float) -> list[PipelineEvent]:
        return self.work.advance(now)

    def notify(self, notices: list[PipelineEvent]) -> None:
        self.work.notify(notices)

    def withdraw_over_held(self, now: float) -> None:
        """After new stock: withdraw the holds beyond each item's quantity (newest first),
        in the pipeline's time (a replay runs ahead of or behind the wall clock)."""
        with db.transaction(self.conn):
            self.notify(pickup.reconcile_stock(self.conn, self.pipeline.now or now))

    @property
    def reporter(self) -> ConsoleReporter | None:
        return self.shop_floor.reporter

    @property
    def last_progress(self) -> float:
        return self.work.last_progress

    @property
    def adverts_by_receiver(self) -> Counter[str]:
        return self.work.adverts_by_receiver

    @property
    def outbox_dropped(self) -> Counter[str]:
        return self.work.outbox_dropped

    @property
    def peer_stats(self) -> Counter[str]:
        return self.commands.peer_stats

    def queue_depth(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    # --- attaching -----------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        """See every committed batch (before the shop floor, which prints and pushes)."""
        self.work.sinks.insert(len(self.work.sinks) - 1, sink)

    def watch_adverts(self, watch: Callable[[Advert], None]) -> None:
        """See every advert as it enters the pipeline (the console's calibration)."""
        self.work.advert_watchers.append(watch)

    def _observe_decisions(self, events: list[PipelineEvent], _queued: list[Queued]) -> None:
        now = self.clock.wall()
        for event in events:
            if isinstance(event, OfferDecision):
                self.decision_latency.observe(max(0.0, now - event.t))

    def attach_uplink(self, uplink: Uplink) -> None:
        self.uplink = uplink
        uplink.on_delivered = self.delivery_age.observe
        uplink.local_feeds = self.local_feeds(uplink.topics)
        mqtt = self.config.mqtt
        if mqtt.store_state or mqtt.ha_discovery:
            from gateway.sync.homeassistant import StatePublisher

            publisher = StatePublisher(
                mqtt, uplink.topics, self.clock, self.config.state_path / "mqtt-retained.json"
            )
            uplink.local_feeds.append(
                lambda: publisher.publications(self.store_state, uplink.stats.connects)
            )

        def wake(_events: list[PipelineEvent], queued: list[Queued]) -> None:
            if any(q.seq is not None for q in queued):
                uplink.notify()

        self.add_sink(wake)

    def report_to(self, reporter: ConsoleReporter, out: TextIO | None = None) -> None:
        """Tell a terminal what happens (demo, replay, `run --verbose`); pushes to `out` too."""
        self.shop_floor.reporter = reporter
        if out is not None:
            self.shop_floor.push.out = out

    def attach_webhook(self, sender: WebhookSender) -> None:
        self.webhook = sender

    def source_up(self, source: BleSource | NfcSource) -> None:
        from gateway.sources.ble import BleSource

        if isinstance(source, BleSource):
            self.ble_sources.append(source)
        else:
            self.nfc_sources.append(source)
        self.sources_up.set()

    async def wait_for_sources(self, radios: int) -> None:
        """Return once `radios` radio sources have come up."""
        while len(self.ble_sources) + len(self.nfc_sources) < radios:
            self.sources_up.clear()
            await self.sources_up.wait()

    def local_feeds(self, topics: Topics) -> list[LocalFeed]:
        """What the uplink publishes in real time beside the outbox."""
        feeds: list[LocalFeed] = []
        share = self.share
        if share is not None:

            def sightings() -> list[Publication]:
                config = self.config
                whose = PeerTopic(config.mqtt.topic_prefix, config.gateway.store, config.gateway.id)
                now = max(self.clock.wall(), self.pipeline.now)  # the time peers compare with
                payload = share.take(whose, bytes.fromhex(config.mqtt.peer_key), now)
                return [] if payload is None else [Publication(topics.sightings, payload, 0)]

            feeds.append(sightings)
        fleet_work = self.fleet_work
        if fleet_work is not None:
            feeds.append(lambda: fleet_work.publications(topics))
        display = self.shop_floor.display
        if display is not None:

            def displays() -> list[Publication]:
                return [Publication(topics.display(zone), body, 1) for zone, body in display.take()]

            feeds.append(displays)
        return feeds

    # --- state ---------------------------------------------------------------------------

    def store_state(self) -> StoreState:
        """The store as the retained MQTT state shows it: people per zone, fixed beacons'
        health, offers issued and redeemed this store day (by the pipeline's time)."""
        from gateway.sync.homeassistant import StoreState, ZoneState

        pipeline = self.pipeline
        zones = pipeline.zones
        counts: Counter[str] = Counter()
        for device in zones.visits:
            counts.update(zones.zones_of(device))
        now = pipeline.now or self.clock.wall()
        day = self.offers.store_day(now)
        start = datetime.combine(
            date.fromisoformat(day), time(), ZoneInfo(self.config.gateway.timezone)
        )
        end = (start + timedelta(days=1)).timestamp()
        issued, redeemed = self.conn.execute(
            "SELECT (SELECT count(*) FROM offers WHERE store_day = ?), "
            "(SELECT count(*) FROM offers WHERE redeemed_at >= ? AND redeemed_at < ?)",
            (day, start.timestamp(), end),
        ).fetchone()
        return StoreState(
            zones=[ZoneState(z.id, z.name, counts.get(z.id, 0)) for z in self.store_map.zones],
            beacons=[pipeline.fleet.report(a, now) for a in sorted(pipeline.fleet.states)],
            day=day,
            offers_issued=int(issued),
            offers_redeemed=int(redeemed),
        )

    def _campaigns(self) -> list[PickupDiscountSection]:
        """Campaign rules synced from the backend win over the local defaults."""
        return downlink.stored_campaigns(self.conn) or self.config.offers.all_campaigns()

    def refresh(self) -> None:
        """Re-read caches derived from the database (after seeding or a downlink update)."""
        self.offers.refresh_stock()
        self.offers.set_campaigns(self._campaigns())
        self.pipeline.reload_identities()

    def reload(self, new: Config) -> list[str]:
        """Apply a re-read config (SIGHUP) without dropping state. Raises MapError if the new
        map is broken (the caller keeps running on the old one). Returns what could not be
        applied live: those sections need a restart."""
        store_map = load_map(new.resolve(new.map.path))
        device_profile = load_beacon_profile(new.presence.device_profile)
        applied, needs_restart = plan_reload(self.config, new)
        self.config = self.work.config = applied
        self.store_map = store_map
        self.pipeline.reconfigure(applied, store_map, device_profile)
        self.offers.reconfigure(applied.offers.limits, applied.gateway.timezone)
        self.shop_floor.push.stdout = applied.sinks.stdout
        self.shop_floor.tz = ZoneInfo(applied.gateway.timezone)  # push lines in the new zone
        self.refresh()  # campaigns: a synced document still wins over the local default
        return needs_restart

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error), db.transaction(self.conn):
            self.offers.floor.flush(self.pipeline.now)  # the heat map's last seconds
        self.conn.close()
