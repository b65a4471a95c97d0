"""The asyncio shell around the synchronous pipeline.

One `asyncio.TaskGroup` owns every task: the sources put items on a bounded queue, one
consumer task drains it in batches. Each batch is processed inside one SQLite transaction:
decisions, offers and outbox events commit together, and only after the commit are pushes
delivered and events reported — "queued in the outbox" always means "on disk".
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import db
from .config import Config
from .events import EnvelopeFactory
from .identity import IdentityStore
from .model import Advert, OfferDecision, PipelineEvent, Tap
from .offers import OfferEngine
from .outbox import Outbox
from .pipeline import Pipeline
from .profiles import load_beacon_profile
from .report import ConsoleReporter
from .sinks import LocalPushSink, Push
from .sources.replay import replay
from .sources.trace import TraceError
from .storemap import load_map

Item = Advert | Tap
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


class Gateway:
    """All stages wired together over one state database."""

    def __init__(
        self, config: Config, reporter: ConsoleReporter | None = None, quiet_sink: bool = False
    ) -> None:
        self.config = config
        self.store_map = load_map(config.resolve(config.map.path))
        device_profile = load_beacon_profile(config.presence.device_profile)
        state = config.state_path
        self.conn: sqlite3.Connection = db.connect(state / "gateway.db")
        self.identity = IdentityStore(self.conn)
        key = bytes.fromhex(config.gateway.pseudonym_key)
        self.offers = OfferEngine(
            self.conn, self.identity, config.offers.pickup_discount, config.gateway.timezone, key
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

    def refresh(self) -> None:
        """Re-read caches derived from the database (after seeding or a downlink update)."""
        self.offers._stocked_zones = self.identity.stocked_zones()

    def process(self, batch: list[Item]) -> list[PipelineEvent]:
        """Run a batch through the pipeline and commit everything it caused at once."""
        events: list[PipelineEvent] = []
        with db.transaction(self.conn):
            for item in batch:
                if isinstance(item, Advert):
                    events.extend(self.pipeline.on_advert(item))
                else:
                    events.extend(self.pipeline.on_tap(item))
            seqs = self._enqueue(events)
        self._after_commit(events, seqs)
        self.summary.items += len(batch)
        if batch:
            self.summary.first_t = self.summary.first_t or batch[0].t
            self.summary.last_t = batch[-1].t
        return events

    def advance(self, now: float) -> list[PipelineEvent]:
        with db.transaction(self.conn):
            events = self.pipeline.advance(now)
            seqs = self._enqueue(events)
        self._after_commit(events, seqs)
        return events

    def _enqueue(self, events: list[PipelineEvent]) -> list[int | None]:
        seqs: list[int | None] = []
        for event in events:
            envelope = self.envelopes.envelope(event)
            if envelope is None:
                seqs.append(None)
                continue
            added = self.outbox.append([envelope])
            seqs.append(added[0] if added else None)
            if added:
                self.summary.outbox_added[envelope.type] += 1
        return seqs

    def _after_commit(self, events: list[PipelineEvent], seqs: list[int | None]) -> None:
        for event, seq in zip(events, seqs, strict=True):
            if self.reporter is not None:
                self.reporter.event(event)
            if isinstance(event, OfferDecision) and event.issued and seq is not None:
                clock = self.reporter.clock(event.t) if self.reporter else f"{event.t:.1f}"
                self.sink.push(Push.from_decision(event), clock)
                self.summary.pushes += 1
            if seq is not None and self.reporter is not None:
                envelope = self.envelopes.envelope(event)
                assert envelope is not None
                self.reporter.outbox(event.t, envelope.type, seq)

    def close(self) -> None:
        self.conn.close()


async def run_pipeline(
    gateway: Gateway,
    sources: list[Callable[[Callable[[Item], Awaitable[None]]], Awaitable[int]]],
) -> RunSummary:
    """Run finite sources to their end through the pipeline, then let time pass so that
    every device that went quiet leaves its zones."""
    started = time.monotonic()
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=4 * BATCH)

    async def emit(item: Item) -> None:
        await queue.put(item)

    async def source_task(
        source: Callable[[Callable[[Item], Awaitable[None]]], Awaitable[int]],
    ) -> None:
        try:
            await source(emit)
        finally:
            await queue.put(None)

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

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume(len(sources)))
        for source in sources:
            tg.create_task(source_task(source))
    if gateway.summary.last_t is not None:
        gateway.advance(gateway.summary.last_t + gateway.config.presence.stale_after_s + 1.0)
    gateway.summary.wall_s = time.monotonic() - started
    return gateway.summary


def replay_source(
    gateway: Gateway, path: Path, speed: float
) -> Callable[[Callable[[Item], Awaitable[None]]], Awaitable[int]]:
    def on_error(error: TraceError) -> None:
        gateway.summary.trace_errors.append(str(error))
        print(f"{path}: rejected {error}", file=sys.stderr)

    async def source(emit: Callable[[Item], Awaitable[None]]) -> int:
        return await replay(path, speed, emit, on_error)

    return source
