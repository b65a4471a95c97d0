"""One owner per shopper device across a store's gateways (work sharing).

With `share_sightings` and `peer_sightings` on, the store's gateways form a fleet. Each shopper
device has exactly one *owner*: the live fleet member with the highest rendezvous score

    score(gateway, device) = BLAKE2b-64(key = peer_key, gateway "\\n" device)

(highest-random-weight hashing: every member computes the same owner from the same member set,
and a member joining or leaving moves only the devices it wins or held). Only the owner solves
the device's position, runs its zones and decides its offers; the others forward what they
hear of it (the signed peer sightings of `gateway.sync.peers`). The store's load spreads, and
one shopper gets one decision store-wide.

Who is live comes from the retained birth/will status topics the gateways already keep
(`{prefix}/{store}/{gateway}/status`): a member's status carries `fleet`, an HMAC over its
topic, state and start time under the peer key, so that a client of the broker without the key
cannot add a phantom member that would take devices and solve nothing. The broker publishes a
gateway's will (`offline`) when its connection is lost (at once for a closed socket, after
1.5 × keepalive for a silent one); the others then own its devices.

A hand-over must keep zone visits and offer caps: the owner publishes the state of each device
whose visits or decisions changed (QoS 1, `{prefix}/{store}/{gateway}/handover`, signed like
peer sightings), and every member keeps the newest state per device. A new owner adopts it at
the device's first sighting: the visit goes on (no second `enter`, no second dwell offer) and
the offers issued to that shopper today count towards her caps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.sync import wire
from gateway.zones.handover import HandedOver, VisitState

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline

HANDOVER_VERSION = 1
MAGIC = b"PGH1 "
MAX_HANDOVER_BYTES = 256 * 1024
MAX_DEVICES = 500  # device states in one message
MAX_KEPT = 20_000  # device states kept from peers (the oldest go first)
SENT_WINDOW_S = 10.0
# Until our own retained status comes back from the broker (the retained statuses of the
# others arrive with it), nobody is known: we own nothing for this long, then all we hear.
READY_AFTER_S = 3.0


def status_signature(key: bytes, topic: str, state: str, started_at: float) -> str:
    """The `fleet` field of a status message: membership claims need the peer key."""
    message = f"{topic}\n{state}\n{started_at!r}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Fleet:
    """The live members of the store's fleet and who owns which device."""

    me: str
    key: bytes
    started: float  # this gateway's start (monotonic or wall: only compared with itself)
    live: set[str] = field(default_factory=set)
    ready: bool = False
    changes: int = 0  # membership changes seen (a metric and a test hook)
    _owner: dict[str, str] = field(default_factory=dict)
    _mine: dict[str, bool] = field(default_factory=dict)  # owns(), once ready

    def __post_init__(self) -> None:
        self.live.add(self.me)

    def on_status(self, gateway: str, topic: str, payload: bytes) -> bool:
        """A retained status message. Returns True if the membership changed."""
        try:
            body = wire.parse(payload, max_bytes=4096, max_depth=4)
        except wire.WireRejected:
            return False
        if not isinstance(body, dict):
            return False
        state, started, claim = body.get("state"), body.get("started_at"), body.get("fleet")
        if gateway == self.me:
            self.ready = True  # our own birth, echoed: the others' retained ones came with it
            return False
        if not isinstance(claim, str) or isinstance(started, bool):
            online = False  # not a fleet member (sharing off, or an older gateway)
        elif not isinstance(state, str) or not isinstance(started, (int, float)):
            online = False
        elif not hmac.compare_digest(claim, status_signature(self.key, topic, state, started)):
            online = False  # not signed with the store's peer key: no member
        else:
            online = state == "online"
        was = gateway in self.live
        if online == was:
            return False
        if online:
            self.live.add(gateway)
        else:
            self.live.discard(gateway)
        self.forget()
        self.changes += 1
        return True

    def tick(self, now: float) -> None:
        """Own what we hear once the broker has had its chance to tell us about the others."""
        if not self.ready and now - self.started >= READY_AFTER_S:
            self.ready = True

    def owner(self, device: str) -> str:
        owner = self._owner.get(device)
        if owner is None:
            key = self.key[:64]
            owner = max(
                self.live,
                key=lambda m: (
                    hashlib.blake2b(f"{m}\n{device}".encode(), digest_size=8, key=key).digest(),
                    m,
                ),
            )
            if len(self._owner) > 100_000:
                self._owner.clear()
            self._owner[device] = owner
        return owner

    def forget(self) -> None:
        """The members changed: every owner is computed again."""
        self._owner.clear()
        self._mine.clear()

    def owns(self, device: str) -> bool:
        """Is `device` ours? One dict look-up per sighting once known (never cached before
        ready: until then nothing is ours)."""
        mine = self._mine.get(device)
        if mine is None:
            if not self.ready:
                return False
            mine = self.owner(device) == self.me
            if len(self._mine) > 100_000:
                self._mine.clear()
            self._mine[device] = mine
        return mine


