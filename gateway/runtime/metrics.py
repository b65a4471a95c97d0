"""Prometheus text exposition (format 0.0.4) of the running gateway, read through its
`StatusView`; and `Runtime`, what the service shell measures about itself.

Everything is read from counters the stages keep anyway; scraping costs a few SQLite
`COUNT(*)`s and no locks (the event loop is single-threaded). By the conventions: every
documented family is there from the first scrape (labelled ones with their known label values
at 0), the start time is a timestamp (`gateway_start_time_seconds`, `process_start_time_seconds`)
rather than an uptime gauge, the standard `process_*` (Linux /proc) and `python_*` families are
written by hand (no client library at run time), and latencies are histograms.
"""

from __future__ import annotations

import bisect
import gc
import math
import os
import platform
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from gateway import __version__
from gateway.clock import Clock
from gateway.model import Frame, OfferDecision, ZoneEventKind
from gateway.offers.rules import Reason
from gateway.store.outbox import LOCAL_STREAMS
from gateway.sync.envelopes import PRIORITY

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


# Seconds from a sighting to the offer decision it caused (wall clock at the commit minus the
# decision's occurrence time), and from queueing an event to the broker's acknowledgement.
DECISION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
)

# Label values known in advance, so that their series exist (at 0) from the first scrape. The
# tests check these lists against the reasons the stages' sources can produce.
DECODE_REASONS = (
    "ad_truncated", "apple_not_ibeacon", "ibeacon_short", "altbeacon_short", "eddystone_empty",
    "eddystone_uid_short", "eddystone_url_short", "eddystone_url_long", "eddystone_url_scheme",
    "eddystone_url_reserved_byte", "eddystone_tlm_short", "eddystone_etlm_short",
    "eddystone_tlm_version", "eddystone_eid_short", "eddystone_unknown_frame",
    "unknown_manufacturer", "unknown_service", "no_beacon_data",
)  # fmt: skip
PRESENCE_REASONS = ("unknown_receiver", "rssi_out_of_range", "clock_backwards", "rssi_outlier")
FRAME_KINDS = tuple(str(kind.kind) for kind in get_args(Frame))
RELOAD_RESULTS = ("ok", "failed")
PEER_RESULTS = ("accepted", "rejected_sighting")
# Present from the first scrape: the refusals an attack or a misconfigured backend causes.
DOWNLINK_REASONS = ("unsigned", "bad_signature", "too_large", "expired", "internal_error")


