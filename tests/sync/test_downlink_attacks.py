"""Issue 16's attacks on the downlink, re-run against a real daemon and a real Mosquitto.

An intruder is any client of the store's broker: it can publish (and retain) on every topic,
and it has captured what the backend sent to other gateways and stores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.metrics import Runtime, exposition
from gateway.runtime.status import StatusView
from gateway.sync import signed
from tests.support.broker import Broker
from tests.support.fakebluez import wait_for

KEY = bytes.fromhex("5a" * 32)
BASE = "storegate/v1/demo-bookstore"
MINE = f"{BASE}/gw-demo-1"


def _stock(version: int, quantity: int, now: float, **bind: Any) -> dict[str, Any]:
    doc = {
        "family": "stock",
        "kind": "snapshot",
        "version": version,
        "data": {"items": [{"sku": "x", "quantity": quantity, "zone_id": "aisle-kids"}]},
    }
    return signed.seal(KEY, doc, store=bind.pop("store", "demo-bookstore"), now=now, **bind)


@asynccontextmanager
async def _daemon(tmp_path: Path, clock: PinnedClock, protocol: str = "5") -> AsyncIterator[Any]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
        f"downlink_key = '{KEY.hex()}'\nbackoff_max_s = 0.3\nprotocol = '{protocol}'\n"
        "max_message_kb = 64\n"
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    stop = asyncio.Event()
    run = asyncio.create_task(run_gateway(gateway, [lambda inlet: stop.wait()], stop))
    try:
        await wait_for(lambda: gateway.uplink is not None and gateway.uplink.stats.subscribed)
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="intruder", protocol=aiomqtt.ProtocolVersion.V5
        ) as intruder:
            yield gateway, intruder, broker
    finally:
        stop.set()
        with suppress(asyncio.CancelledError):
            await run
        broker.stop()
        gateway.close()


def _quantity(gateway: Gateway) -> int | None:
    item = gateway.identity.stock("x")
    return None if item is None else item.quantity


def _connects(gateway: Gateway) -> int:
    assert gateway.uplink is not None
    return gateway.uplink.stats.connects


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_retained_hostile_document_does_not_take_the_gateway_off_mqtt(
    tmp_path: Path, clock: PinnedClock, protocol: str
) -> None:
    async with _daemon(tmp_path, clock, protocol) as (gateway, intruder, _broker):
        hostile = [
            b"[" * 1024,  # the 1 kB of '[' that used to end the session, retained
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
            b'{"sig": "00", "family": "stock", "version": 1' + b"9" * 5000 + b"}",
            b"\xff\xfe not text",
            b'{"family": "stock", "version": NaN, "sig": "x"}',
            b"{" + b'"k": 1,' * 10 + b'"k": 2}',
        ]
        for i, payload in enumerate(hostile):
            await intruder.publish(f"{BASE}/down/stock", payload, qos=1, retain=i == 0)
            await intruder.publish(f"{MINE}/cmd/flush", payload, qos=1)
        await wait_for(lambda: sum(gateway.commands.rejections.counts.values()) >= 12)
        # A message over the size limit: the broker does not deliver it on MQTT 5 (we told it
        # our Maximum Packet Size); on 3.1.1 it is refused before parsing.
        await intruder.publish(f"{BASE}/down/stock", b"[" * (80 * 1024), qos=1)
        # The retained hostile message is delivered again at every connection: it must not
        # cost one. A signed document still applies, as the next message.
        connects = _connects(gateway)
        await intruder.publish(f"{BASE}/down/stock", json.dumps(_stock(1, 5, clock.wall())), qos=1)
        await wait_for(lambda: _quantity(gateway) == 5)
        assert _connects(gateway) == connects == 1
        counts = gateway.commands.rejections.counts
        assert counts["invalid_json"] >= 2 and counts["too_deep"] >= 2
        assert counts["invalid_number"] >= 4
        assert counts["invalid_utf8"] >= 2 and counts["duplicate_member"] >= 2
        assert "internal_error" not in counts
        if protocol == "3.1.1":
            await wait_for(lambda: counts.get("too_large", 0) == 1)
        # Every refused command was answered on the gateway's own reply topic.
        assert gateway.uplink is not None and gateway.uplink.stats.connected


async def test_captured_documents_do_not_replay_across_gateways_stores_or_time(
    tmp_path: Path, clock: PinnedClock
) -> None:
    async with _daemon(tmp_path, clock) as (gateway, intruder, _broker):
        now = clock.wall()
        await intruder.publish(f"{MINE}/down/stock", json.dumps(_stock(1, 3, now)), qos=1)
        await wait_for(lambda: _quantity(gateway) == 3)
        captured = [
            _stock(2, 0, now, gateway="gw-demo-2"),  # sniffed on another gateway's topic
            _stock(3, 0, now, store="other-store"),  # another store's snapshot
            _stock(4, 0, now - 40 * 86400, valid_s=7 * 86400),  # long expired
            _stock(5, 0, now + 3600),  # from the future
            _stock(6, 0, now, valid_s=400 * 86400),  # claims to hold for ever
        ]
        for doc in captured:
            await intruder.publish(f"{BASE}/down/stock", json.dumps(doc), qos=1)
        counts = gateway.commands.rejections.counts
        await wait_for(lambda: sum(counts.values()) == len(captured))
        assert counts == {
            "wrong_gateway": 1,
            "wrong_store": 1,
            "expired": 1,
            "not_yet_valid": 1,
            "invalid_validity": 1,
        }
        assert _quantity(gateway) == 3


async def test_commands_are_bound_answered_and_replies_stay_in_our_subtree(
    tmp_path: Path, clock: PinnedClock
) -> None:
    async with _daemon(tmp_path, clock) as (_gateway, intruder, _broker):
        await intruder.subscribe(f"{BASE}/#", qos=1)
        replies: list[tuple[str, dict[str, Any]]] = []

        async def collect() -> None:
            async for message in intruder.messages:
                topic = str(message.topic)
                if "/cmd-resp/" in topic or topic.endswith("/events/orders"):
                    assert isinstance(message.payload, bytes)
                    replies.append((topic, json.loads(message.payload)))

        collector = asyncio.create_task(collect())
        now = clock.wall()
        other = signed.seal(
            KEY,
            {"command": "diagnose", "nonce": "nonce-other-1"},
            store="demo-bookstore",
            gateway="gw-demo-2",
            now=now,
            valid_s=300,
        )
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
        props.ResponseTopic = f"{MINE}/events/orders"  # steering a reply into an event stream
        mine = signed.seal(
            KEY,
            {"command": "diagnose", "nonce": "nonce-mine-1"},
            store="demo-bookstore",
            gateway="gw-demo-1",
            now=now,
            valid_s=300,
        )
        # Signed for every gateway of the store: a command must name one.
        everyone = signed.sign(KEY, {**mine, "gateway": "*", "nonce": "nonce-all-1"})
        await intruder.publish(f"{MINE}/cmd/diagnose", json.dumps(other), qos=1)
        await intruder.publish(f"{MINE}/cmd/diagnose", b"not signed at all", qos=1)
        await intruder.publish(f"{MINE}/cmd/diagnose", json.dumps(everyone), qos=1)
        # The right command on the wrong topic is refused without spending its nonce...
        await intruder.publish(f"{MINE}/cmd/flush", json.dumps(mine), qos=1)
        await wait_for(lambda: len(replies) == 4)
        # ... so the same command on its own topic still runs.
        await intruder.publish(f"{MINE}/cmd/diagnose", json.dumps(mine), qos=1, properties=props)
        await wait_for(lambda: len(replies) == 5)
        collector.cancel()
        assert [topic for topic, _ in replies] == [f"{MINE}/cmd-resp/diagnose"] * 3 + [
            f"{MINE}/cmd-resp/flush",
            f"{MINE}/cmd-resp/diagnose",
        ]
        assert [(r["ok"], r["reason"]) for _, r in replies] == [
            (False, "wrong_gateway"),
            (False, "invalid_json"),
            (False, "wrong_gateway"),
            (False, "command_mismatch"),
            (True, None),
        ]


async def test_a_flood_of_junk_is_counted_not_queued_one_by_one(
    tmp_path: Path, clock: PinnedClock
) -> None:
    async with _daemon(tmp_path, clock) as (gateway, intruder, _broker):
        for i in range(2000):
            await intruder.publish(f"{BASE}/down/stock", b'{"n": %d}' % i, qos=0)
        counts = gateway.commands.rejections.counts
        await wait_for(lambda: counts.get("unsigned", 0) == 2000, timeout=60)
        queued = gateway.outbox.depth_by_type().get("com.storegate.gateway.downlink_rejected", 0)
        delivered = gateway.conn.execute("SELECT count(*) FROM delivered").fetchone()[0]
        assert 1 <= queued + delivered <= 20  # a burst of 10, then one per 6 s
        assert gateway.uplink is not None and gateway.uplink.stats.connects == 1
        metrics = exposition(StatusView(gateway, Runtime(clock=clock)))
        assert 'gateway_downlink_rejected_total{reason="unsigned"} 2000' in metrics
