"""MQTT uplink: drains the outbox to the broker, keeps a birth/will status, hands downlink
messages to a handler. One long-lived connection, reconnecting with backoff.

Delivery is at-least-once and ordered per stream:
  * events are read from the outbox most important stream first (priority, then seq);
  * a batch is published at QoS 1 with up to `inflight` messages outstanding; aiomqtt's
    publish returns when the broker's PUBACK arrived;
  * per stream, only the acknowledged *prefix* is removed from the outbox (moved to
    `delivered`). A message acknowledged after one that failed is sent again later, so the
    consumer may see a duplicate — with the same CloudEvents id — but never a reordering.

Each event is one MQTT message, as the CloudEvents MQTT binding defines it: structured mode
(the JSON event format as payload; on MQTT 5 Content Type `application/cloudevents+json`) or,
on MQTT 5 only, binary mode (`mqtt.cloudevents_mode = "binary"`: the `data` as payload, Content
Type = `datacontenttype`, every other attribute a User Property of the same name). JSON
batches of one stream (`mqtt.batch_events` > 1) are an extension the binding does not define:
only when configured, only on MQTT 5, only in structured mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import __version__
from gateway.clock import Clock
from gateway.config.edges import MqttSection
from gateway.config.sections import Config
from gateway.store.outbox import Outbox, QueuedEvent
from gateway.sync.ownership import status_signature
from gateway.sync.topics import LocalFeed, Topics

log = logging.getLogger(__name__)

# Events read and published per round; their acknowledgement is recorded once per round.
BATCH = 500
# The first round of a connection is this small and each fully acknowledged round doubles
# the next, up to BATCH: a gateway (or broker) that restarts more often than a full round
# takes still gets a round through, and recorded, every time (a crash loop makes progress).
FIRST_ROUND = 25

CLOUDEVENTS_JSON = "application/cloudevents+json"
# Fixed header, topic and properties of a PUBLISH beside its payload (topics are < 1 kB).
PACKET_OVERHEAD = 2048
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"


def _still_wanted() -> None:
    """Raise if this task was cancelled while an await completed anyway. Python 3.11's
    `wait_for` (inside aiomqtt's connect, publish and subscribe) can return a result and drop
    a cancel that arrived in the same loop iteration; the task still counts it as
    `cancelling()`, so the handshake checks after each step instead of running forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def client_settings(mqtt: MqttSection, config: Config, will_payload: bytes) -> dict[str, Any]:
    """Keyword arguments for aiomqtt.Client from the config."""
    v5 = mqtt.protocol == "5"
    kwargs: dict[str, Any] = {
        "hostname": mqtt.host,
        "port": mqtt.port,
        "identifier": mqtt.client_id or config.gateway.id,
        "keepalive": mqtt.keepalive_s,
        "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        "will": aiomqtt.Will(
            Topics(mqtt.topic_prefix, config.gateway.store, config.gateway.id).status,
            will_payload,
            qos=1,
            retain=True,
        ),
        "timeout": 10.0,
        "max_inflight_messages": mqtt.inflight,
    }
    if v5:
        # Clean start off plus a session expiry: QoS 1 subscriptions and queued downlink
        # survive a short drop.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = mqtt.session_expiry_s
        # Bound what the broker may send us before it reaches memory: a bigger message is
        # not delivered at all (MQTT 5 §3.1.2.11.4), and only so many QoS 1 at once.
        props.MaximumPacketSize = mqtt.max_message_kb * 1024 + PACKET_OVERHEAD
        props.ReceiveMaximum = mqtt.receive_maximum
        kwargs["properties"] = props
        kwargs["clean_start"] = False
    else:
        kwargs["clean_session"] = False
    if mqtt.username:
        kwargs["username"] = mqtt.username
        kwargs["password"] = mqtt.password or None
    if mqtt.tls:
        context = ssl.create_default_context(
            cafile=str(config.resolve(mqtt.ca_file, shared=False)) if mqtt.ca_file else None
        )
        if mqtt.cert_file:
            context.load_cert_chain(
                str(config.resolve(mqtt.cert_file, shared=False)),
                str(config.resolve(mqtt.key_file, shared=False)),
            )
        kwargs["tls_context"] = context
    return kwargs


def config_hash(config: Config) -> str:
    text = repr(config).encode()
    return hashlib.sha256(text).hexdigest()[:12]


DownlinkHandler = Callable[[aiomqtt.Message, "Uplink"], Awaitable[None]]


@dataclass(slots=True)
class UplinkStats:
    connected: bool = False
    connects: int = 0
    delivered: int = 0
    published: int = 0
    failures: int = 0
    last_error: str = ""
    received: int = 0
    subscribed: bool = False  # downlink subscriptions are in place on this connection
    local_published: int = 0  # real-time local messages (peer sightings, displays)


