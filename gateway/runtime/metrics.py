"""Prometheus text exposition (format 0.0.4) of the running gateway, and the status view.

Everything is read from counters the stages keep anyway; scraping costs a few SQLite
`COUNT(*)`s and no locks (the event loop is single-threaded).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.clock import Clock
from gateway.model import OfferDecision

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway


@dataclass(slots=True)
class Runtime:
    """What the service shell measures about itself (the stages count the rest)."""

    clock: Clock
    started: float = field(init=False, default=0.0)  # wall time
    loop_lag_s: float = 0.0
    loop_lag_max_s: float = 0.0
    reloads: Counter[str] = field(default_factory=Counter)  # ok / failed
    ready: bool = False
    last_offers: deque[OfferDecision] = field(default_factory=lambda: deque(maxlen=20))
    watchdog_pings: int = 0
    rates: RateWindow = field(default_factory=lambda: RateWindow())
    config_file: str = ""

    def __post_init__(self) -> None:
        self.started = self.clock.wall()
        self.rates.samples.append((self.clock.monotonic(), {}))  # rates are defined from the start


class RateWindow:
    """Per-receiver advert rates over roughly the last `span_s` seconds (monotonic time)."""

    def __init__(self, span_s: float = 10.0) -> None:
        self.span_s = span_s
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def rates(self, now: float, counts: Counter[str]) -> dict[str, float]:
        self.samples.append((now, dict(counts)))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.span_s:
            self.samples.popleft()
        then, before = self.samples[0]
        span = now - then
        if span <= 0:
            return {}
        return {r: round((n - before.get(r, 0)) / span, 2) for r, n in sorted(counts.items())}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(
        self, name: str, metric_type: str, help_text: str, value: float, **labels: str
    ) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {metric_type}")
        label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
        sample = f"{name}{{{label_text}}}" if label_text else name
        if math.isnan(value):
            number = "NaN"
        elif math.isinf(value):
            number = "+Inf" if value > 0 else "-Inf"
        else:
            number = repr(float(value)) if not float(value).is_integer() else str(int(value))
        self.lines.append(f"{sample} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(gateway: Gateway, runtime: Runtime) -> str:
    out = Exposition()
    m = out.metric
    stats = gateway.pipeline.stats
    now = gateway.clock.wall()
    m("gateway_build_info", "gauge", "Version of the running gateway.", 1, version=__version__)
    m("gateway_up_seconds", "gauge", "Seconds since the daemon started.", now - runtime.started)
    m("gateway_ready", "gauge", "1 once store, sinks and sources are up.", int(runtime.ready))
    for receiver, n in sorted(gateway.adverts_by_receiver.items()):
        m(
            "gateway_adverts_total",
            "counter",
            "BLE adverts received, by receiver.",
            n,
            receiver=receiver,
        )
    m("gateway_nfc_taps_total", "counter", "NFC taps received.", stats.taps)
    for kind, n in sorted(stats.decode.frames.items()):
        m("gateway_frames_total", "counter", "Adverts decoded, by frame type.", n, frame=kind)
    for reason, n in sorted(stats.decode.rejected.items()):
        m(
            "gateway_decode_rejected_total",
            "counter",
            "Adverts not decoded, by reason.",
            n,
            reason=reason,
        )
    for reason, n in sorted(gateway.pipeline.presence.rejected.items()):
        m(
            "gateway_presence_rejected_total",
            "counter",
            "Readings the presence stage refused.",
            n,
            reason=reason,
        )
    m(
        "gateway_tracked_devices",
        "gauge",
        "Shopper devices currently tracked.",
        len(gateway.pipeline.presence.devices),
    )
    for zone, n in sorted(occupancy(gateway).items()):
        m("gateway_zone_occupancy", "gauge", "Devices inside each zone now.", n, zone=zone)
    for kind, n in sorted(stats.zone_events.items()):
        m("gateway_zone_events_total", "counter", "Zone events, by kind.", n, kind=kind)
    for reason, n in sorted(stats.decisions.items()):
        m(
            "gateway_offer_decisions_total",
            "counter",
            "Offer decisions by reason; issued ones have reason cart_item_in_stock.",
            n,
            reason=reason,
        )
    m("gateway_offers_issued_total", "counter", "Offers issued.", stats.offers_issued)
    m("gateway_redemptions_total", "counter", "Offers redeemed at a touchpoint.", stats.redemptions)
    for stream, n in sorted(outbox_depths(gateway).items()):
        m(
            "gateway_outbox_depth",
            "gauge",
            "Events waiting in the outbox, by stream.",
            n,
            stream=stream,
        )
    age = gateway.outbox.oldest_age(now)
    m(
        "gateway_outbox_oldest_age_seconds",
        "gauge",
        "Seconds the longest-waiting event has been queued.",
        age or 0.0,
    )
    uplink = gateway.uplink
    m(
        "gateway_mqtt_connected",
        "gauge",
        "1 while connected to the backend broker.",
        int(uplink is not None and uplink.stats.connected),
    )
    if uplink is not None:
        m(
            "gateway_mqtt_delivered_total",
            "counter",
            "Events the broker acknowledged.",
            uplink.stats.delivered,
        )
        m(
            "gateway_mqtt_connects_total",
            "counter",
            "Successful broker connections.",
            uplink.stats.connects,
        )
        m(
            "gateway_mqtt_failures_total",
            "counter",
            "Broker sessions that failed.",
            uplink.stats.failures,
        )
    for result, n in sorted(gateway.peer_stats.items()):
        m(
            "gateway_peer_sightings_total",
            "counter",
            "Peer sightings, accepted or rejected.",
            n,
            result=result,
        )
    for source in gateway.ble_sources:
        m(
            "gateway_ble_adapter_up",
            "gauge",
            "1 while the adapter is scanning.",
            int(source.state == "scanning"),
            adapter=source.adapter,
        )
    for anchor, state in sorted(gateway.pipeline.fleet.states.items()):
        m(
            "gateway_beacon_ok",
            "gauge",
            "1 while a fixed beacon is healthy (0: missing, low battery, slow, not yet heard).",
            int(state.status == "ok"),
            beacon=anchor,
        )
    m(
        "gateway_loop_lag_seconds",
        "gauge",
        "Event-loop lag at the last watchdog tick.",
        runtime.loop_lag_s,
    )
    m("gateway_loop_lag_max_seconds", "gauge", "Worst event-loop lag seen.", runtime.loop_lag_max_s)
    for result, n in sorted(runtime.reloads.items()):
        m("gateway_reloads_total", "counter", "SIGHUP reloads.", n, result=result)
    m(
        "gateway_inlet_dropped_total",
        "counter",
        "Sightings dropped on a full queue.",
        gateway.summary.dropped,
    )
    return out.text()


def occupancy(gateway: Gateway) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for device in gateway.pipeline.zones.visits:
        for zone in gateway.pipeline.zones.zones_of(device):
            counts[zone] += 1
    return {z.id: counts.get(z.id, 0) for z in gateway.store_map.zones}


def outbox_depths(gateway: Gateway) -> dict[str, int]:
    rows = gateway.conn.execute("SELECT stream, COUNT(*) FROM outbox GROUP BY stream").fetchall()
    return {str(stream): int(n) for stream, n in rows}


def sources_view(gateway: Gateway, runtime: Runtime) -> dict[str, Any]:
    return {
        "adverts_by_receiver": dict(sorted(gateway.adverts_by_receiver.items())),
        "rates_per_s": runtime.rates.rates(gateway.clock.monotonic(), gateway.adverts_by_receiver),
        "ble_adapters": {s.adapter: s.state for s in gateway.ble_sources},
        "nfc_readers": {s.reader: s.state for s in gateway.nfc_sources},
        "taps": gateway.pipeline.stats.taps,
    }


def outbox_view(gateway: Gateway, now: float) -> dict[str, Any]:
    return {
        "depth": outbox_depths(gateway),
        "oldest_age_s": round(gateway.outbox.oldest_age(now) or 0.0, 1),
    }


def mqtt_view(gateway: Gateway) -> dict[str, Any]:
    uplink = gateway.uplink
    return {
        "enabled": gateway.config.mqtt.enabled,
        "connected": bool(uplink and uplink.stats.connected),
        "delivered": uplink.stats.delivered if uplink else 0,
        "last_error": uplink.stats.last_error if uplink else "",
    }


def beacons_view(gateway: Gateway) -> dict[str, dict[str, Any]]:
    now = gateway.pipeline.now
    return {
        anchor: {
            "status": state.status,
            "battery_mv": state.battery_mv,
            "seen_s_ago": None if state.last_seen is None else round(now - state.last_seen, 1),
        }
        for anchor, state in gateway.pipeline.fleet.states.items()
    }


def status(gateway: Gateway, runtime: Runtime) -> dict[str, Any]:
    """What `gateway status` shows: pseudonymous ids only."""
    stats = gateway.pipeline.stats
    now = gateway.clock.wall()
    return {
        "gateway": gateway.config.gateway.id,
        "store": gateway.config.gateway.store,
        "version": __version__,
        "ready": runtime.ready,
        "started_at": runtime.started,
        "uptime_s": round(now - runtime.started, 1),
        "sources": sources_view(gateway, runtime),
        "tracked_devices": len(gateway.pipeline.presence.devices),
        "zones": {z: n for z, n in occupancy(gateway).items() if n},
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
        "decisions": dict(stats.decisions),
        "outbox": outbox_view(gateway, now),
        "mqtt": mqtt_view(gateway),
        "beacons": beacons_view(gateway),
        "loop_lag_ms": round(runtime.loop_lag_s * 1000, 2),
        "reloads": dict(runtime.reloads),
    }
