"""The read-only view of a running gateway: the one way the web, the metrics and `gateway
status` look inside it.

Like Home Assistant's `bluetooth/api.py`, this module is the façade: everything else reads
typed documents from a `StatusView` and never follows attribute chains into the pipeline, the
uplink or the sources (a test holds web/ and metrics to that). What it returns is plain data,
safe to serialise: pseudonymous ids only, machine times in epoch seconds (UTC).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from gateway import __version__

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway
    from gateway.runtime.metrics import Histogram, Runtime


class SourcesDoc(TypedDict):
    adverts_by_receiver: dict[str, int]
    rates_per_s: dict[str, float]
    ble_adapters: dict[str, str]
    nfc_readers: dict[str, str]
    taps: int
    # offsets learned from the fixed beacons (gateway.presence.selfcal), by receiver
    receiver_offsets: dict[str, dict[str, float | int | bool]]


class OutboxDoc(TypedDict):
    depth: dict[str, int]
    oldest_age_s: float
    dropped: dict[str, int]  # since start, by "expired:<stream>" / "shed:<stream>"
    disk_full: bool  # the state disk is full: batches run in memory, the outbox is shed


class MqttDoc(TypedDict):
    enabled: bool
    connected: bool
    delivered: int
    last_error: str


class BeaconDoc(TypedDict):
    status: str
    battery_mv: int | None
    seen_s_ago: float | None


class OfferDoc(TypedDict):
    t: float
    profile: str | None
    reason: str
    issued: bool
    trigger: str
    campaign: str


class DeviceDoc(TypedDict):
    id: str
    x: float
    y: float
    uncertainty_m: float
    level: int
    zones: list[str]
    t: float


class StatusDoc(TypedDict):
    """`gateway status --json` and `GET /status`: a public, documented shape."""

    gateway: str
    store: str
    version: str
    ready: bool
    started_at: float
    uptime_s: float
    sources: SourcesDoc
    tracked_devices: int
    zones: dict[str, int]
    last_offers: list[OfferDoc]
    decisions: dict[str, int]
    outbox: OutboxDoc
    mqtt: MqttDoc
    beacons: dict[str, BeaconDoc]
    loop_lag_ms: float
    reloads: dict[str, int]


@dataclass(frozen=True, slots=True)
class Counters:
    """Every counter and gauge the Prometheus exposition shows, read at one moment."""

    adverts_by_receiver: dict[str, int]
    taps: int
    frames: dict[str, int]
    decode_rejected: dict[str, int]
    presence_rejected: dict[str, int]
    tracked_devices: int
    zone_events: dict[str, int]
    decisions: dict[str, int]
    offers_issued: int
    redemptions: int
    outbox_depth: dict[str, int]
    outbox_oldest_age_s: float
    outbox_dropped: dict[str, int]  # since start, by "expired:<stream>" / "shed:<stream>"
    disk_full: bool
    mqtt_connected: bool
    mqtt_delivered: int | None  # None: no uplink configured
    mqtt_connects: int | None
    mqtt_failures: int | None
    peer_sightings: dict[str, int]
    downlink_rejected: dict[str, int]  # since start, by reason (all counted, few logged)
    ble_adapters_up: dict[str, bool]  # every configured adapter, False until it scans
    beacons_ok: dict[str, bool]
    beacons_battery_pct: dict[str, float]  # only beacons that reported a battery voltage
    receiver_offsets_db: dict[str, float]  # learned from the fixed beacons (self-calibration)
    inlet_dropped: int
    decision_latency: Histogram
    delivery_age: Histogram


class StatusView:
    """Typed snapshots of one running gateway and of what its service shell measured."""

    def __init__(self, gateway: Gateway, runtime: Runtime) -> None:
        self._gateway = gateway
        self.runtime = runtime

    @property
    def wall(self) -> float:
        return self._gateway.clock.wall()

    def occupancy(self) -> dict[str, int]:
        """Devices inside each zone now (every zone of the map, empty ones included)."""
        zones = self._gateway.pipeline.zones
        counts: Counter[str] = Counter()
        for device in zones.visits:
            for zone in zones.zones_of(device):
                counts[zone] += 1
        return {z.id: counts.get(z.id, 0) for z in self._gateway.store_map.zones}

    def outbox_depths(self) -> dict[str, int]:
        rows = self._gateway.conn.execute(
            "SELECT stream, COUNT(*) FROM outbox GROUP BY stream"
        ).fetchall()
        return {str(stream): int(n) for stream, n in rows}

    def sources(self) -> SourcesDoc:
        gateway = self._gateway
        counts = gateway.adverts_by_receiver
        return {
            "adverts_by_receiver": dict(sorted(counts.items())),
            "rates_per_s": self.runtime.rates.rates(gateway.clock.monotonic(), counts),
            "ble_adapters": {s.adapter: s.state for s in gateway.ble_sources},
            "nfc_readers": {s.reader: s.state for s in gateway.nfc_sources},
            "taps": gateway.pipeline.stats.taps,
            "receiver_offsets": gateway.pipeline.selfcal.report(),
        }

    def outbox(self) -> OutboxDoc:
        age = self._gateway.outbox.oldest_age(self.wall)
        return {
            "depth": self.outbox_depths(),
            "oldest_age_s": round(age or 0.0, 1),
            "dropped": dict(sorted(self._gateway.outbox_dropped.items())),
            "disk_full": self._gateway.work.degraded,
        }

    def mqtt(self) -> MqttDoc:
        uplink = self._gateway.uplink
        return {
            "enabled": self._gateway.config.mqtt.enabled,
            "connected": bool(uplink and uplink.stats.connected),
            "delivered": uplink.stats.delivered if uplink else 0,
            "last_error": uplink.stats.last_error if uplink else "",
        }

    def beacons(self) -> dict[str, BeaconDoc]:
        pipeline = self._gateway.pipeline
        now = pipeline.now
        return {
            anchor: {
                "status": state.status,
                "battery_mv": state.battery_mv,
                "seen_s_ago": None if state.last_seen is None else round(now - state.last_seen, 1),
            }
            for anchor, state in pipeline.fleet.states.items()
        }

    def beacon_intervals(self) -> dict[str, float | None]:
        """Each fixed beacon's advertising interval as heard here (None: not heard yet)."""
        return {a: s.interval for a, s in self._gateway.pipeline.fleet.states.items()}

    def devices(self) -> list[DeviceDoc]:
        """Every tracked shopper device with a position, by pseudonym."""
        pipeline = self._gateway.pipeline
        out: list[DeviceDoc] = []
        for device, tracked in pipeline.presence.devices.items():
            position = tracked.last_position
            if position is None:
                continue
            out.append(
                {
                    "id": pipeline.pseudonym(device),
                    "x": round(position.x, 2),
                    "y": round(position.y, 2),
                    "uncertainty_m": round(position.uncertainty_m, 2),
                    "level": position.level,
                    "zones": pipeline.zones.zones_of(device),
                    "t": position.t,
                }
            )
        return out

    def trace_time(self) -> float:
        """The pipeline's own time: the newest occurrence time it has processed."""
        return self._gateway.pipeline.now

    def counters(self) -> Counters:
        gateway = self._gateway
        stats = gateway.pipeline.stats
        uplink = gateway.uplink
        return Counters(
            adverts_by_receiver=dict(
                sorted(
                    (
                        {r: 0 for r in gateway.store_map.receivers} | gateway.adverts_by_receiver
                    ).items()
                )
            ),
            taps=stats.taps,
            frames=dict(sorted(stats.decode.frames.items())),
            decode_rejected=dict(sorted(stats.decode.rejected.items())),
            presence_rejected=dict(sorted(gateway.pipeline.presence.rejected.items())),
            tracked_devices=len(gateway.pipeline.presence.devices),
            zone_events=dict(sorted(stats.zone_events.items())),
            decisions=dict(sorted(stats.decisions.items())),
            offers_issued=stats.offers_issued,
            redemptions=stats.redemptions,
            outbox_depth=dict(sorted(self.outbox_depths().items())),
            outbox_oldest_age_s=gateway.outbox.oldest_age(self.wall) or 0.0,
            outbox_dropped=dict(sorted(gateway.outbox_dropped.items())),
            disk_full=gateway.work.degraded,
            mqtt_connected=uplink is not None and uplink.stats.connected,
            mqtt_delivered=None if uplink is None else uplink.stats.delivered,
            mqtt_connects=None if uplink is None else uplink.stats.connects,
            mqtt_failures=None if uplink is None else uplink.stats.failures,
            peer_sightings=dict(sorted(gateway.peer_stats.items())),
            downlink_rejected=dict(sorted(gateway.commands.rejections.counts.items())),
            ble_adapters_up=dict(
                sorted(
                    (
                        {name: False for name in gateway.config.sources.ble}
                        | {s.adapter: s.state == "scanning" for s in gateway.ble_sources}
                    ).items()
                )
            ),
            beacons_ok={
                anchor: state.status == "ok"
                for anchor, state in sorted(gateway.pipeline.fleet.states.items())
            },
            beacons_battery_pct={
                anchor: pct
                for anchor in sorted(gateway.pipeline.fleet.states)
                if (pct := gateway.pipeline.fleet.report(anchor, 0.0).battery_pct) is not None
            },
            receiver_offsets_db={  # every receiver of the map: 0 until learned
                r: gateway.pipeline.selfcal.learned.get(r, 0.0)
                for r in sorted(gateway.store_map.receivers)
            },
            inlet_dropped=gateway.summary.dropped,
            decision_latency=gateway.decision_latency,
            delivery_age=gateway.delivery_age,
        )

    def document(self) -> StatusDoc:
        """What `gateway status` shows: pseudonymous ids only."""
        gateway = self._gateway
        runtime = self.runtime
        now = self.wall
        return {
            "gateway": gateway.config.gateway.id,
            "store": gateway.config.gateway.store,
            "version": __version__,
            "ready": runtime.ready,
            "started_at": runtime.started,
            "uptime_s": round(now - runtime.started, 1),
            "sources": self.sources(),
            "tracked_devices": len(gateway.pipeline.presence.devices),
            "zones": {z: n for z, n in self.occupancy().items() if n},
            "last_offers": [
                {
                    "t": d.t,
                    "profile": d.profile_id,
                    "reason": d.reason,
                    "issued": d.issued,
                    "trigger": d.trigger,
                    "campaign": d.campaign,
                }
                for d in reversed(runtime.last_offers)
            ],
            "decisions": dict(gateway.pipeline.stats.decisions),
            "outbox": self.outbox(),
            "mqtt": self.mqtt(),
            "beacons": self.beacons(),
            "loop_lag_ms": round(runtime.loop_lag_s * 1000, 2),
            "reloads": dict(runtime.reloads),
        }
