"""Peer gateways of one store share raw shopper sightings over the store's MQTT.

A big shop has several gateways; one gateway alone hears a shopper on its own receivers
only, which is enough for nearest-zone presence but not for multilateration. With sharing
on, each gateway publishes the sightings of shopper devices it hears to

    {prefix}/{store}/{gateway}/sightings        (QoS 0, not retained)

and every gateway with `peer_sightings` on folds its peers' sightings into its own pipeline
as if its own adapters had heard them: the receivers are the peers' gateway features of the
same store map, so each gateway multilaterates with all of them.

What travels: time, receiver id, RSSI and the advertising data — what any phone in the shop
can hear over the air anyway. The advertiser's MAC address is left out, and so are fixed
beacons' telemetry and anything that did not decode to a shopper device. Sightings are
real-time data: QoS 0, no outbox, and a batch older than `PEER_MAX_AGE_S` is dropped rather
than replayed after a reconnection (a position from stale RSSI would be wrong, not late).

A forged batch would place a shopper anywhere and trigger offers to her, so batches are
signed with the store's peer key (`mqtt.peer_key`, shared by the store's gateways and by no
one else): `PGS2 <hex HMAC-SHA256>\n<JSON body>`, the MAC over the topic and the body bytes.
It is checked before the body is parsed, so an unauthenticated byte never reaches the JSON
decoder; the body's `sent_at` must be recent and newer than that peer's last batch, so a
captured batch cannot be played again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.model import Advert
from gateway.sync import wire
from gateway.trace import TraceError, advert_object, parse_object

FORMAT_VERSION = 2
MAGIC = b"PGS2 "
SENT_WINDOW_S = 10.0  # a batch's sent_at within this of our time (peers share NTP)
PEER_ADDRESS_PREFIX = "peer:"  # the Advert.address of a shared sighting: never a MAC
PEER_MAX_AGE_S = 2.0
MAX_BUFFERED = 5000  # sightings kept while the broker is away (the newest win)
MAX_BATCH = 2000  # sightings accepted in one message
# Bounds checked before parsing: a message from the store's broker is still untrusted input.
MAX_PAYLOAD_BYTES = MAX_BATCH * 400
# Peers of one store share its time (NTP). A sighting ahead of ours by more than this is refused:
# one bad clock (or a forged batch) would put a device's presence in the future and every later
# sighting of it would look like time running backwards. Older ones are only late: refused past
# an hour, as garbage.
PEER_AHEAD_S = 30.0
PEER_BEHIND_S = 3600.0


def is_peer(advert: Advert) -> bool:
    return advert.address.startswith(PEER_ADDRESS_PREFIX)


@dataclass(slots=True)
class ShareBuffer:
    """Shopper sightings heard locally since the last publish (bounded)."""

    adverts: list[Advert] = field(default_factory=list)
    dropped: int = 0
    last_sent: float = float("-inf")

    def add(self, advert: Advert) -> None:
        if is_peer(advert):
            return  # never re-share a peer's sighting: no loops between gateways
        self.adverts.append(advert)
        if len(self.adverts) > MAX_BUFFERED:
            excess = len(self.adverts) - MAX_BUFFERED
            del self.adverts[:excess]
            self.dropped += excess

    def take(self, topic: PeerTopic, key: bytes, now: float) -> bytes | None:
        """The batch to publish now (None if nothing fresh), emptying the buffer."""
        if not self.adverts:
            return None
        newest = max(a.t for a in self.adverts)
        fresh = [a for a in self.adverts if a.t >= newest - PEER_MAX_AGE_S]
        self.adverts = []
        # Strictly increasing, or a peer takes the next batch for a replay: the time `now`
        # comes from may stand still between two batches (sightings at one instant).
        sent_at = max(now, self.last_sent + 1e-3)
        self.last_sent = sent_at
        return encode(topic, key, fresh, sent_at=sent_at)


class PeerTopic(NamedTuple):
    """Whose batch this is: what the signature binds besides the body."""

    prefix: str
    store: str
    gateway: str

    @property
    def topic(self) -> str:
        return f"{self.prefix}/{self.store}/{self.gateway}/sightings"


def _mac(key: bytes, topic: PeerTopic, body: bytes) -> bytes:
    return wire.frame_mac(key, topic.topic, body)


def encode(topic: PeerTopic, key: bytes, adverts: list[Advert], *, sent_at: float) -> bytes:
    body = json.dumps(
        {
            "v": FORMAT_VERSION,
            "gateway": topic.gateway,
            "sent_at": sent_at,
            "sightings": [advert_object(a, with_address=False) for a in adverts],
        },
        separators=(",", ":"),
    ).encode()
    return wire.seal_frame(MAGIC, key, topic.topic, body)


class PeerClock:
    """The newest `sent_at` seen per peer: a batch not newer than that is a replay."""

    def __init__(self, max_peers: int = 256) -> None:
        self.last: dict[str, float] = {}
        self.max_peers = max_peers

    def advance(self, peer: str, sent_at: float) -> bool:
        if sent_at <= self.last.get(peer, float("-inf")):
            return False
        if peer not in self.last and len(self.last) >= self.max_peers:
            self.last.pop(min(self.last, key=self.last.__getitem__))
        self.last[peer] = sent_at
        return True


@dataclass(frozen=True, slots=True)
class PeerBatch:
    gateway: str
    adverts: list[Advert]
    errors: list[str]  # "sightings[3]: rssi: ..." per rejected sighting


class PeerRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def decode(
    payload: bytes, topic: PeerTopic, *, key: bytes, now: float, clock: PeerClock | None = None
) -> PeerBatch:
    """Authenticate and validate a peer's batch; bad sightings are reported one by one, good
    ones kept. `now` is this gateway's time (its clock, or its replay's time if ahead)."""
    topic_gateway = topic.gateway
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PeerRejected("too_large", f"{len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    if not key:
        raise PeerRejected("no_peer_key", "mqtt.peer_key is not configured")
    try:
        body_bytes = wire.open_frame(MAGIC, key, topic.topic, payload)
    except wire.WireRejected as exc:
        raise PeerRejected(exc.reason, exc.detail) from None
    try:
        body: Any = wire.parse(body_bytes, max_bytes=MAX_PAYLOAD_BYTES, max_depth=8)
    except wire.WireRejected as exc:
        raise PeerRejected("malformed", str(exc)) from None
    if not isinstance(body, dict):
        raise PeerRejected("malformed", "expected a JSON object")
    if body.get("v") != FORMAT_VERSION:
        raise PeerRejected(
            "unsupported_version", f"v={body.get('v')!r}; this gateway reads {FORMAT_VERSION}"
        )
    gateway = body.get("gateway")
    if gateway != topic_gateway:
        raise PeerRejected(
            "gateway_mismatch", f"body says {gateway!r}, topic says {topic_gateway!r}"
        )
    sent_at = body.get("sent_at")
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)):
        raise PeerRejected("malformed", "sent_at: expected a number")
    if abs(sent_at - now) > SENT_WINDOW_S:
        raise PeerRejected(
            "stale",
            f"sent {sent_at - now:+.1f} s from this gateway's time (at most "
            f"{SENT_WINDOW_S:.0f} s; is the peer's clock synchronised?)",
        )
    if clock is not None and not clock.advance(topic_gateway, float(sent_at)):
        raise PeerRejected("replayed", f"not newer than {topic_gateway}'s last batch")
    sightings = body.get("sightings")
    if not isinstance(sightings, list):
        raise PeerRejected("malformed", "sightings: expected a list")
    if len(sightings) > MAX_BATCH:
        raise PeerRejected("too_large", f"{len(sightings)} sightings; at most {MAX_BATCH}")
    adverts: list[Advert] = []
    errors: list[str] = []
    for index, obj in enumerate(sightings):
        if isinstance(obj, dict) and "address" in obj:
            errors.append(f"sightings[{index}]: address: peers must not share MAC addresses")
            continue
        item = parse_object(obj, index)
        if isinstance(item, TraceError):
            where = f"sightings[{index}]" + (f": {item.field}" if item.field else "")
            errors.append(f"{where}: {item.reason}")
        elif not isinstance(item, Advert):
            errors.append(f"sightings[{index}]: kind: only BLE sightings are shared")
        elif not now - PEER_BEHIND_S <= item.t <= now + PEER_AHEAD_S:
            errors.append(
                f"sightings[{index}]: t: {item.t - now:+.0f} s from this gateway's time (at most "
                f"{PEER_AHEAD_S:.0f} s ahead, {PEER_BEHIND_S:.0f} s behind; is the peer's "
                "clock synchronised?)"
            )
        else:
            adverts.append(
                Advert(
                    item.t,
                    item.receiver,
                    PEER_ADDRESS_PREFIX + topic_gateway,
                    item.rssi,
                    item.ad,
                    item.mfr,
                    item.svc,
                )
            )
    return PeerBatch(topic_gateway, adverts, errors)