@dataclass(slots=True)
class Uplink:
    config: Config
    outbox: Outbox
    clock: Clock  # wall: acknowledgements, the status message; started_at
    on_downlink: DownlinkHandler | None = None
    batch: int = BATCH
    stats: UplinkStats = field(default_factory=UplinkStats)
    started: float = field(init=False, default=0.0)
    round_size: int = field(init=False, default=FIRST_ROUND)  # this connection's next round
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    client: aiomqtt.Client | None = None
    # Real-time local publications (peer sightings, pickup displays): each callable hands
    # over what is due as (topic, payload, qos); nothing of it goes through the outbox.
    local_feeds: list[LocalFeed] = field(default_factory=list)
    # Told how long each acknowledged event waited in the outbox (wall seconds since queued).
    on_delivered: Callable[[float], None] | None = None
    # Built once: paho's Properties objects are costly to make per message.
    _single_props: Properties = field(default_factory=lambda: _publish_props(CLOUDEVENTS_JSON))
    _batch_props: Properties = field(default_factory=lambda: _publish_props(CLOUDEVENTS_BATCH))

    def __post_init__(self) -> None:
        self.started = self.clock.wall()

    @property
    def topics(self) -> Topics:
        g = self.config.gateway
        return Topics(self.config.mqtt.topic_prefix, g.store, g.id)

    def _status(self, state: str) -> bytes:
        status: dict[str, object] = {
            "state": state,
            "gateway": self.config.gateway.id,
            "store": self.config.gateway.store,
            "version": __version__,
            "started_at": self.started,
            "uptime_s": round(self.clock.wall() - self.started, 1),
            "config_hash": config_hash(self.config),
        }
        mqtt = self.config.mqtt
        if mqtt.share_sightings and mqtt.peer_sightings:  # a member of the store's fleet
            key = bytes.fromhex(mqtt.peer_key)
            status["fleet"] = status_signature(key, self.topics.status, state, self.started)
        return json.dumps(status, separators=(",", ":")).encode()

    def notify(self) -> None:
        """New events were committed: drain now instead of at the next poll."""
        self.wake.set()

    async def run(self) -> None:
        """Connect, drain and listen until cancelled; reconnect on any broker failure."""
        mqtt = self.config.mqtt
        failures = 0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone, TLS refused, network down: retry
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Cancelled mid-handshake: the client's exit turned the CancelledError
                    # into a broker error. Swallowing it would hang whoever cancelled us.
                    raise asyncio.CancelledError from exc
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = _describe(exc)
                log.warning(
                    "mqtt %s:%s: %s; reconnecting", mqtt.host, mqtt.port, self.stats.last_error
                )
            else:
                failures = 0
            finally:
                self.stats.connected = self.stats.subscribed = False
                self.client = None
            delay = min(mqtt.backoff_max_s, 0.2 * 2.0 ** min(failures, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self) -> None:
        settings = client_settings(self.config.mqtt, self.config, self._status("offline"))
        client = aiomqtt.Client(**settings)
        # aiomqtt warns for every publish beyond 10 outstanding; ours are bounded by inflight.
        client.pending_calls_threshold = self.config.mqtt.inflight + 1
        async with client:
            _still_wanted()
            self.client = client
            self.round_size = min(FIRST_ROUND, self.batch)
            self.stats.connected = True
            self.stats.connects += 1
            await client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
            _still_wanted()
            for topic in self.topics.downlink_filters:
                await client.subscribe(topic, qos=1)
            if self.config.mqtt.peer_sightings:
                await client.subscribe(self.topics.peer_sightings_filter, qos=0)
                if self.config.mqtt.share_sightings:
                    for topic in self.topics.fleet_filters:
                        await client.subscribe(topic, qos=1)
                    await client.subscribe(self.topics.forwarded_filter, qos=0)
            _still_wanted()
            self.stats.subscribed = True
            task = asyncio.current_task()
            cancels_before = task.cancelling() if task is not None else 0
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._drain_forever(client))
                    tg.create_task(self._listen(client))
                    if self.local_feeds:
                        tg.create_task(self._publish_local_forever(client))
            except BaseExceptionGroup:
                # Python 3.11's TaskGroup cancels its parent when a child fails and does not
                # take that cancel back (fixed in 3.12): undo its one, keep any real one.
                if task is not None and sys.version_info < (3, 12):
                    if task.cancelling() > cancels_before:
                        task.uncancel()
                raise
            except asyncio.CancelledError:
                # Clean shutdown: say offline ourselves (the will only fires on a lost link).
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
                    await asyncio.wait_for(
                        client.publish(
                            self.topics.status, self._status("offline"), qos=1, retain=True
                        ),
                        2.0,
                    )
                raise

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.stats.received += 1
            if self.on_downlink is not None:
                await self.on_downlink(message, self)

    async def _publish_local_forever(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.config.mqtt.share_interval_s)
            _still_wanted()
            for feed in self.local_feeds:
                for p in feed():
                    await client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
                    self.stats.local_published += 1

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        last_prune = 0.0
        while True:
            _still_wanted()
            sent = await self.drain_once(client)
            now = self.clock.wall()
            if now - last_prune > 3600:
                self.outbox.prune_delivered(now - self.config.mqtt.delivered_retention_s)
                last_prune = now
            if not sent:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0)

    async def drain_once(self, client: aiomqtt.Client) -> int:
        """Publish one round; acknowledge what the broker confirmed. Returns events removed."""
        queued = self.outbox.peek(min(self.round_size, self.batch))
        if not queued:
            return 0
        semaphore = asyncio.Semaphore(self.config.mqtt.inflight)
        v5 = self.config.mqtt.protocol == "5"
        binary = v5 and self.config.mqtt.cloudevents_mode == "binary"
        # Config validation keeps batches to MQTT 5 structured mode; this holds it here too.
        per_message = self.config.mqtt.batch_events if v5 and not binary else 1
        chunks = chunk_by_stream(queued, per_message)

        async def send(chunk: list[QueuedEvent]) -> bool:
            props: Properties | None
            async with semaphore:
                if binary:
                    payload, props = binary_message(chunk[0].payload)
                elif len(chunk) == 1:
                    payload, props = chunk[0].payload, self._single_props if v5 else None
                else:
                    # The batch extension (configured, MQTT 5, structured): one stream's
                    # events as a CloudEvents JSON batch, so a backlog drains in few messages.
                    payload = b"[" + b",".join(e.payload for e in chunk) + b"]"
                    props = self._batch_props if v5 else None
                try:
                    await client.publish(
                        self.topics.events(chunk[0].stream), payload, qos=1, properties=props
                    )
                except aiomqtt.MqttError:
                    return False
                self.stats.published += 1
                return True

        sent = await asyncio.gather(*(send(c) for c in chunks))
        results = [ok for chunk, ok in zip(chunks, sent, strict=True) for _ in chunk]
        done = acknowledged_prefix(queued, results)
        if done:
            now = self.clock.wall()
            self.outbox.acknowledge(done, now)
            self.stats.delivered += len(done)
            if self.on_delivered is not None:
                for event in done:
                    self.on_delivered(max(0.0, now - event.queued_at))
        if len(done) < len(queued):
            raise aiomqtt.MqttError(f"{len(queued) - len(done)} of {len(queued)} not acknowledged")
        self.round_size = min(self.batch, self.round_size * 2)
        return len(done)

    async def publish_json(self, topic: str, body: dict[str, Any], **kwargs: Any) -> None:
        if self.client is not None:
            await self.client.publish(topic, json.dumps(body).encode(), qos=1, **kwargs)


