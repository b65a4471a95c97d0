"""The event loop's side of the pipeline: sources put items on one bounded queue, one consumer
drains it in batches into the unit of work; all under one `asyncio.TaskGroup`.

`run_gateway` adds the backend uplink and the webhook sender beside the pipeline when the
config enables them, and drains the outbox for a while after the sources end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from gateway.runtime.commit import Item, RunSummary
from gateway.runtime.gateway import Gateway

if TYPE_CHECKING:
    from gateway.sync.uplink import Uplink

BATCH = 256


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

    ending: set[asyncio.Task[None] | None] = set()  # past their source: never cancelled

    async def source_task(source: Source) -> None:
        try:
            await source(inlet)
        finally:
            ending.add(asyncio.current_task())
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
                break
        # Cancelled until they end: a source can lose one cancel (Python 3.11's wait_for
        # drops a cancel that lands as its inner await completes, e.g. a BLE scanner's
        # stop during a restart), and `run --once` with a radio then never ended (the
        # fault lab, decisions §30).
        while not all(t.done() for t in tasks):
            for t in tasks:
                if t not in ending:
                    t.cancel()
            await asyncio.wait([t for t in tasks if not t.done()], timeout=0.25)

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
            gateway.config,
            gateway.outbox,
            on_downlink=gateway.commands.on_message,
            clock=gateway.clock,
        )
        gateway.attach_uplink(uplink)
        tasks.append(asyncio.create_task(uplink.run()))
    if gateway.config.sinks.webhook.url:
        from gateway.sinks.webhook import WebhookSender

        sender = WebhookSender(gateway.config.sinks.webhook, gateway.outbox, gateway.clock)
        gateway.attach_webhook(sender)
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
