"""Forwarded sightings in a fleet: decoded by the gateway that heard them, for the owner only.

In a store's fleet (docs/fleet.md) a gateway that hears a shopper device it does not own sends
the reading to the device's owner. The hearer has already decoded the advert and named the
device (its ownership key: the identity before any per-visit alias) and its calibrated power,
so it forwards exactly that, and the owner only folds the readings into its filters: no
second decode, no advert objects, no trace-format validation of raw AD bytes. Every
`share_interval_s` a hearer publishes one frame per owner to

    {prefix}/{store}/{gateway}/sightings/{owner}        (QoS 0, not retained)

so that with more than two gateways nobody authenticates or parses frames meant for others.
The frame is signed like the raw peer sightings (`PGS2`, `gateway.sync.peers`), with the
store's peer key over the topic and the body, checked before a byte is parsed:

    PGS3 <hex HMAC-SHA256>\\n{"v":3,"gateway":"gw-a","owner":"gw-b","sent_at":…,
                              "devices":[[device, power|null, [[t, receiver, rssi], …]], …]}

Bounds (size, nesting depth, devices, readings, text lengths) are checked before or while
parsing; a bad reading is refused on its own, a bad frame whole (docs/asyncapi.yaml).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.sync import wire
from gateway.sync.peers import PEER_AHEAD_S, PEER_BEHIND_S, SENT_WINDOW_S, PeerClock

FORMAT_VERSION = 3
MAGIC = b"PGS3 "
MAX_READINGS = 4000  # readings in one frame (a busy store's interval is a few hundred)
MAX_DEVICES = 1000  # devices in one frame
MAX_BUFFERED = 8000  # readings kept while the broker is away (the oldest go)
MAX_TEXT = 128  # a device key or a receiver id
# A reading is ~40 bytes as JSON, a device's header ~80: generous, and bounded before parsing.
MAX_PAYLOAD_BYTES = MAX_READINGS * 64 + MAX_DEVICES * 160
MAX_DEPTH = 5  # body, devices, a device, its readings, a reading

Reading = tuple[float, str, int]  # (t, receiver, rssi)
# (device key, calibrated power or None, its readings in time order)
DeviceReadings = tuple[str, int | None, list[Reading]]


class ForwardTopic(NamedTuple):
    """Who sent a frame to whom: what the signature binds besides the body."""

    prefix: str
    store: str
    gateway: str  # the hearer, who publishes
    owner: str  # the device owner, the only reader

    @property
    def topic(self) -> str:
        return f"{self.prefix}/{self.store}/{self.gateway}/sightings/{self.owner}"


class ForwardRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(slots=True)
class ForwardBuffer:
    """Readings of devices this gateway hears but does not own, since the last publish.

    Kept per device (one dict lookup and one append per reading); split by owner when taken,
    with the owners of that moment, so a membership change in between sends to the new one."""

    devices: dict[str, tuple[int | None, list[Reading]]] = field(default_factory=dict)
    readings: int = 0
    dropped: int = 0
    last_sent: float = float("-inf")

    def add(self, device: str, power: int | None, t: float, receiver: str, rssi: int) -> None:
        entry = self.devices.get(device)
        if entry is None or entry[0] != power:
            if entry is not None:  # a new power (rare): keep the readings, send the new one
                self.devices[device] = entry = (power, entry[1])
            else:
                self.devices[device] = entry = (power, [])
        entry[1].append((t, receiver, rssi))
        self.readings += 1
        if self.readings > MAX_BUFFERED:
            self._shed()

    def _shed(self) -> None:
        """Over the bound (the broker is away): drop the oldest half, device by device."""
        keep = MAX_BUFFERED // 2
        newest = sorted((r[0] for _, rs in self.devices.values() for r in rs), reverse=True)
        horizon = newest[keep - 1]
        for device, (power, rs) in list(self.devices.items()):
            kept = [r for r in rs if r[0] >= horizon]
            if kept:
                self.devices[device] = (power, kept)
            else:
                del self.devices[device]
        now_held = sum(len(rs) for _, rs in self.devices.values())
        self.dropped += self.readings - now_held
        self.readings = now_held

    def take(
        self,
        owner_of: Callable[[str], str],
        topic_of: Callable[[str], ForwardTopic],
        key: bytes,
        now: float,
    ) -> list[tuple[ForwardTopic, bytes]]:
        """The frames to publish now, one per owner (several if one is over the bounds),
        emptying the buffer. `owner_of(device)` names the owner (with the membership of this
        moment), `topic_of(owner)` the frame's topic; a device that has become this
        gateway's own (its topic's owner is the hearer) is not sent."""
        if not self.devices:
            return []
        by_owner: dict[str, list[DeviceReadings]] = {}
        for device, (power, rs) in self.devices.items():
            by_owner.setdefault(owner_of(device), []).append((device, power, rs))
        self.devices = {}
        self.readings = 0
        out = []
        for owner, entries in by_owner.items():
            topic = topic_of(owner)
            if topic.owner == topic.gateway:
                continue
            for chunk in _chunks(entries):
                # Strictly increasing per hearer (the owner's replay check).
                sent_at = max(now, self.last_sent + 1e-3)
                self.last_sent = sent_at
                out.append((topic, encode(topic, key, chunk, sent_at=sent_at)))
        return out


def _chunks(entries: list[DeviceReadings]) -> list[list[DeviceReadings]]:
    chunks: list[list[DeviceReadings]] = [[]]
    held = 0
    for device, power, rs in entries:
        for start in range(0, len(rs), MAX_READINGS):
            part = rs[start : start + MAX_READINGS]
            if held + len(part) > MAX_READINGS or len(chunks[-1]) >= MAX_DEVICES:
                chunks.append([])
                held = 0
            chunks[-1].append((device, power, part))
            held += len(part)
    return chunks


def encode(
    topic: ForwardTopic, key: bytes, devices: list[DeviceReadings], *, sent_at: float
) -> bytes:
    body = json.dumps(
        {
            "v": FORMAT_VERSION,
            "gateway": topic.gateway,
            "owner": topic.owner,
            "sent_at": sent_at,
            "devices": devices,
        },
        separators=(",", ":"),
    ).encode()
    return wire.seal_frame(MAGIC, key, topic.topic, body)


@dataclass(frozen=True, slots=True)
class ForwardBatch:
    gateway: str
    devices: list[DeviceReadings]
    readings: int
    errors: list[str]  # "devices[3]: ..." per refused device or reading


def _text(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_TEXT


def decode(
    payload: bytes, topic: ForwardTopic, *, key: bytes, now: float, clock: PeerClock | None = None
) -> ForwardBatch:
    """Authenticate and validate a hearer's frame for this owner; bad devices and readings
    are reported one by one, good ones kept. `now` is the owner's time."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ForwardRejected("too_large", f"{len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    if not key:
        raise ForwardRejected("no_peer_key", "mqtt.peer_key is not configured")
    try:
        body_bytes = wire.open_frame(MAGIC, key, topic.topic, payload)
        # Numbers are range-checked below, one by one (every one of them is).
        body: Any = wire.parse(
            body_bytes, max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_DEPTH, checked_numbers=True
        )
    except wire.WireRejected as exc:
        reason = exc.reason if exc.reason in ("unsigned", "bad_signature") else "malformed"
        raise ForwardRejected(reason, exc.detail) from None
    if not isinstance(body, dict):
        raise ForwardRejected("malformed", "expected a JSON object")
    if body.get("v") != FORMAT_VERSION:
        raise ForwardRejected(
            "unsupported_version", f"v={body.get('v')!r}; this gateway reads {FORMAT_VERSION}"
        )
    if body.get("gateway") != topic.gateway or body.get("owner") != topic.owner:
        raise ForwardRejected(
            "gateway_mismatch",
            f"body says {body.get('gateway')!r} to {body.get('owner')!r}, topic says "
            f"{topic.gateway!r} to {topic.owner!r}",
        )
    sent_at: Any = body.get("sent_at")
    if type(sent_at) not in (int, float) or not abs(sent_at - now) <= SENT_WINDOW_S:
        raise ForwardRejected(
            "stale",
            f"sent_at {sent_at!r} is not within {SENT_WINDOW_S:.0f} s of this gateway's time "
            "(is the peer's clock synchronised?)",
        )
    if clock is not None and not clock.advance(topic.gateway, float(sent_at)):
        raise ForwardRejected("replayed", f"not newer than {topic.gateway}'s last frame")
    devices = body.get("devices")
    if type(devices) is not list or len(devices) > MAX_DEVICES:
        raise ForwardRejected("malformed", f"devices: a list of at most {MAX_DEVICES}")
    lo, hi = now - PEER_BEHIND_S, now + PEER_AHEAD_S
    out: list[DeviceReadings] = []
    errors: list[str] = []
    total = 0
    for index, entry in enumerate(devices):
        if type(entry) is not list or len(entry) != 3:
            errors.append(f"devices[{index}]: expected [device, power, readings]")
            continue
        device, power, readings = entry
        if not _text(device) or ":" not in device:
            errors.append(f"devices[{index}]: device: expected 'kind:value', short")
            continue
        if power is not None and (type(power) is not int or not -127 <= power <= 127):
            errors.append(f"devices[{index}]: power: expected null or an integer in -127..127")
            continue
        if type(readings) is not list:
            errors.append(f"devices[{index}]: readings: expected a list")
            continue
        total += len(readings)
        if total > MAX_READINGS:
            raise ForwardRejected("too_large", f"more than {MAX_READINGS} readings")
        kept: list[Reading] = []
        for j, reading in enumerate(readings):
            if type(reading) is list and len(reading) == 3:
                t, receiver, rssi = reading
                if (
                    type(t) in (float, int)
                    and lo <= t <= hi
                    and type(rssi) is int
                    and -127 <= rssi <= -1
                    and _text(receiver)
                ):
                    kept.append((float(t), receiver, rssi))
                    continue
            errors.append(f"devices[{index}].readings[{j}]: {_why(reading, lo, hi)}")
        if kept:
            out.append((device, power, kept))
    return ForwardBatch(topic.gateway, out, sum(len(rs) for _, _, rs in out), errors)


def _why(reading: object, lo: float, hi: float) -> str:
    if type(reading) is not list or len(reading) != 3:
        return "expected [t, receiver, rssi]"
    t, _receiver, rssi = reading
    if type(t) not in (float, int) or not math.isfinite(t):
        return "t: expected a number"
    if not lo <= t <= hi:
        return (
            f"t: {t - (lo + PEER_BEHIND_S):+.0f} s from this gateway's time (at most "
            f"{PEER_AHEAD_S:.0f} s ahead, {PEER_BEHIND_S:.0f} s behind)"
        )
    if type(rssi) is not int or not -127 <= rssi <= -1:
        return "rssi: expected an integer in -127..-1"
    return f"receiver: expected a text of 1..{MAX_TEXT} characters"