def tracked_keys(pipeline: Pipeline) -> dict[str, str]:
    """Tracked id → ownership key of every device the pipeline tracks."""
    aliases = {alias: device for device, alias in pipeline.visit_aliases.items()}
    tracked = set(pipeline.presence.devices) | set(pipeline.zones.visits) | set(pipeline.profiles)
    return {t: aliases.get(t, t) for t in tracked}


def release(pipeline: Pipeline, owns: Callable[[str], bool]) -> int:
    """The fleet changed: forget, without events, the devices this gateway no longer owns
    (their new owner goes on from the state published for them). Returns how many."""
    dropped = 0
    for tracked, device in tracked_keys(pipeline).items():
        if not owns(device):
            pipeline.presence.devices.pop(tracked, None)
            pipeline.zones.visits.pop(tracked, None)
            pipeline.profiles.pop(tracked, None)
            pipeline.visit_aliases.pop(device, None)
            dropped += 1
    return dropped


# --- hand-over state ----------------------------------------------------------------------


class HandoverRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _mac(key: bytes, topic: str, body: bytes) -> bytes:
    return wire.frame_mac(key, topic, body)


def encode_handover(
    topic: str, key: bytes, gateway: str, states: list[HandedOver], *, sent_at: float
) -> bytes:
    body = json.dumps(
        {
            "v": HANDOVER_VERSION,
            "gateway": gateway,
            "sent_at": sent_at,
            "devices": [state_object(s) for s in states],
        },
        separators=(",", ":"),
    ).encode()
    return wire.seal_frame(MAGIC, key, topic, body)


def state_object(state: HandedOver) -> dict[str, Any]:
    return {
        "device": state.device,
        "tracked": state.tracked,
        "profile": state.profile,
        "t": state.t,
        "visits": [
            [v.zone, v.first_inside, v.confirmed, v.dwell_done, v.outside_since]
            for v in state.visits
        ],
        "offers": state.offers,
    }


def decode_handover(
    payload: bytes, topic: str, gateway: str, *, key: bytes, now: float
) -> list[HandedOver]:
    """Authenticate and read a peer's device states; a malformed one refuses the message."""
    if len(payload) > MAX_HANDOVER_BYTES:
        raise HandoverRejected("too_large", f"{len(payload)} bytes")
    try:
        body_bytes = wire.open_frame(MAGIC, key, topic, payload)
    except wire.WireRejected as exc:
        raise HandoverRejected(exc.reason, exc.detail) from None
    try:
        body: Any = wire.parse(body_bytes, max_bytes=MAX_HANDOVER_BYTES, max_depth=8)
    except wire.WireRejected as exc:
        raise HandoverRejected("malformed", str(exc)) from None
    if not isinstance(body, dict) or body.get("v") != HANDOVER_VERSION:
        raise HandoverRejected("unsupported_version", "expected an object with v = 1")
    if body.get("gateway") != gateway:
        raise HandoverRejected("gateway_mismatch", f"body says {body.get('gateway')!r}")
    sent_at = body.get("sent_at")
    if not isinstance(sent_at, (int, float)) or abs(sent_at - now) > SENT_WINDOW_S:
        raise HandoverRejected("stale", "sent_at missing or too far from this gateway's time")
    devices = body.get("devices")
    if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
        raise HandoverRejected("malformed", f"devices: a list of at most {MAX_DEVICES}")
    try:
        return [_state(obj) for obj in devices]
    except (TypeError, ValueError, KeyError) as exc:
        raise HandoverRejected("malformed", f"devices: {exc}") from None


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _text(value: object, limit: int = 200) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValueError(f"expected a short text, got {str(value)[:40]!r}")
    return value


OFFER_TEXT = ("offer_id", "profile_id", "campaign", "sku", "code", "store_day", "status")
OFFER_TIMES = ("issued_at", "expires_at")


def _offer(obj: Any) -> dict[str, Any]:
    """An offer row as the owner recorded it (the caps of a new owner count it)."""
    if not isinstance(obj, dict):
        raise ValueError("offers: expected objects")
    row: dict[str, Any] = {k: _text(obj[k]) for k in OFFER_TEXT}
    row |= {k: _number(obj[k]) for k in OFFER_TIMES}
    return row


def _state(obj: Any) -> HandedOver:
    if not isinstance(obj, dict):
        raise ValueError("expected an object")
    profile = obj["profile"]
    visits = []
    for v in obj["visits"]:
        zone, first, confirmed, dwell_done, outside = v
        if not isinstance(confirmed, bool) or not isinstance(dwell_done, bool):
            raise ValueError("visit flags must be true or false")
        visits.append(
            VisitState(
                _text(zone),
                _number(first),
                confirmed,
                dwell_done,
                None if outside is None else _number(outside),
            )
        )
    offers = [_offer(o) for o in obj["offers"]]
    return HandedOver(
        _text(obj["device"]),
        _text(obj["tracked"]),
        None if profile is None else _text(profile),
        _number(obj["t"]),
        visits,
        offers,
    )
