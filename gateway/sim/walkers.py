"""A seeded store simulator: shoppers walk, receivers hear them through a noisy channel.

It produces traces in the replay format from physics, not from the answers we want:
  * log-distance path loss with the device's calibrated 1 m power and an exponent,
  * slow shadowing per (device, receiver) as a first-order autoregressive process
    (shelves and bodies come and go as people move),
  * fast multipath fading on every reading,
  * occasional body loss (phone in a pocket facing away),
  * dropped adverts, and a receiver sensitivity floor below which nothing is heard.
The shipped demo trace (`gateway/data/demo-trace.jsonl`) is `gateway sim demo --seed 7`;
tests replay other seeds to check the outcome does not hinge on one lucky draw.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gateway.model import Advert, Tap
from gateway.site.storemap import Wall
from gateway.trace import advert_line, tap_line


def ibeacon_ad(uuid: str, major: int, minor: int, tx_power: int) -> bytes:
    """Advertising data of an iBeacon: flags + Apple manufacturer data."""
    body = (
        b"\x4c\x00\x02\x15"
        + bytes.fromhex(uuid.replace("-", ""))
        + struct.pack(">HHb", major, minor, tx_power)
    )
    return b"\x02\x01\x06" + bytes([len(body) + 1, 0xFF]) + body


@dataclass(frozen=True, slots=True)
class Channel:
    measured_power: float = -59.0
    exponent: float = 2.5
    shadowing_db: float = 3.0  # std-dev of the slow component
    shadowing_tau_s: float = 8.0  # its correlation time
    fading_db: float = 2.5  # std-dev per reading
    body_loss_db: float = 8.0
    body_loss_p: float = 0.08
    drop_p: float = 0.15
    floor_dbm: float = -97.0
    # A concrete storey between device and receiver (ITU-R P.1238 puts one floor at 15-20 dB).
    storey_loss_db: float = 18.0


@dataclass(slots=True)
class Walker:
    """A device following waypoints (x, y, pause_s) at walking speed, from `start`."""

    device: str  # address as the scanner would report it
    ad: bytes
    start: float
    waypoints: list[tuple[float, float, float]]
    speed: float = 1.0
    rate_hz: float = 2.0
    level: int = 0
    _legs: list[tuple[float, float, float, float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.start
        x0, y0, pause0 = self.waypoints[0]
        self._legs.append((t, t + pause0, x0, y0, x0, y0))
        t += pause0
        for (xa, ya, _), (xb, yb, pause) in zip(self.waypoints, self.waypoints[1:], strict=False):
            walk = math.hypot(xb - xa, yb - ya) / self.speed
            self._legs.append((t, t + walk, xa, ya, xb, yb))
            t += walk
            self._legs.append((t, t + pause, xb, yb, xb, yb))
            t += pause

    @property
    def end(self) -> float:
        return self._legs[-1][1]

    def at(self, t: float) -> tuple[float, float] | None:
        for t0, t1, xa, ya, xb, yb in self._legs:
            if t0 <= t <= t1:
                f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return xa + f * (xb - xa), ya + f * (yb - ya)
        return None


def simulate(
    walkers: list[Walker],
    receivers: dict[str, tuple[float, float]],
    channel: Channel,
    rng: random.Random,
    end: float | None = None,
    walls: Sequence[Wall] = (),
    receiver_levels: dict[str, int] | None = None,
) -> Iterator[Advert]:
    """Adverts heard by every receiver from every walker, in time order. Walls of the
    walker's level cost their attenuation per crossing; each storey between walker and
    receiver costs `storey_loss_db`."""
    levels = receiver_levels or {}
    shadow: dict[tuple[str, str], tuple[float, float]] = {}
    ticks: list[tuple[float, int]] = []
    for i, w in enumerate(walkers):
        t = w.start + rng.uniform(0, 1 / w.rate_hz)
        stop = w.end if end is None else min(w.end, end)
        while t <= stop:
            ticks.append((t, i))
            t += (1 / w.rate_hz) * rng.uniform(0.8, 1.2)
    ticks.sort()
    for t, i in ticks:
        w = walkers[i]
        pos = w.at(t)
        if pos is None:
            continue
        for rid, (rx, ry) in receivers.items():
            if rng.random() < channel.drop_p:
                continue
            key = (w.device, rid)
            last_t, value = shadow.get(key, (t, rng.gauss(0, channel.shadowing_db)))
            a = math.exp(-(t - last_t) / channel.shadowing_tau_s)
            value = a * value + math.sqrt(1 - a * a) * rng.gauss(0, channel.shadowing_db)
            shadow[key] = (t, value)
            d = max(math.hypot(pos[0] - rx, pos[1] - ry), 0.3)
            rssi = channel.measured_power - 10 * channel.exponent * math.log10(d)
            rssi += value + rng.gauss(0, channel.fading_db)
            if rng.random() < channel.body_loss_p:
                rssi -= channel.body_loss_db
            storeys = abs(levels.get(rid, 0) - w.level)
            rssi -= storeys * channel.storey_loss_db
            if not storeys:
                rssi -= sum(wall.loss_db(pos, (rx, ry)) for wall in walls if wall.level == w.level)
            if rssi < channel.floor_dbm:
                continue
            yield Advert(t, rid, w.device, max(-127, min(-1, round(rssi))), w.ad)


# --- the demo bookstore scenario ------------------------------------------------------------

APP_UUID = "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b"  # the store app's iBeacon UUID
ANCHOR_UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"  # the shop's fixed beacons
DEMO_T0 = 1795424400.0  # 2026-11-23 10:00:00 Europe/Berlin
ALICE_TAG_UID = bytes.fromhex("04a2246a8b5c80")


def _address(rng: random.Random) -> str:
    # Phones advertise from random resolvable/non-resolvable addresses (top bits 01 / 00).
    first = (rng.randrange(256) & 0x3F) | 0x40
    return ":".join(f"{b:02X}" for b in [first, *(rng.randrange(256) for _ in range(5))])


def demo_scenario(seed: int, loyalty_key: bytes) -> list[str]:
    """The bookstore scenario as trace lines, in time order."""
    from gateway.identity import loyalty
    from gateway.resources import shared_path
    from gateway.site.storemap import load_map

    path = shared_path("geofences/demo-bookstore.geojson")
    assert path is not None, "geofences/demo-bookstore.geojson is missing"
    store = load_map(path)
    rng = random.Random(seed)
    t0 = DEMO_T0
    walkers = [
        # Alice: consenting, her saved book is on the sci-fi shelf. Enters, browses fiction,
        # lingers at sci-fi, goes to the pickup counter, taps her loyalty card, leaves.
        Walker(
            _address(rng),
            ibeacon_ad(APP_UUID, 100, 1, -59),
            t0 + 5,
            [
                (10, -6, 0),
                (10, 1.5, 4),
                (3.5, 7.5, 15),
                (9.5, 8.5, 45),
                (17, 1.8, 25),
                (10, 1.5, 0),
                (10, -12, 0),
            ],
            rate_hz=2.0,
        ),
        # Bob: has a saved cart item in stock too, but never consented to offers.
        Walker(
            _address(rng),
            ibeacon_ad(APP_UUID, 100, 2, -59),
            t0 + 20,
            [(10, -6, 0), (10, 1.5, 3), (9.5, 9, 35), (16.5, 7.5, 30), (10, 1.5, 0), (10, -12, 0)],
            rate_hz=2.0,
        ),
        # Someone whose app id is not in the profile cache.
        Walker(
            _address(rng),
            ibeacon_ad(APP_UUID, 100, 77, -59),
            t0 + 40,
            [(10, -6, 0), (10, 1.5, 2), (3.5, 6.5, 30), (10, 1.5, 0), (10, -12, 0)],
            rate_hz=2.0,
        ),
    ]
    for anchor in store.anchors:
        _, uuid, major, minor = anchor.identity.split(":")
        walkers.append(
            Walker(
                f"C0:FF:EE:00:00:{int(minor):02X}",
                ibeacon_ad(uuid, int(major), int(minor), -59),
                t0,
                [(anchor.x, anchor.y, 0), (anchor.x, anchor.y, 200)],
                rate_hz=0.5,
            )
        )
    adverts = list(simulate(walkers, store.receivers, Channel(), rng, end=t0 + 200))
    alice = walkers[0]
    tap_t = next(t0 + s for s in range(0, 400) if (alice.at(t0 + s) or (0, 0)) == (17, 1.8)) + 8
    token = loyalty.token_record(loyalty_key, "p-alice-3f9c", "card-0001")
    tap = Tap(round(tap_t, 3), "counter-reader", ALICE_TAG_UID, token)
    lines: list[tuple[float, str]] = [(a.t, advert_line(a)) for a in adverts]
    lines.append((tap.t, tap_line(tap)))
    # A card held on the reader is read again a second later: one tap, debounced.
    held = Tap(round(tap_t + 1.0, 3), "counter-reader", ALICE_TAG_UID, token)
    lines.append((held.t, tap_line(held)))
    lines.sort(key=lambda x: x[0])
    return [line for _, line in lines]
