"""Frames as JSON objects for `gateway decode` (a stable interface: field names follow the
specifications: uuid, major, minor, tx_power in dBm)."""

from __future__ import annotations

from typing import Any

from .model import Frame, IBeacon


def frame_json(frame: Frame | None, reason: str) -> dict[str, Any]:
    if frame is None:
        return {"frame": None, "reason": reason}
    if isinstance(frame, IBeacon):
        return {
            "frame": "ibeacon",
            "uuid": frame.uuid,
            "major": frame.major,
            "minor": frame.minor,
            "tx_power": frame.tx_power,
        }
    raise TypeError(type(frame).__name__)