@dataclass(slots=True)
class Histogram:
    """A Prometheus histogram: cumulative `le` buckets, sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if math.isinf(bound) else _number(bound), running))
        return out


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
        self._sample(name, value, labels)

    def _sample(self, name: str, value: float, labels: dict[str, str]) -> None:
        label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
        sample = f"{name}{{{label_text}}}" if label_text else name
        self.lines.append(f"{sample} {_number(value)}")

    def family(self, name: str, metric_type: str, help_text: str) -> None:
        """Declare a family that may have no sample yet (its labels are not known)."""
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {metric_type}")

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self.family(name, "histogram", help_text)
        for le, n in histogram.buckets():
            self._sample(f"{name}_bucket", n, {"le": le})
        self._sample(f"{name}_sum", histogram.total, {})
        self._sample(f"{name}_count", histogram.count, {})

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _with_known(counts: dict[str, int], known: Iterable[str]) -> dict[str, int]:
    """The counts, with every known label value present (0 if never seen)."""
    return dict(sorted(({k: 0 for k in known} | counts).items()))


def exposition(view: StatusView) -> str:
    runtime = view.runtime
    c = view.counters()
    out = Exposition()
    m = out.metric
    m("gateway_build_info", "gauge", "Version of the running gateway.", 1, version=__version__)
    m(
        "gateway_start_time_seconds",
        "gauge",
        "When the daemon started, Unix seconds (uptime: time() - this).",
        runtime.started,
    )
    m("gateway_ready", "gauge", "1 once store, sinks and sources are up.", int(runtime.ready))
    out.family("gateway_adverts_total", "counter", "BLE adverts received, by receiver.")
    for receiver, n in c.adverts_by_receiver.items():
        m("gateway_adverts_total", "counter", "", n, receiver=receiver)
    m("gateway_nfc_taps_total", "counter", "NFC taps received.", c.taps)
    for kind, n in _with_known(c.frames, FRAME_KINDS).items():
        m("gateway_frames_total", "counter", "Adverts decoded, by frame type.", n, frame=kind)
    for reason, n in _with_known(c.decode_rejected, DECODE_REASONS).items():
        m(
            "gateway_decode_rejected_total",
            "counter",
            "Adverts not decoded, by reason.",
            n,
            reason=reason,
        )
    for reason, n in _with_known(c.presence_rejected, PRESENCE_REASONS).items():
        m(
            "gateway_presence_rejected_total",
            "counter",
            "Readings the presence stage refused.",
            n,
            reason=reason,
        )
    m("gateway_tracked_devices", "gauge", "Shopper devices currently tracked.", c.tracked_devices)
    out.family("gateway_zone_occupancy", "gauge", "Devices inside each zone now.")
    for zone, n in sorted(view.occupancy().items()):
        m("gateway_zone_occupancy", "gauge", "", n, zone=zone)
    for kind, n in _with_known(c.zone_events, map(str, ZoneEventKind)).items():
        m("gateway_zone_events_total", "counter", "Zone events, by kind.", n, kind=kind)
    for reason, n in _with_known(c.decisions, map(str, Reason)).items():
        m(
            "gateway_offer_decisions_total",
            "counter",
            "Offer decisions by reason; issued ones have reason cart_item_in_stock.",
            n,
            reason=reason,
        )
    m("gateway_offers_issued_total", "counter", "Offers issued.", c.offers_issued)
    m("gateway_redemptions_total", "counter", "Offers redeemed at a touchpoint.", c.redemptions)
    for stream, n in _with_known(c.outbox_depth, (*PRIORITY, *LOCAL_STREAMS)).items():
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
    known_drops = [f"{reason}:{stream}" for reason in ("expired", "shed") for stream in PRIORITY]
    for key, n in _with_known(c.outbox_dropped, known_drops).items():
        reason, _, stream = key.partition(":")
        m(
            "gateway_outbox_dropped_total",
            "counter",
            "Events dropped unsent since start: expired (TTL), shed (quota) or disk_full, by "
            "stream.",
            n,
            reason=reason,
            stream=stream,
        )
    out.histogram(
        "gateway_outbox_delivery_age_seconds",
        "Seconds from queueing an event to the broker's acknowledgement.",
        c.delivery_age,
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
    m(
        "gateway_mqtt_delivered_total",
        "counter",
        "Events the broker acknowledged.",
        c.mqtt_delivered or 0,
    )
    m(
        "gateway_mqtt_connects_total",
        "counter",
        "Successful broker connections.",
        c.mqtt_connects or 0,
    )
    m(
        "gateway_mqtt_failures_total",
        "counter",
        "Broker sessions that failed.",
        c.mqtt_failures or 0,
    )
    for result, n in _with_known(c.peer_sightings, PEER_RESULTS).items():
        m(
            "gateway_peer_sightings_total",
            "counter",
            "Peer sightings, accepted or rejected.",
            n,
            result=result,
        )
    for reason, n in _with_known(c.downlink_rejected, DOWNLINK_REASONS).items():
        m(
            "gateway_downlink_rejected_total",
            "counter",
            "Downlink documents and commands refused, by reason (each counted; logged and "
            "uplinked at a bounded rate).",
            n,
            reason=reason,
        )
    out.family("gateway_ble_adapter_up", "gauge", "1 while the adapter is scanning.")
    for adapter, up in c.ble_adapters_up.items():
        m("gateway_ble_adapter_up", "gauge", "", int(up), adapter=adapter)
    out.family(
        "gateway_beacon_ok",
        "gauge",
        "1 while a fixed beacon is healthy (0: missing, low battery, slow, not yet heard).",
    )
    for anchor, ok in c.beacons_ok.items():
        m("gateway_beacon_ok", "gauge", "", int(ok), beacon=anchor)
    out.family(
        "gateway_beacon_battery_percent",
        "gauge",
        "A fixed beacon's battery by its TLM voltage and profile (only once reported).",
    )
    for anchor, pct in c.beacons_battery_pct.items():
        m("gateway_beacon_battery_percent", "gauge", "", pct, beacon=anchor)
    out.family(
        "gateway_receiver_offset_db",
        "gauge",
        "A receiver's offset learned online from the fixed beacons, dB (self-calibration).",
    )
    for receiver, offset in c.receiver_offsets_db.items():
        m("gateway_receiver_offset_db", "gauge", "", offset, receiver=receiver)
    out.histogram(
        "gateway_decision_latency_seconds",
        "Seconds from the sighting to the offer decision it caused (wall clock at commit).",
        c.decision_latency,
    )
    m(
        "gateway_loop_lag_seconds",
        "gauge",
        "Event-loop lag at the last watchdog tick.",
        runtime.loop_lag_s,
    )
    m("gateway_loop_lag_max_seconds", "gauge", "Worst event-loop lag seen.", runtime.loop_lag_max_s)
    for result, n in _with_known(dict(runtime.reloads), RELOAD_RESULTS).items():
        m("gateway_reloads_total", "counter", "SIGHUP reloads.", n, result=result)
    m(
        "gateway_inlet_dropped_total",
        "counter",
        "Sightings dropped on a full queue.",
        c.inlet_dropped,
    )
    process_metrics(out)
    python_metrics(out)
    return out.text()


def process_metrics(out: Exposition, proc: Path = Path("/proc")) -> None:
    """The standard process_* families from Linux /proc (as the client libraries export
    them); none where /proc is not there."""
    try:
        stat = (proc / "self" / "stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in (proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        fds = len(os.listdir(proc / "self" / "fd"))
        limits = (proc / "self" / "limits").read_text()
    except (OSError, StopIteration, ValueError):
        return
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 is [0]
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    m = out.metric
    m(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        (int(fields[11]) + int(fields[12])) / ticks,
    )
    m(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        int(fields[20]),
    )
    m(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        int(fields[21]) * page,
    )
    m(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot + int(fields[19]) / ticks,
    )
    m("process_open_fds", "gauge", "Number of open file descriptors.", fds)
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            if soft.isdigit():
                m("process_max_fds", "gauge", "Maximum number of open file descriptors.", int(soft))


def python_metrics(out: Exposition) -> None:
    """python_info and the garbage collector's counts, as the client libraries name them."""
    major, minor, patch = platform.python_version_tuple()
    out.metric(
        "python_info",
        "gauge",
        "Python platform information.",
        1,
        implementation=platform.python_implementation(),
        major=major,
        minor=minor,
        patchlevel=patch,
        version=platform.python_version(),
    )
    stats = gc.get_stats()
    for name, key, help_text in (
        ("python_gc_objects_collected_total", "collected", "Objects collected during gc."),
        (
            "python_gc_objects_uncollectable_total",
            "uncollectable",
            "Uncollectable objects found during GC.",
        ),
        (
            "python_gc_collections_total",
            "collections",
            "Number of times this generation was collected.",
        ),
    ):
        for generation, stat in enumerate(stats):
            out.metric(name, "counter", help_text, stat[key], generation=str(generation))
