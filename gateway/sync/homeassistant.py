"""The store's state as retained MQTT topics, and Home Assistant MQTT discovery for them.

Two products, one publisher:

* **Store state** (`[mqtt] store_state`), plain retained JSON for Node-RED and dashboards:
  `{base}/state/zones/{zone}` (people in the zone now), `{base}/state/beacons/{beacon}` (a
  fixed beacon's health) and `{base}/state/offers` (offers issued and redeemed this store
  day). Counts and fixed hardware only: nothing here is about one shopper.
* **Home Assistant discovery** (`[mqtt] ha_discovery`): a retained config per entity under
  `{ha_discovery_prefix}/{component}/{node_id}/{object_id}/config`, all of one device (this
  gateway): connectivity from the status topic (birth/will), occupancy per zone, battery and
  last seen per fixed beacon, offers issued and redeemed today. An entity whose zone or beacon
  left the map gets an empty retained config (Home Assistant removes it) and its retained
  state is cleared. What was announced is remembered in the state directory, so a map
  changed while the gateway was down is cleaned up at the next start.

States are published when they change, at most once a second; after a reconnect everything is
published again. Pure apart from the small memory file: the runtime hands in a `StoreState`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.clock import Clock
from gateway.config.edges import MqttSection
from gateway.model import BeaconHealth
from gateway.sync.topics import Publication, Topics

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0  # states go out on change, at most this often
LAST_SEEN_RESOLUTION_S = 60.0  # a beacon heard every second would otherwise publish every second
MEMORY_MAX_BYTES = 1_000_000
_ID = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True, slots=True)
class ZoneState:
    id: str
    name: str
    occupancy: int


@dataclass(frozen=True, slots=True)
class StoreState:
    """What the runtime reads off the running pipeline for one round."""

    zones: Sequence[ZoneState]
    beacons: Sequence[BeaconHealth]
    day: str  # the store day (store time zone) the offer counts are for
    offers_issued: int
    offers_redeemed: int


def object_id(text: str) -> str:
    """A discovery topic level from an id: `[a-zA-Z0-9_-]` only (Home Assistant's rule), with a
    short hash when characters had to be replaced, so two ids never collide."""
    clean = _ID.sub("_", text)
    if clean == text:
        return text
    return f"{clean}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


@dataclass(slots=True)
class StatePublisher:
    """Turns successive `StoreState`s into the retained publications that are due."""

    mqtt: MqttSection
    topics: Topics
    clock: Clock  # monotonic: the once-a-second limit
    memory: Path | None = None  # where the retained topics we hold are remembered
    _session: int = -1
    _last_round: float = field(default=-1e18)
    _sent: dict[str, bytes] = field(default_factory=dict)  # topic → retained payload sent
    _retained: set[str] = field(default_factory=set)  # what we hold retained (+ earlier runs)

    def __post_init__(self) -> None:
        self._retained = self._load()

    @property
    def discovery(self) -> bool:
        return self.mqtt.ha_discovery

    @property
    def node_id(self) -> str:
        return object_id(f"{self.topics.store}_{self.topics.gateway}")

    # --- the topics --------------------------------------------------------------------

    def zone_topic(self, zone: str) -> str:
        return f"{self.topics.base}/state/zones/{zone}"

    def beacon_topic(self, beacon: str) -> str:
        return f"{self.topics.base}/state/beacons/{beacon}"

    @property
    def offers_topic(self) -> str:
        return f"{self.topics.base}/state/offers"

    def config_topic(self, component: str, object_name: str) -> str:
        return f"{self.mqtt.ha_discovery_prefix}/{component}/{self.node_id}/{object_name}/config"

    # --- one round -----------------------------------------------------------------------

    def publications(self, read: Callable[[], StoreState], session: int) -> list[Publication]:
        """What to publish now. `session` changes on every new broker connection: then
        everything is sent again at once; otherwise only changes, at most once a second
        (`read` is called only then)."""
        now = self.clock.monotonic()
        if session != self._session:
            self._session = session
            self._sent.clear()
        elif now - self._last_round < MIN_INTERVAL_S:
            return []
        self._last_round = now
        state = read()
        wanted = self._states(state)
        if self.discovery:
            wanted.update(self._configs(state))
        out = [
            Publication(topic, payload, 1, True)
            for topic, payload in wanted.items()
            if self._sent.get(topic) != payload
        ]
        # Gone (a zone or beacon left the map, discovery turned off; now or while we were
        # down): an empty retained message clears the state, and an empty config removes the
        # entity from Home Assistant.
        for topic in sorted(self._retained - set(wanted)):
            out.append(Publication(topic, b"", 1, True))
            self._sent.pop(topic, None)
        self._sent.update(wanted)
        if set(wanted) != self._retained:
            self._retained = set(wanted)
            self._save()
        return out

    def _states(self, state: StoreState) -> dict[str, bytes]:
        out = {
            self.zone_topic(z.id): _json({"zone": z.id, "name": z.name, "occupancy": z.occupancy})
            for z in state.zones
        }
        for b in state.beacons:
            last_seen = b.last_seen
            if last_seen is not None:
                last_seen -= last_seen % LAST_SEEN_RESOLUTION_S
            out[self.beacon_topic(b.beacon)] = _json(
                {
                    "beacon": b.beacon,
                    "status": str(b.status),
                    "battery_pct": None if b.battery_pct is None else round(b.battery_pct),
                    "battery_mv": b.battery_mv,
                    "last_seen": _iso(last_seen),
                }
            )
        out[self.offers_topic] = _json(
            {"day": state.day, "issued": state.offers_issued, "redeemed": state.offers_redeemed}
        )
        return out

    # --- Home Assistant discovery ------------------------------------------------------------

    def _device(self) -> dict[str, Any]:
        return {
            "identifiers": [f"proximity-gateway_{self.node_id}"],
            "name": f"Proximity gateway {self.topics.gateway}",
            "manufacturer": "proximity-gateway",
            "model": "Proximity gateway",
            "sw_version": __version__,
            "suggested_area": self.topics.store,
        }

    def _availability(self) -> list[dict[str, str]]:
        return [
            {
                "topic": self.topics.status,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]

    def _entity(self, name: str, state_topic: str, template: str, **extra: Any) -> dict[str, Any]:
        unique = f"{self.node_id}_{extra.pop('object_name')}"
        body: dict[str, Any] = {
            "name": name,
            "unique_id": unique,
            "state_topic": state_topic,
            "value_template": template,
            "device": self._device(),
            "origin": {"name": "proximity-gateway", "sw_version": __version__},
            "availability": self._availability(),
            "qos": 1,
        }
        body.update(extra)
        return body

    def _configs(self, state: StoreState) -> dict[str, bytes]:
        entities: list[tuple[str, str, dict[str, Any]]] = []
        # Connectivity reads the status topic itself; with the status as its availability
        # it would show "unavailable" instead of "disconnected" when the will fires.
        connectivity = self._entity(
            "Backend connection",
            self.topics.status,
            "{{ value_json.state }}",
            object_name="connectivity",
            device_class="connectivity",
            entity_category="diagnostic",
            payload_on="online",
            payload_off="offline",
        )
        del connectivity["availability"]
        entities.append(("binary_sensor", "connectivity", connectivity))
        for z in state.zones:
            name = f"zone_{object_id(z.id)}_occupancy"
            entities.append(
                (
                    "sensor",
                    name,
                    self._entity(
                        f"Occupancy {z.name or z.id}",
                        self.zone_topic(z.id),
                        "{{ value_json.occupancy }}",
                        object_name=name,
                        state_class="measurement",
                        unit_of_measurement="people",
                        icon="mdi:account-group",
                    ),
                )
            )
        for b in state.beacons:
            topic = self.beacon_topic(b.beacon)
            battery = f"beacon_{object_id(b.beacon)}_battery"
            entities.append(
                (
                    "sensor",
                    battery,
                    self._entity(
                        f"Beacon {b.beacon} battery",
                        topic,
                        "{{ value_json.battery_pct }}",  # null renders "None": unknown
                        object_name=battery,
                        device_class="battery",
                        state_class="measurement",
                        unit_of_measurement="%",
                        entity_category="diagnostic",
                    ),
                )
            )
            seen = f"beacon_{object_id(b.beacon)}_last_seen"
            entities.append(
                (
                    "sensor",
                    seen,
                    self._entity(
                        f"Beacon {b.beacon} last seen",
                        topic,
                        "{{ value_json.last_seen }}",
                        object_name=seen,
                        device_class="timestamp",
                        entity_category="diagnostic",
                    ),
                )
            )
        for key, label in (
            ("issued", "Offers issued today"),
            ("redeemed", "Offers redeemed today"),
        ):
            name = f"offers_{key}_today"
            entities.append(
                (
                    "sensor",
                    name,
                    self._entity(
                        label,
                        self.offers_topic,
                        f"{{{{ value_json.{key} }}}}",
                        object_name=name,
                        state_class="total_increasing",  # back to 0 each store day
                        icon="mdi:ticket-percent",
                    ),
                )
            )
        return {
            self.config_topic(component, name): _json(body) for component, name, body in entities
        }

    # --- memory of what was announced ---------------------------------------------------

    def _load(self) -> set[str]:
        if self.memory is None or not self.memory.exists():
            return set()
        try:
            raw = self.memory.read_bytes()[: MEMORY_MAX_BYTES + 1]
            if len(raw) > MEMORY_MAX_BYTES:
                raise ValueError(f"larger than {MEMORY_MAX_BYTES} bytes")
            topics = json.loads(raw)
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise ValueError("not a list of topics")
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.memory, exc)
            return set()
        ours = (f"{self.mqtt.ha_discovery_prefix}/", f"{self.topics.base}/state/")
        return {t for t in topics if t.startswith(ours)}

    def _save(self) -> None:
        if self.memory is None:
            return
        try:
            tmp = self.memory.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self._retained)))
            tmp.replace(self.memory)
        except OSError as exc:
            log.warning("cannot remember the announced entities in %s: %s", self.memory, exc)
