"""Typed, declarative configuration loaded from TOML.

Each section is a dataclass whose fields carry their documentation in ``metadata["doc"]``;
the loader walks the TOML document against those dataclasses and rejects unknown keys,
wrong types and out-of-range values with one line naming the file, the key and the fix.
``docs/config.md`` is generated from the same metadata (``gateway config-doc``), and a test
keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import resources
from gateway.config.edges import MqttSection, OutboxSection, SinksSection, SourcesSection
from gateway.config.schema import ConfigError, build_section, doc, topic_level_problem
from gateway.config.secrets import secret_problem
from gateway.config.service import ConsoleSection, ServiceSection
from gateway.offers.rules import LimitsSection, PickupDiscountSection

DEMO_STORE = "demo-bookstore"  # the shipped demo: the only store the public demo keys may serve
METHOD_NAMES = ("max_likelihood", "least_squares", "weighted_centroid", "nearest", "grid")


@dataclass(frozen=True, slots=True)
class GatewaySection:
    id: str = doc("Name of this gateway, unique within its store.", default="gw-demo-1")
    store: str = doc("Store identifier used in events and topics.", default=DEMO_STORE)
    state_dir: str = doc(
        "Directory for the SQLite state (profiles, offers, outbox). Relative to the config "
        "file's directory.",
        default="state",
    )
    timezone: str = doc(
        "IANA time zone of the store: defines the store day for caps and quiet hours.",
        default="Europe/Berlin",
    )
    pseudonym_key: str = doc(
        "Hex secret (≥ 16 bytes) used to derive pseudonymous device ids; raw MAC addresses "
        "and NFC UIDs never leave the box.",
        default="6c6f63616c2d64656d6f2d6b65792d30",
    )

    retention_days: float = doc(
        "Decisions, ended offers and dead-lettered pushes recorded longer ago than this are "
        "deleted from the box (checked hourly). Raw sightings are never stored.",
        default=30.0,
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not 1 <= self.retention_days <= 400:
            problems["retention_days"] = "must be between 1 and 400 days"
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems["timezone"] = f"unknown time zone {self.timezone!r}; use e.g. 'Europe/Paris'"
        if problem := secret_problem(self.pseudonym_key):
            problems["pseudonym_key"] = problem
        if not self.id.strip():
            problems["id"] = "must not be empty"
        for name in ("id", "store"):
            if problem := topic_level_problem(getattr(self, name)):
                problems[name] = f"{problem} (it is one MQTT topic level)"
        return problems


@dataclass(frozen=True, slots=True)
class MapSection:
    path: str = doc(
        "Store map (GeoJSON FeatureCollection in local metres). Relative to the config "
        "file's directory, else to the shipped data directory.",
        default="geofences/demo-bookstore.geojson",
    )


@dataclass(frozen=True, slots=True)
class PresenceSection:
    device_profile: str = doc(
        "Hardware profile (firmware_profiles/beacons/NAME.toml) assumed for shopper devices "
        "whose frames carry no calibrated power.",
        default="phone-app-ibeacon",
    )
    measured_power: float | None = doc(
        "Override: RSSI in dBm at 1 m for all devices in this store (else per frame/profile).",
        default=None,
    )
    path_loss_exponent: float | None = doc(
        "Override: log-distance path-loss exponent for this store (else the profile's).",
        default=None,
    )
    process_noise_db: float = doc(
        "RSSI filter: how fast the true signal may drift, dB per √s (higher follows faster).",
        default=2.0,
    )
    measurement_noise_db: float = doc(
        "RSSI filter: standard deviation of one reading around the true level, dB.",
        default=5.0,
    )
    outlier_sigma: float = doc(
        "RSSI filter: readings further than this many standard deviations from the "
        "prediction are rejected as outliers (counted).",
        default=3.5,
    )
    stale_after_s: float = doc(
        "A receiver's reading of a device is dropped after this silence; a device with no "
        "fresh reading at all is forgotten and leaves its zones.",
        default=10.0,
    )
    method: str = doc(
        "Position method: 'max_likelihood' (RSSI-domain, resolves mirror images; default), "
        "'least_squares' (range-domain), 'weighted_centroid', 'nearest', or 'grid' (a "
        "forward filter over the map's walkable grid: walls, obstacles, walking speed; best "
        "with a survey).",
        default="max_likelihood",
    )
    survey: str | None = doc(
        "Site survey file (`gateway survey ... -o SITE.json`): this room's per-receiver gain, "
        "path-loss exponent and radio map, used by every method (the radio map by 'grid').",
        default=None,
    )
    shadowing_db: float = doc(
        "Slow shadowing the filter cannot remove (shelves, bodies), dB: weights receivers "
        "in the position fit.",
        default=3.0,
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.method not in METHOD_NAMES:
            problems["method"] = "use one of " + ", ".join(repr(m) for m in METHOD_NAMES)
        for key in (
            "process_noise_db",
            "measurement_noise_db",
            "outlier_sigma",
            "stale_after_s",
            "shadowing_db",
        ):
            if getattr(self, key) <= 0:
                problems[key] = "must be greater than 0"
        if self.path_loss_exponent is not None and not 1.0 <= self.path_loss_exponent <= 6.0:
            problems["path_loss_exponent"] = "must be between 1.0 and 6.0"
        if self.measured_power is not None and not -120 <= self.measured_power <= 0:
            problems["measured_power"] = "must be between -120 and 0 dBm"
        return problems


@dataclass(frozen=True, slots=True)
class ZonesSection:
    hysteresis_m: float = doc(
        "Default exit margin: a device leaves a zone only when it is this far outside it "
        "(a zone's own `hysteresis_m` property wins).",
        default=1.0,
    )
    dwell_s: float = doc(
        "Default time inside a zone before a dwell event (a zone's `dwell_s` property wins).",
        default=20.0,
    )
    min_inside_s: float = doc(
        "A device must be inside a zone this long before the enter event is emitted.",
        default=1.0,
    )
    min_outside_s: float = doc(
        "A device must stay beyond the exit margin this long before the exit event.",
        default=3.0,
    )

    def validate(self) -> dict[str, str]:
        problems = {}
        for key in ("hysteresis_m", "dwell_s", "min_inside_s", "min_outside_s"):
            if getattr(self, key) < 0:
                problems[key] = "must not be negative"
        return problems


@dataclass(frozen=True, slots=True)
class OffersSection:
    pickup_discount: PickupDiscountSection = doc(
        "The flagship campaign.", default_factory=PickupDiscountSection
    )
    campaigns: dict[str, PickupDiscountSection] = doc(
        "More campaigns of the same kind, by id (`[offers.campaigns.<id>]`; the id is the "
        "campaign id). Campaigns synced from the backend replace all local ones.",
        default_factory=dict,
    )
    limits: LimitsSection = doc(
        "Limits across campaigns, enforced before any push.", default_factory=LimitsSection
    )

    def validate(self) -> dict[str, str]:
        if self.pickup_discount.campaign in self.campaigns:
            return {
                f"campaigns.{self.pickup_discount.campaign}": "the flagship campaign already "
                "has this id; pick another"
            }
        return {}

    def all_campaigns(self) -> list[PickupDiscountSection]:
        return [self.pickup_discount] + [c.with_id(k) for k, c in self.campaigns.items()]


@dataclass(frozen=True, slots=True)
class TouchpointSection:
    zone: str = doc("Zone id where this NFC reader stands.")
    redeem: bool = doc(
        "Taps here may redeem issued offers (only with a verified loyalty token).",
        default=False,
    )
    offer_on_tap: bool = doc(
        "A tap here by a recognised shopper is an offer trigger (e.g. a 'tap for your deal' "
        "shelf tag).",
        default=False,
    )
    reader_profile: str = doc(
        "Reader hardware profile (firmware_profiles/readers/NAME.toml) whose nfcpy device "
        "string opens the reader. Empty with no `device`: taps come from replay only.",
        default="",
    )
    device: str = doc(
        "nfcpy device string overriding the profile's, e.g. 'usb:072f:2200', "
        "'tty:S0:pn532' or 'udp:127.0.0.1:54330' (simulated).",
        default="",
    )


@dataclass(frozen=True, slots=True)
class NfcSection:
    loyalty_key: str = doc(
        "Hex HMAC key that signs loyalty tokens; a tap redeems only with a verified token.",
        default="64656d6f2d6c6f79616c74792d6b6579",
    )
    debounce_s: float = doc(
        "Taps of the same tag on the same reader within this window count once.", default=3.0
    )
    touchpoints: dict[str, TouchpointSection] = doc(
        "NFC readers by id (table per reader: zone, redeem).",
        default_factory=lambda: {
            "counter-reader": TouchpointSection(zone="pickup-counter", redeem=True)
        },
    )

    def validate(self) -> dict[str, str]:
        problem = secret_problem(self.loyalty_key)
        return {"loyalty_key": problem} if problem else {}


@dataclass(frozen=True, slots=True)
class FleetSection:
    missing_after_s: float = doc(
        "A fixed beacon not heard for this long is reported missing.", default=60.0
    )
    low_battery_pct: float = doc(
        "Below this battery level (from Eddystone-TLM voltage and the beacon's profile) a "
        "beacon is reported low_battery.",
        default=15.0,
    )

    def validate(self) -> dict[str, str]:
        if self.missing_after_s <= 0:
            return {"missing_after_s": "must be greater than 0"}
        if not 0 <= self.low_battery_pct <= 100:
            return {"low_battery_pct": "must be between 0 and 100"}
        return {}


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySection = doc("Identity of this box.", default_factory=GatewaySection)
    map: MapSection = doc("The store map.", default_factory=MapSection)
    presence: PresenceSection = doc(
        "RSSI filtering, distance and position.", default_factory=PresenceSection
    )
    zones: ZonesSection = doc("Zone events.", default_factory=ZonesSection)
    offers: OffersSection = doc("Offer campaigns.", default_factory=OffersSection)
    nfc: NfcSection = doc("NFC touchpoints.", default_factory=NfcSection)
    fleet: FleetSection = doc("Health of the fixed beacons.", default_factory=FleetSection)
    sinks: SinksSection = doc("Local push sinks.", default_factory=SinksSection)
    sources: SourcesSection = doc("Where sightings come from.", default_factory=SourcesSection)
    mqtt: MqttSection = doc("The backend broker.", default_factory=MqttSection)
    outbox: OutboxSection = doc(
        "Bounds of the store-and-forward queue.", default_factory=OutboxSection
    )
    service: ServiceSection = doc(
        "Running as a service: control endpoint, shutdown, logs.", default_factory=ServiceSection
    )
    console: ConsoleSection = doc(
        "The staff console on the control endpoint.", default_factory=ConsoleSection
    )
    # Not a TOML key: the directory relative paths resolve against.
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def resolve(self, relative: str, *, shared: bool = True) -> Path:
        """Resolve a path from the config: config dir first, then shipped data."""
        path = Path(relative).expanduser()
        if path.is_absolute():
            return path
        local = self.base_dir / path
        if local.exists() or not shared:
            return local
        shipped = resources.shared_path(relative)
        return shipped if shipped is not None else local

    @property
    def state_path(self) -> Path:
        return self.resolve(self.gateway.state_dir, shared=False)

    def validate(self) -> dict[str, str]:
        """Across sections: the demo's public keys only for the demo store. They are in the
        source code, so with them anyone can forge loyalty cards and undo pseudonyms."""
        problems: dict[str, str] = {}
        if self.gateway.store == DEMO_STORE:
            return problems
        fix = "the public demo key is for the demo store only; make one with `gateway secret`"
        if self.gateway.pseudonym_key == GatewaySection().pseudonym_key:
            problems["gateway.pseudonym_key"] = fix
        if self.nfc.loyalty_key == NfcSection().loyalty_key:
            problems["nfc.loyalty_key"] = fix
        return problems


def parse_config(text: str, file: str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    config = build_section(Config, data, file, "")
    return dataclasses.replace(config, base_dir=base_dir or Path("."))


def load_config(path: str | Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config(base_dir=Path.cwd())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found; pass an existing --config path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc}") from None
    return parse_config(text, str(p), p.resolve().parent)
