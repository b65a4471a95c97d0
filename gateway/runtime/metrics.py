"""Prometheus text exposition (format 0.0.4) of the running gateway, read through its
`StatusView`; and `Runtime`, what the service shell measures about itself.

Everything is read from counters the stages keep anyway; scraping costs a few SQLite
`COUNT(*)`s and no locks (the event loop is single-threaded).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.clock import Clock
from gateway.model import OfferDecision

if TYPE_CHECKING:
    from gateway.runtime.status import StatusView


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


def exposition(view: StatusView) -> str:
    runtime = view.runtime
    c = view.counters()
    out = Exposition()
    m = out.metric
    m("gateway_build_info", "gauge", "Version of the running gateway.", 1, version=__version__)
    m(
        "gateway_up_seconds",
        "gauge",
        "Seconds since the daemon started.",
        view.wall - runtime.started,
    )
    m("gateway_ready", "gauge", "1 once store, sinks and sources are up.", int(runtime.ready))
    for receiver, n in c.adverts_by_receiver.items():
        m(
            "gateway_adverts_total",
            "counter",
            "BLE adverts received, by receiver.",
            n,
            receiver=receiver,
        )
    m("gateway_nfc_taps_total", "counter", "NFC taps received.", c.taps)
    for kind, n in c.frames.items():
        m("gateway_frames_total", "counter", "Adverts decoded, by frame type.", n, frame=kind)
    for reason, n in c.decode_rejected.items():
        m(
            "gateway_decode_rejected_total",
            "counter",
            "Adverts not decoded, by reason.",
            n,
            reason=reason,
        )
    for reason, n in c.presence_rejected.items():
        m(
            "gateway_presence_rejected_total",
            "counter",
            "Readings the presence stage refused.",
            n,
            reason=reason,
        )
    m("gateway_tracked_devices", "gauge", "Shopper devices currently tracked.", c.tracked_devices)
    for zone, n in sorted(view.occupancy().items()):
        m("gateway_zone_occupancy", "gauge", "Devices inside each zone now.", n, zone=zone)
    for kind, n in c.zone_events.items():
        m("gateway_zone_events_total", "counter", "Zone events, by kind.", n, kind=kind)
    for reason, n in c.decisions.items():
        m(
            "gateway_offer_decisions_total",
            "counter",
            "Offer decisions by reason; issued ones have reason cart_item_in_stock.",
            n,
            reason=reason,
        )
    m("gateway_offers_issued_total", "counter", "Offers issued.", c.offers_issued)
    m("gateway_redemptions_total", "counter", "Offers redeemed at a touchpoint.", c.redemptions)
    for stream, n in c.outbox_depth.items():
        m(
            "gateway_outbox_depth",
            "gauge",
            "Events waiting in the outbox, by stream.",
            n,
            stream=stream,
        )
    m(
        "gateway_outbox_oldest_age_seconds",
        "gauge",
        "Seconds the longest-waiting event has been queued.",
        c.outbox_oldest_age_s,
    )
    for key, n in c.outbox_dropped.items():
        reason, _, stream = key.partition(":")
        m(
            "gateway_outbox_dropped_total",
            "counter",
            "Events dropped unsent since start: expired (TTL) or shed (quota), by stream.",
            n,
            reason=reason,
            stream=stream,
        )
    m(
        "gateway_state_disk_full",
        "gauge",
        "1 while the state disk is full (decisions in memory, outbox shed).",
        int(c.disk_full),
    )
    m(
        "gateway_mqtt_connected",
        "gauge",
        "1 while connected to the backend broker.",
        int(c.mqtt_connected),
    )
    if c.mqtt_delivered is not None:
        m(
            "gateway_mqtt_delivered_total",
            "counter",
            "Events the broker acknowledged.",
            c.mqtt_delivered,
        )
    if c.mqtt_connects is not None:
        m(
            "gateway_mqtt_connects_total",
            "counter",
            "Successful broker connections.",
            c.mqtt_connects,
        )
    if c.mqtt_failures is not None:
        m("gateway_mqtt_failures_total", "counter", "Broker sessions that failed.", c.mqtt_failures)
    for result, n in c.peer_sightings.items():
        m(
            "gateway_peer_sightings_total",
            "counter",
            "Peer sightings, accepted or rejected.",
            n,
            result=result,
        )
    for reason, n in c.downlink_rejected.items():
        m(
            "gateway_downlink_rejected_total",
            "counter",
            "Downlink documents and commands refused, by reason (each counted; logged and "
            "uplinked at a bounded rate).",
            n,
            reason=reason,
        )
    for adapter, up in c.ble_adapters_up.items():
        m(
            "gateway_ble_adapter_up",
            "gauge",
            "1 while the adapter is scanning.",
            int(up),
            adapter=adapter,
        )
    for anchor, ok in c.beacons_ok.items():
        m(
            "gateway_beacon_ok",
            "gauge",
            "1 while a fixed beacon is healthy (0: missing, low battery, slow, not yet heard).",
            int(ok),
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
        c.inlet_dropped,
    )
    return out.text()
