"""Fleet simulation: N gateways in one event loop, each with its own state directory,
outbox and MQTT uplink, producing events at a steady rate; one central consumer with an
MQTT 5 shared subscription measures what arrives.

Without --host it starts a local Mosquitto on a free port with the tests' broker helper
(tests/support): run it through scripts/fleet-sim, or `.venv/bin/python -m scripts.fleet_sim`
from the repository root, so that `tests` is importable. Figures:
delivered events/s (whole fleet), peak outbox backlog of any gateway, end-to-end latency
(event committed to the outbox → received by the consumer) p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt

from gateway.clock import SystemClock
from gateway.config.sections import parse_config
from gateway.store import db
from gateway.store.outbox import Outbox, OutboxEvent
from gateway.sync.uplink import Uplink

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Event

CLOCK = SystemClock()


def consumer_process(
    host: str, port: int, ready: Event, stop: Event, results: Connection[object, object]
) -> None:
    """The central consumer, in its own process as it would be in a real deployment."""
    latencies: list[float] = []
    seen: set[str] = set()

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(consume(host, port, latencies, seen, started))
        await started.wait()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    results.send((len(seen), sorted(latencies)))


async def consume(
    host: str, port: int, latencies: list[float], seen: set[str], ready: asyncio.Event
) -> None:
    # A shared subscription: central consumers scale out by adding members to the group.
    async with aiomqtt.Client(
        host, port, identifier="fleet-consumer", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe("$share/central/storegate/v1/+/+/events/#", qos=1)
        ready.set()
        async for message in client.messages:
            now = CLOCK.wall()
            body = json.loads(message.payload)
            for event in body if isinstance(body, list) else [body]:
                if event["id"] not in seen:
                    seen.add(event["id"])
                    latencies.append(now - event["data"]["committed_at"])


async def gateway(
    index: int, root: Path, host: str, port: int, rate: float, seconds: float, backlog: list[int]
) -> int:
    config = parse_config(
        f"[gateway]\nid = 'gw-{index:03d}'\nstore = 'store-{index // 5:03d}'\n"
        f"state_dir = '{root / f'gw-{index:03d}'}'\n"
        f"[mqtt]\nenabled = true\nhost = '{host}'\nport = {port}\nallow_plaintext_remote = true\n"
    )
    outbox = Outbox(db.connect(config.state_path / "gateway.db"))
    uplink = Uplink(config, outbox, CLOCK)
    task = asyncio.create_task(uplink.run())
    produced = 0
    start = CLOCK.monotonic()
    tick = 0.1  # the daemon commits per batch too: one transaction per tick
    try:
        while CLOCK.monotonic() - start < seconds:
            due = int((CLOCK.monotonic() - start) * rate) + 1
            now = CLOCK.wall()
            batch = []
            for n in range(produced, due):
                event_id = f"gw{index}-{n}"
                body = {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": f"/gw/{index}",
                    "type": "com.storegate.zone.enter",
                    "data": {"committed_at": now},
                }
                batch.append(OutboxEvent(event_id, "zone", "zone.enter", 3, now, body))
            if batch:
                outbox.append(batch, now)
                uplink.notify()
                produced = due
            backlog[index] = max(backlog[index], outbox.depth())
            await asyncio.sleep(tick)
        deadline = CLOCK.monotonic() + 30
        while outbox.depth() and CLOCK.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return produced


async def run(n: int, rate: float, seconds: float, host: str, port: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receiving, sending = ctx.Pipe(duplex=False)
    consumer = ctx.Process(target=consumer_process, args=(host, port, ready, stop, sending))
    consumer.start()
    await asyncio.to_thread(ready.wait, 30)
    backlog = [0] * n
    with tempfile.TemporaryDirectory() as tmp:
        started = CLOCK.monotonic()
        produced = sum(
            await asyncio.gather(
                *(gateway(i, Path(tmp), host, port, rate, seconds, backlog) for i in range(n))
            )
        )
        elapsed = CLOCK.monotonic() - started
    await asyncio.sleep(2.0)  # let the last messages arrive
    stop.set()
    delivered, latencies = await asyncio.to_thread(receiving.recv)
    consumer.join(10)
    return {
        "gateways": n,
        "produced": produced,
        "delivered": delivered,
        "delivered_per_s": delivered / elapsed,
        "max_backlog": max(backlog),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per gateway")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument(
        "--share-work",
        action="store_true",
        help="instead: N gateways sharing one busy store's work (scripts/fleet_share.py)",
    )
    args = parser.parse_args()
    if args.share_work:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench
        import fleet_share

        workdir = Path(tempfile.mkdtemp(prefix="fleet-share-"))
        print("preparing the busy store (100k profiles, 500 phones, 200 zones) ...", flush=True)
        config_file, trace = bench.busy_state(workdir)
        fleet_share.sweep(config_file, trace, args.gateways, workdir / "fleet")
        return 0
    broker = None
    host, port = args.host, args.port
    if host is None:
        from tests.support.broker import Broker

        broker = Broker(Path(tempfile.mkdtemp(prefix="fleet-broker-")))
        broker.start()
        host, port = "127.0.0.1", broker.port
    print(f"broker {host}:{port}; {args.rate:g} events/s per gateway for {args.seconds:g} s")
    print(
        f"{'gateways':>8} {'produced':>9} {'delivered':>9} {'events/s':>9} {'max backlog':>11}"
        f" {'p50 ms':>8} {'p99 ms':>8}"
    )
    try:
        for n in args.gateways:
            r = asyncio.run(run(n, args.rate, args.seconds, host, port))
            print(
                f"{r['gateways']:>8} {r['produced']:>9} {r['delivered']:>9} "
                f"{r['delivered_per_s']:>9.0f} {r['max_backlog']:>11} "
                f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
            )
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
