"""Hardware profiles: what a beacon model or NFC reader is expected to do.

One TOML file per model/firmware under `firmware_profiles/beacons/` or
`firmware_profiles/readers/`, validated with the same loader as the config so that a bad
profile is rejected with its file and key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway import resources
from gateway.config.schema import ConfigError, build_section, doc


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconProfile:
    vendor: str = doc("Manufacturer.")
    model: str = doc("Model and firmware.")
    frame_types: list[str] = doc("Frames it advertises, e.g. ['ibeacon', 'eddystone_tlm'].")
    measured_power_dbm: float = doc("RSSI at 1 m in dBm (what iBeacon calls measured power).")
    path_loss_exponent: float = doc("Log-distance exponent hint for a furnished shop floor.")
    advertising_interval_ms: float = doc("Nominal interval between adverts.")
    battery_min_mv: int = doc("TLM voltage at which the battery counts as empty.", default=0)
    battery_max_mv: int = doc("TLM voltage of a fresh battery.", default=0)
    nominal: bool = doc("True: published/typical values, not measured in this store.")
    source: str = doc("Where the numbers come from.", default="")

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not -120 <= self.measured_power_dbm <= 0:
            problems["measured_power_dbm"] = "must be between -120 and 0 dBm"
        if not 1.0 <= self.path_loss_exponent <= 6.0:
            problems["path_loss_exponent"] = "must be between 1.0 and 6.0"
        if self.advertising_interval_ms <= 0:
            problems["advertising_interval_ms"] = "must be greater than 0"
        return problems


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderProfile:
    vendor: str = doc("Manufacturer.")
    model: str = doc("Model.")
    device: str = doc("nfcpy device string, e.g. 'usb:072f:2200' or 'tty:S0:pn532'.")
    nominal: bool = doc("True: published values, not checked on this box.")
    source: str = doc("Where the numbers come from.", default="")


# A profile name is a file name in firmware_profiles/: nothing that could leave that folder,
# overflow a path or hide a NUL.
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _find(kind: str, name: str) -> Path:
    if not PROFILE_NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise ConfigError(
            f"firmware_profiles/{kind}",
            "",
            f"{shown!r} is not a profile name (letters, digits, '.', '_', '-'; at most 64)",
        )
    relative = f"firmware_profiles/{kind}/{name}.toml"
    path = resources.shared_path(relative)
    if path is None:
        raise ConfigError(relative, "", f"no such {kind[:-1]} profile {name!r}")
    return path


def _read(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read profile: {exc}") from None


def load_beacon_profile(name: str) -> BeaconProfile:
    path = _find("beacons", name)
    return build_section(BeaconProfile, _read(path), str(path), "")


def load_reader_profile(name: str) -> ReaderProfile:
    path = _find("readers", name)
    return build_section(ReaderProfile, _read(path), str(path), "")


def profile_names(kind: str) -> list[str]:
    folder = resources.shared_path(f"firmware_profiles/{kind}")
    return sorted(p.stem for p in folder.glob("*.toml")) if folder else []
