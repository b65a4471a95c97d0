"""The MQTT uplink against a real Mosquitto: nothing lost, order kept per stream, TLS."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.clock import PinnedClock
from gateway.config.schema import ConfigError
from gateway.config.sections import Config, parse_config
from gateway.store import db
from gateway.store.outbox import Outbox, OutboxEvent, QueuedEvent
from gateway.sync.uplink import (
    BATCH,
    FIRST_ROUND,
    Uplink,
    acknowledged_prefix,
    chunk_by_stream,
)
from tests.conftest import STORE_MORNING
from tests.support.broker import Broker, Consumer, Pki, make_pki
from tests.support.fakebluez import wait_for

STREAMS = [("redemption", 0), ("offer", 1), ("zone", 3)]


def mqtt_config(tmp_path: Path, broker: Broker, extra: str = "") -> Config:
    return parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
        f"backoff_max_s = 0.5\nkeepalive_s = 5\n{extra}",
        "test.toml",
        tmp_path,
    )


# The uplink's wall clock (acknowledgements, status): pinned, as for every in-process test.
CLOCK = PinnedClock(STORE_MORNING)


def produce(outbox: Outbox, start: int, count: int) -> None:
    for base in range(start, start + count, 500):
        batch = []
        for n in range(base, min(base + 500, start + count)):
            stream, priority = STREAMS[n % 3]
            body = {
                "specversion": "1.0",
                "id": f"ev-{n}",
                "type": f"com.storegate.{stream}.x",
                "source": "/test",
                "data": {"n": n},
            }
            batch.append(OutboxEvent(f"ev-{n}", stream, f"{stream}.x", priority, float(n), body))
        outbox.append(batch, CLOCK.wall())


@pytest.fixture
async def consumer_task() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def assert_complete_and_ordered(consumer: Consumer, count: int) -> None:
    ids = consumer.ids()
    assert set(ids) == {f"ev-{n}" for n in range(count)}, f"lost {count - len(set(ids))}"
    first_seen: dict[str, list[int]] = {}
    seen: set[str] = set()
    bodies: dict[str, dict[str, Any]] = {}
    for topic, body, _ in consumer.received:
        if body["id"] in seen:
            assert bodies[body["id"]] == body  # a duplicate is the same event, same id
            continue
        seen.add(body["id"])
        bodies[body["id"]] = body
        first_seen.setdefault(topic.rsplit("/", 1)[1], []).append(body["data"]["n"])
    for stream, numbers in first_seen.items():
        assert numbers == sorted(numbers), f"{stream} out of order"


async def _broker_with_consumer(
    tmp_path: Path, tasks: list[asyncio.Task[None]]
) -> tuple[Broker, Consumer]:
    """A running broker and a central consumer already subscribed to the events."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    consumer = Consumer(broker.port)
    tasks.append(asyncio.create_task(consumer.run()))
    await consumer.ready.wait()
    return broker, consumer


async def _start(uplink: Uplink) -> asyncio.Task[None]:
    return asyncio.create_task(uplink.run())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def test_backlog_built_while_the_broker_is_down_is_delivered_in_order(
    tmp_path: Path, consumer_task: list[asyncio.Task[None]]
) -> None:
    broker, consumer = await _broker_with_consumer(tmp_path, consumer_task)
    broker.stop()  # the consumer's durable session is saved with the broker's state

    # The batch extension, enabled explicitly (MQTT 5, structured mode).
    config = mqtt_config(tmp_path, broker, "batch_events = 50\n")
    outbox = Outbox(db.connect(config.state_path / "gateway.db"))
    uplink = Uplink(config, outbox, CLOCK)
    task = await _start(uplink)
    try:
        produce(outbox, 0, 10_000)  # 10k events while nothing can be sent
        await wait_for(lambda: uplink.stats.failures >= 2)
        assert uplink.stats.delivered == 0 and outbox.depth() == 10_000

        broker.start()
        await wait_for(lambda: outbox.depth() == 0, timeout=120)
        await wait_for(lambda: len(set(consumer.ids())) >= 10_000, timeout=60)
        assert_complete_and_ordered(consumer, 10_000)
        # Most important first: every redemption arrived before the first zone event.
        order = [t.rsplit("/", 1)[1] for t, _, _ in consumer.received]
        assert max(i for i, s in enumerate(order) if s == "redemption") < order.index("zone")
        assert consumer.batches >= 10_000 // 50  # the backlog went out in batches
        assert consumer.invalid == []  # the SDK read every event of every batch
    finally:
        await _cancel(task)
        broker.stop()