def chunk_by_stream(queued: list[QueuedEvent], size: int) -> list[list[QueuedEvent]]:
    """Consecutive events of one stream, at most `size` per message, order kept."""
    chunks: list[list[QueuedEvent]] = []
    for event in queued:
        if chunks and chunks[-1][0].stream == event.stream and len(chunks[-1]) < size:
            chunks[-1].append(event)
        else:
            chunks.append([event])
    return chunks


def binary_message(stored: bytes) -> tuple[bytes, Properties]:
    """An outbox event (structured JSON, as stored) in the binding's MQTT 5 binary mode: the
    payload is `data` in its `datacontenttype`, which becomes the Content Type property; every
    other attribute is a User Property of the same name, in its canonical string form."""
    body: dict[str, Any] = json.loads(stored)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = str(body.get("datacontenttype", "application/json"))
    props.UserProperty = [
        (name, _canonical(value))
        for name, value in body.items()
        if name not in ("data", "data_base64", "datacontenttype")
    ]
    data = body.get("data")
    payload = b"" if data is None else json.dumps(data, separators=(",", ":")).encode()
    return payload, props


def _canonical(value: object) -> str:
    """CloudEvents canonical string form (our attributes are strings; booleans and integers
    would be extension attributes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _publish_props(content_type: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    return props


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def acknowledged_prefix(queued: list[QueuedEvent], results: list[bool]) -> list[QueuedEvent]:
    """Per stream, the events up to (not including) the first one that failed."""
    blocked: set[str] = set()
    done = []
    for event, ok in zip(queued, results, strict=True):
        if event.stream in blocked:
            continue
        if ok:
            done.append(event)
        else:
            blocked.add(event.stream)
    return done
