"""Frames as JSON objects for `gateway decode`.

A stable interface: conformance checks drive it. Field names follow the specifications:
uuid (8-4-4-4-12, lower case), major, minor, tx_power (dBm, as carried: at 1 m for iBeacon
and AltBeacon, at 0 m for Eddystone), namespace and instance (hex), url, voltage (mV),
temperature (°C), adv_count, sec_count (0.1 s units) and uptime (s), eid (hex); `note` when
a frame was decoded from the whole leading structures of a payload with trailing garbage.
"""

from __future__ import annotations

from typing import Any

from gateway.decode.ble import format_uuid
from gateway.model import (
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    Frame,
    IBeacon,
)


def frame_json(frame: Frame | None, reason: str) -> dict[str, Any]:
    if frame is None:
        return {"frame": None, "reason": reason}
    out: dict[str, Any] = {"frame": frame.kind}
    if reason:  # decoded all the same, with a remark (ad_trailing_garbage)
        out["note"] = reason
    if isinstance(frame, IBeacon):
        out |= {
            "uuid": frame.uuid,
            "major": frame.major,
            "minor": frame.minor,
            "tx_power": frame.tx_power,
        }
    elif isinstance(frame, AltBeacon):
        raw = bytes.fromhex(frame.beacon_id)
        out |= {
            "company_id": frame.company_id,
            "beacon_id": frame.beacon_id,
            # The customary split of the 20-byte id (id1 = UUID, id2, id3), as readers show it.
            "uuid": format_uuid(raw[:16]),
            "major": int.from_bytes(raw[16:18], "big"),
            "minor": int.from_bytes(raw[18:20], "big"),
            "tx_power": frame.tx_power,
            "mfg_reserved": frame.mfg_reserved,
        }
    elif isinstance(frame, EddystoneUID):
        out |= {
            "namespace": frame.namespace,
            "instance": frame.instance,
            "tx_power": frame.tx_power,
        }
    elif isinstance(frame, EddystoneURL):
        out |= {"url": frame.url, "tx_power": frame.tx_power}
    elif isinstance(frame, EddystoneTLM):
        out |= {
            "version": 0,
            "voltage": frame.voltage,
            "temperature": frame.temperature,
            "adv_count": frame.adv_count,
            "sec_count": frame.sec_count,
            "uptime": frame.uptime,
        }
    elif isinstance(frame, EddystoneETLM):
        out |= {"version": 1, "etlm": frame.etlm, "salt": frame.salt, "mic": frame.mic}
    elif isinstance(frame, EddystoneEID):
        out |= {"eid": frame.eid, "tx_power": frame.tx_power}
    return out