async def test_broker_killed_three_times_loses_nothing(
    tmp_path: Path, consumer_task: list[asyncio.Task[None]]
) -> None:
    broker, consumer = await _broker_with_consumer(tmp_path, consumer_task)
    config = mqtt_config(tmp_path, broker, "inflight = 16\n")
    outbox = Outbox(db.connect(config.state_path / "gateway.db"))
    produce(outbox, 0, 10_000)
    uplink = Uplink(config, outbox, CLOCK, batch=200)
    task = await _start(uplink)
    try:
        for kill, threshold in enumerate((2_000, 5_000, 8_000), start=1):
            await wait_for(lambda t=threshold: uplink.stats.delivered >= t, timeout=120)
            broker.kill()  # SIGKILL mid-drain
            await asyncio.sleep(0.2)
            broker.start()
            await wait_for(lambda k=kill: uplink.stats.connects > k, timeout=30)
        await wait_for(lambda: outbox.depth() == 0, timeout=120)
        await wait_for(lambda: len(set(consumer.ids())) >= 10_000, timeout=60)
        assert_complete_and_ordered(consumer, 10_000)
        assert uplink.stats.connects >= 4
    finally:
        await _cancel(task)
        broker.stop()


async def test_status_is_retained_online_then_offline(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = mqtt_config(tmp_path, broker)
    uplink = Uplink(config, Outbox(db.connect(config.state_path / "gateway.db")), CLOCK)
    task = await _start(uplink)
    try:
        await wait_for(lambda: uplink.stats.connected)
        status = await _retained(broker.port, uplink.topics.status)
        assert status["state"] == "online" and status["gateway"] == "gw-demo-1"
        assert status["version"] and status["config_hash"]
    finally:
        await _cancel(task)
    status = await _retained(broker.port, uplink.topics.status)
    assert status["state"] == "offline"  # said on a clean shutdown
    broker.stop()


async def _retained(port: int, topic: str) -> dict[str, Any]:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            status: dict[str, Any] = json.loads(message.payload)
            return status
    raise AssertionError("no retained status")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    folder = tmp_path_factory.mktemp("pki")
    return make_pki(folder / "good", "good"), make_pki(folder / "other", "other")


async def _delivers(config: Config, expect: bool, error: str = "") -> Uplink:
    outbox = Outbox(db.connect(config.state_path / "gateway.db"))
    produce(outbox, 0, 10)
    uplink = Uplink(config, outbox, CLOCK)
    task = await _start(uplink)
    try:
        if expect:
            await wait_for(lambda: outbox.depth() == 0)
        else:
            await wait_for(lambda: uplink.stats.failures >= 1, timeout=30)
            assert uplink.stats.connects == 0 and outbox.depth() == 10
            assert error in uplink.stats.last_error, uplink.stats.last_error
    finally:
        await _cancel(task)
    return uplink


async def test_tls_accepts_the_right_ca_and_refuses_a_wrong_one(
    tmp_path: Path, pki: tuple[Pki, Pki]
) -> None:
    good, other = pki
    broker = Broker(tmp_path / "broker", "tls", good)
    broker.start()
    try:
        wrong = mqtt_config(tmp_path / "a", broker, f"tls = true\nca_file = '{other.ca}'\n")
        await _delivers(wrong, False, "CERTIFICATE_VERIFY_FAILED")
        right = mqtt_config(tmp_path / "b", broker, f"tls = true\nca_file = '{good.ca}'\n")
        await _delivers(right, True)
    finally:
        broker.stop()


async def test_mutual_tls_refuses_a_client_without_certificate(
    tmp_path: Path, pki: tuple[Pki, Pki], caplog: pytest.LogCaptureFixture
) -> None:
    good, _ = pki
    broker = Broker(tmp_path / "broker", "mtls", good)
    broker.start()
    try:
        bare = mqtt_config(tmp_path / "a", broker, f"tls = true\nca_file = '{good.ca}'\n")
        await _delivers(bare, False)
        # paho logs the broker's TLS alert; the connect itself then times out.
        assert "CERTIFICATE_REQUIRED" in caplog.text
        with_cert = mqtt_config(
            tmp_path / "b",
            broker,
            f"tls = true\nca_file = '{good.ca}'\ncert_file = '{good.client_cert}'\n"
            f"key_file = '{good.client_key}'\n",
        )
        await _delivers(with_cert, True)
    finally:
        broker.stop()


async def test_password_is_required(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", "password")
    broker.start()
    try:
        wrong = mqtt_config(tmp_path / "a", broker, "username = 'gateway'\npassword = 'nope'\n")
        await _delivers(wrong, False, "authori")
        right = mqtt_config(tmp_path / "b", broker, "username = 'gateway'\npassword = 's3cret'\n")
        await _delivers(right, True)
    finally:
        broker.stop()


async def test_mqtt_311_fallback_delivers(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        await _delivers(mqtt_config(tmp_path, broker, "protocol = '3.1.1'\n"), True)
    finally:
        broker.stop()


def test_plaintext_to_a_remote_broker_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"refusing plaintext MQTT to broker\.example"):
        parse_config("[mqtt]\nenabled = true\nhost = 'broker.example'\n", "gw.toml")
    parse_config("[mqtt]\nenabled = true\nhost = 'broker.example'\nallow_plaintext_remote = true\n")


def test_only_the_acknowledged_prefix_of_each_stream_is_removed() -> None:
    queued = [QueuedEvent(i, f"e{i}", s, f"{s}.x", b"{}") for i, s in enumerate("aabab")]
    done = acknowledged_prefix(queued, [True, False, True, True, True])
    # stream a: e0 ok, e1 failed → e3 must wait (order); stream b: e2, e4 both ok.
    assert [e.event_id for e in done] == ["e0", "e2", "e4"]


def test_backlog_chunks_keep_stream_order() -> None:
    queued = [QueuedEvent(i, f"e{i}", s, f"{s}.x", b"{}") for i, s in enumerate("aaaabba")]
    chunks = chunk_by_stream(queued, 3)
    assert [[e.event_id for e in c] for c in chunks] == [
        ["e0", "e1", "e2"],
        ["e3"],
        ["e4", "e5"],
        ["e6"],
    ]


@pytest.mark.parametrize(
    ("extra", "content_types"),
    [
        ("", {"application/cloudevents+json"}),  # the default: structured, one per message
        ("cloudevents_mode = 'binary'\n", {"application/json"}),
        ("protocol = '3.1.1'\n", {None}),  # structured JSON, the format implied
    ],
    ids=["structured-v5", "binary-v5", "structured-v311"],
)
async def test_a_backlog_goes_one_event_per_message_by_the_binding(
    tmp_path: Path, consumer_task: list[asyncio.Task[None]], extra: str, content_types: set[str]
) -> None:
    """Every message is one CloudEvent the SDK reads (tests/support/ce_oracle.py), in the
    configured content mode, even when a backlog of 300 drains."""
    broker, consumer = await _broker_with_consumer(tmp_path, consumer_task)
    try:
        config = mqtt_config(tmp_path, broker, extra)
        outbox = Outbox(db.connect(config.state_path / "gateway.db"))
        produce(outbox, 0, 300)
        uplink = Uplink(config, outbox, CLOCK)
        ages: list[float] = []  # what feeds gateway_outbox_delivery_age_seconds
        uplink.on_delivered = ages.append
        task = await _start(uplink)
        try:
            await wait_for(lambda: outbox.depth() == 0, timeout=60)
            await wait_for(lambda: len(consumer.received) + len(consumer.invalid) >= 300)
        finally:
            await _cancel(task)
        assert consumer.invalid == []
        assert consumer.batches == 0 and uplink.stats.published == 300
        assert len(ages) == 300 and all(0 <= age < 120 for age in ages)
        assert {ct for _, _, ct in consumer.received} == content_types
        assert_complete_and_ordered(consumer, 300)
        first = next(body for _, body, _ in consumer.received if body["id"] == "ev-0")
        assert first == {
            "specversion": "1.0",
            "id": "ev-0",
            "type": "com.storegate.redemption.x",
            "source": "/test",
            "data": {"n": 0},
            **({"datacontenttype": "application/json"} if "binary" in extra else {}),
        }
    finally:
        broker.stop()


def test_binary_mode_maps_attributes_to_user_properties() -> None:
    from gateway.sync.uplink import binary_message

    stored = json.dumps(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/stores/s/gateways/g",
            "type": "com.storegate.zone.enter",
            "time": "2031-06-17T08:30:00.000Z",
            "subject": "dev-0123456789abcdef",
            "datacontenttype": "application/json",
            "data": {"zone": "z", "n": [1, 2]},
        }
    ).encode()
    payload, props = binary_message(stored)
    assert json.loads(payload) == {"zone": "z", "n": [1, 2]}
    assert getattr(props, "ContentType") == "application/json"  # noqa: B009 (paho: untyped)
    assert dict(getattr(props, "UserProperty")) == {  # noqa: B009
        "specversion": "1.0",
        "id": "e1",
        "source": "/stores/s/gateways/g",
        "type": "com.storegate.zone.enter",
        "time": "2031-06-17T08:30:00.000Z",
        "subject": "dev-0123456789abcdef",
    }


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("protocol = '3.1.1'\ncloudevents_mode = 'binary'\n", "cloudevents_mode", "MQTT 5"),
        ("cloudevents_mode = 'avro'\n", "cloudevents_mode", "structured"),
        ("protocol = '3.1.1'\nbatch_events = 50\n", "batch_events", "extension"),
        ("cloudevents_mode = 'binary'\nbatch_events = 50\n", "batch_events", "extension"),
        ("ha_discovery_prefix = 'home/+'\n", "ha_discovery_prefix", "wildcard"),
    ],
)
def test_forms_outside_the_binding_are_refused(extra: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"mqtt\.{key}.*{message}"):
        parse_config(f"[mqtt]\n{extra}", "gw.toml")
    assert Config().mqtt.batch_events == 1  # batches only when asked for


