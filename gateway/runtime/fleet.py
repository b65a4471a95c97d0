"""Work sharing on a running gateway: the fleet's membership, ownership and hand-over state.

The rules live in `gateway.sync.ownership`; this wires them to the pipeline (who owns a
device), to the uplink (the statuses and hand-over messages it receives, the states it
publishes) and to the state database (offers issued by a peer count towards caps here).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from gateway.model import OfferDecision, PipelineEvent, ZoneEvent
from gateway.store.db import transaction
from gateway.sync import forward, ownership
from gateway.sync.peers import PeerClock
from gateway.sync.topics import Publication, Topics
from gateway.zones.handover import HandedOver, visits_of

if TYPE_CHECKING:
    from gateway.runtime.commit import Queued
    from gateway.runtime.gateway import Gateway

log = logging.getLogger(__name__)

# Hand-over state goes out at most this often (wall time; a replay runs store time faster).
PUBLISH_EVERY_S = 0.25
# Devices with an open visit have their state published again this often, so that a new
# owner can tell a visit going on from a stale one.
REFRESH_S = 2.0
# A peer's state older than this (store time) is not adopted: its device was silent past
# `presence.stale_after_s` (the owner would have closed its visits) or its owner is long gone.
MAX_AGE_MARGIN_S = 2 * REFRESH_S

OFFER_COLUMNS = ownership.OFFER_TEXT + ownership.OFFER_TIMES


class FleetWork:
    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config
        self.gateway = gateway
        self.fleet = ownership.Fleet(
            config.gateway.id, bytes.fromhex(config.mqtt.peer_key), gateway.clock.monotonic()
        )
        self.dirty: set[str] = set()  # tracked ids whose state changed since the last publish
        self.stats: Counter[str] = Counter()
        self._next_refresh = 0.0
        self._next_publish = 0.0
        gateway.pipeline.owns = self.owns
        gateway.add_sink(self._changed)
        # Readings of devices others own go to their owner decoded, one frame per owner per
        # share interval; the owner waits that long before solving (its jitter buffer).
        self.outgoing = forward.ForwardBuffer()
        gateway.pipeline.forward = self.outgoing.add
        gateway.pipeline.solve_delay_s = config.mqtt.share_interval_s
        self.forward_clock = PeerClock()

    def owns(self, device: str) -> bool:
        fleet = self.fleet
        if not fleet.ready:
            fleet.tick(self.gateway.clock.monotonic())
            if not fleet.ready:
                return False
        self.gateway.pipeline.owns = fleet.owns  # ready for good: ask the fleet directly
        return fleet.owns(device)

    def _changed(self, events: list[PipelineEvent], _queued: list[Queued]) -> None:
        for event in events:
            if isinstance(event, (ZoneEvent, OfferDecision)):
                self.dirty.add(event.device)

    # --- from the broker ---------------------------------------------------------------------

    def on_status(self, peer: str, topic: str, payload: bytes) -> None:
        if self.fleet.on_status(peer, topic, payload):
            released = ownership.release(self.gateway.pipeline, self.owns)
            self.stats["membership_changes"] += 1
            self.stats["released"] += released
            log.info(
                "fleet of %s: %s (%d devices left to their new owners)",
                self.fleet.me,
                ", ".join(sorted(self.fleet.live)),
                released,
            )

    def on_handover(self, peer: str, topic: str, payload: bytes) -> None:
        gateway = self.gateway
        if peer == self.fleet.me:
            return
        now = max(gateway.clock.wall(), gateway.pipeline.now)
        try:
            states = ownership.decode_handover(
                payload,
                topic,
                peer,
                key=bytes.fromhex(gateway.config.mqtt.peer_key),
                now=now,
            )
        except ownership.HandoverRejected as exc:
            self.stats[f"rejected_{exc.reason}"] += 1
            log.warning("hand-over state from %.64r rejected: %s", peer, exc)
            return
        kept = gateway.pipeline.handed_over
        offers = [o for s in states for o in s.offers]
        if offers:
            # Store-wide caps: an offer a peer issued counts here as if issued here (same id).
            with transaction(gateway.conn):
                gateway.conn.executemany(
                    f"INSERT OR IGNORE INTO offers ({', '.join(OFFER_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(OFFER_COLUMNS))})",
                    [tuple(o[c] for c in OFFER_COLUMNS) for o in offers],
                )
        for state in states:
            old = kept.pop(state.device, None)
            kept[state.device] = state if old is None or state.t >= old.t else old
            self.stats["states_received"] += 1
        while len(kept) > ownership.MAX_KEPT:
            kept.pop(next(iter(kept)))

    def on_forwarded(self, peer: str, payload: bytes, *, idle: bool | None = None) -> None:
        """A peer's readings of devices we own: into the pipeline's inbox, folded with the
        loop's next batch (in its transaction), or at once when the loop is idle (its queue
        empty: no batch is coming, and the box has time for a transaction of its own)."""
        gateway = self.gateway
        mqtt = gateway.config.mqtt
        if peer == self.fleet.me:
            return
        wall = gateway.clock.wall()
        whose = forward.ForwardTopic(
            mqtt.topic_prefix, gateway.config.gateway.store, peer, self.fleet.me
        )
        try:
            batch = forward.decode(
                payload,
                whose,
                key=bytes.fromhex(mqtt.peer_key),
                now=max(wall, gateway.pipeline.now),
                clock=self.forward_clock,
            )
        except forward.ForwardRejected as exc:
            self.stats[f"forward_rejected_{exc.reason}"] += 1
            if self.stats[f"forward_rejected_{exc.reason}"] <= 10:
                log.warning("forwarded sightings from %.64r rejected: %s", peer, exc)
            return
        if batch.errors:
            self.stats["forward_rejected_reading"] += len(batch.errors)
            for error in batch.errors[:3]:
                log.warning("forwarded sightings from %s: %s", peer, error)
        self.stats["forwarded_received"] += batch.readings
        inbox = gateway.pipeline.inbox
        inbox.extend(batch.devices)
        if len(inbox) > forward.MAX_DEVICES * 4:  # the loop is stuck: the oldest go
            self.stats["forward_dropped"] += len(inbox) - forward.MAX_DEVICES * 4
            del inbox[: len(inbox) - forward.MAX_DEVICES * 4]
        if idle is None:
            idle = gateway.queue is None or gateway.queue.empty()
        if idle:
            gateway.process([])

    # --- to the broker -------------------------------------------------------------------------

    def forwards(self, topics: Topics) -> list[Publication]:
        """This interval's readings of devices others own, one signed frame per owner."""
        gateway = self.gateway
        mqtt = gateway.config.mqtt
        store, me = gateway.config.gateway.store, self.fleet.me
        frames = self.outgoing.take(
            self.fleet.owner,
            lambda owner: forward.ForwardTopic(mqtt.topic_prefix, store, me, owner),
            bytes.fromhex(mqtt.peer_key),
            max(gateway.clock.wall(), gateway.pipeline.now),
        )
        self.stats["forward_frames_sent"] += len(frames)
        return [Publication(topics.forwarded(t.owner), payload, 0) for t, payload in frames]

    def publications(self, topics: Topics) -> list[Publication]:
        forwards = self.forwards(topics)
        return forwards + self._handovers(topics)

    def _handovers(self, topics: Topics) -> list[Publication]:
        gateway = self.gateway
        tick = gateway.clock.monotonic()
        if tick < self._next_publish:
            return []
        self._next_publish = tick + PUBLISH_EVERY_S
        pipeline = gateway.pipeline
        now = pipeline.now
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_S
            self.dirty.update(d for d, visits in pipeline.zones.visits.items() if visits)
            horizon = now - gateway.config.presence.stale_after_s - MAX_AGE_MARGIN_S
            kept = pipeline.handed_over
            for device in [d for d, s in kept.items() if s.t < horizon]:
                del kept[device]
        if not self.dirty:
            return []
        keys = ownership.tracked_keys(pipeline)
        day = gateway.offers.store_day(now)
        states = []
        for tracked in sorted(self.dirty):
            # gone (expired): published with no visits, as its owner closed them
            device = keys.get(tracked, tracked)
            profile = pipeline.profiles.get(tracked)
            offers = []
            if profile is not None:
                rows = gateway.conn.execute(
                    f"SELECT {', '.join(OFFER_COLUMNS)} FROM offers "
                    "WHERE profile_id = ? AND store_day = ?",
                    (profile, day),
                ).fetchall()
                offers = [dict(zip(OFFER_COLUMNS, row, strict=True)) for row in rows]
            visits = visits_of(pipeline.zones, tracked)
            states.append(HandedOver(device, tracked, profile, now, visits, offers))
        self.dirty.clear()
        out = []
        key = bytes.fromhex(gateway.config.mqtt.peer_key)
        wall = max(gateway.clock.wall(), now)
        for start in range(0, len(states), ownership.MAX_DEVICES):
            chunk = states[start : start + ownership.MAX_DEVICES]
            payload = ownership.encode_handover(
                topics.handover, key, self.fleet.me, chunk, sent_at=wall
            )
            out.append(Publication(topics.handover, payload, 1))
            self.stats["states_sent"] += len(chunk)
        return out
