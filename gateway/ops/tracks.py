"""A trace's shopper devices as position tracks, for `gateway fences render --trace`: the
trace replayed through decode and presence only (no zones, offers or state)."""

from __future__ import annotations

from pathlib import Path

from gateway.config.sections import Config
from gateway.decode import ble as decode
from gateway.model import Advert
from gateway.pipeline.tracking import tracker_for
from gateway.site.hardware import load_beacon_profile
from gateway.site.render import Track
from gateway.site.storemap import StoreMap
from gateway.trace import parse_line


def trace_tracks(config: Config, store: StoreMap, trace: Path) -> dict[str, Track]:
    """Replay a trace through decode and presence; the positions of every shopper device."""
    tracker = tracker_for(
        config,
        store,
        load_beacon_profile(config.presence.device_profile),
        solve_interval_s=0.5,
    )
    anchors = {a.identity for a in store.anchors}
    labels: dict[str, str] = {}
    tracks: dict[str, Track] = {}
    with trace.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            item = parse_line(text, number)
            if not isinstance(item, Advert):
                continue  # taps, blank and bad lines (the replay command reports those)
            frame, _reason = decode.decode_advert(item)
            if frame is None or frame.identity is None or frame.identity in anchors:
                continue
            position = tracker.observe(
                frame.identity, item.receiver, item.t, item.rssi, frame.measured_power
            )
            if position is None:
                continue
            label = labels.setdefault(frame.identity, f"device {len(labels) + 1}")
            tracks.setdefault(label, []).append(position)
    return tracks