async def test_a_cancel_at_any_moment_of_the_handshake_ends_the_uplink(tmp_path: Path) -> None:
    """`gateway replay` and every SIGTERM cancel the uplink; a cancel landing between CONNACK
    and the subscriptions was once swallowed, and the process never exited."""
    import random

    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        config = mqtt_config(tmp_path, broker)
        outbox = Outbox(db.connect(config.state_path / "gateway.db"))
        rng = random.Random(4)
        for _ in range(40):
            uplink = Uplink(config, outbox, CLOCK)
            task = asyncio.create_task(uplink.run())
            await asyncio.sleep(rng.uniform(0.0, 0.06))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
    finally:
        broker.stop()


async def test_a_crash_loop_faster_than_a_round_still_makes_progress(
    tmp_path: Path, consumer_task: list[asyncio.Task[None]]
) -> None:
    """Issue 23 item 7: with one event per message a round of 500 took longer than the time
    between crashes, and no restart recorded anything. Each connection now starts with a
    small round: here every session is killed as soon as its first round is recorded, and
    each one still moves the backlog forward by that round."""
    broker, consumer = await _broker_with_consumer(tmp_path, consumer_task)
    config = mqtt_config(tmp_path, broker, "batch_events = 1\n")
    conn = db.connect(config.state_path / "gateway.db")
    outbox = Outbox(conn)
    produce(outbox, 0, 600)
    try:
        depths = [outbox.depth()]
        for _restart in range(8):
            uplink = Uplink(config, outbox, CLOCK)  # a fresh process: a fresh uplink
            task = await _start(uplink)
            await wait_for(lambda u=uplink: u.stats.delivered > 0, timeout=20)
            await _cancel(task)  # the crash, right after its first recorded round
            depths.append(outbox.depth())
        steps = [a - b for a, b in itertools.pairwise(depths)]
        assert all(step >= FIRST_ROUND for step in steps), steps  # progress every time
        assert all(step <= 3 * FIRST_ROUND for step in steps), steps  # not a whole 500
        uplink = Uplink(config, outbox, CLOCK)
        task = await _start(uplink)
        await wait_for(lambda: outbox.depth() == 0, timeout=30)
        await wait_for(lambda: len(set(consumer.ids())) == 600, timeout=30)
        await _cancel(task)
        assert_complete_and_ordered(consumer, 600)
        assert uplink.round_size == BATCH  # a healthy connection grows to full rounds
    finally:
        conn.close()
        broker.stop()
