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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import resources


def _secret_problem(text: str) -> str:
    """'' for a usable hex secret of at least 16 bytes, else what is wrong with it."""
    try:
        short = len(bytes.fromhex(text)) < 16
    except ValueError:
        return "not hex: give at least 32 hex digits"
    return "too short: give at least 32 hex digits" if short else ""


METHOD_NAMES = ("max_likelihood", "least_squares", "weighted_centroid", "nearest")


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its documentation attached."""
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True, slots=True)
class GatewaySection:
    id: str = doc("Name of this gateway, unique within its store.", default="gw-demo-1")
    store: str = doc("Store identifier used in events and topics.", default="demo-bookstore")
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
        if problem := _secret_problem(self.pseudonym_key):
            problems["pseudonym_key"] = problem
        if not self.id.strip():
            problems["id"] = "must not be empty"
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
        "'least_squares' (range-domain), 'weighted_centroid' or 'nearest'.",
        default="max_likelihood",
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
class PickupDiscountSection:
    enabled: bool = doc("Run the pickup-discount campaign.", default=True)
    campaign: str = doc("Campaign id used in events and codes.", default="pickup-discount")
    percent: int = doc("Discount in percent.", default=10)
    enter_zones: list[str] = doc(
        "Zone ids whose enter event triggers the offer (e.g. the entrance).",
        default_factory=lambda: ["entrance"],
    )
    dwell_at_item_zone: bool = doc(
        "Also trigger when the shopper dwells in the zone where the cart item is stocked.",
        default=True,
    )
    pass_zones: list[str] = doc(
        "Zone ids (e.g. the pavement in front of the window) whose enter event triggers the "
        "offer for a shopper passing by.",
        default_factory=list,
    )
    segments: list[str] = doc(
        "Audience: only shoppers in at least one of these segments (from their profile). "
        "Empty: every consenting shopper.",
        default_factory=list,
    )
    priority: int = doc(
        "When several campaigns trigger on the same event, the highest priority decides "
        "first; once one issues an offer the others are recorded as 'superseded'.",
        default=0,
    )
    validity_s: int = doc("How long an issued code stays redeemable, in seconds.", default=7200)
    max_per_day: int = doc(
        "At most this many offers of this campaign per shopper per store day.", default=1
    )
    message: str = doc(
        "Push text; {title} and {percent} are filled in.",
        default="{title} from your cart is here: pick it up now with {percent} % off",
    )
    messages: dict[str, str] = doc(
        "Push text per shopper language (language tag → template); `message` otherwise.",
        default_factory=lambda: {
            "de": "{title} aus deinem Warenkorb ist hier: jetzt mit {percent} % Rabatt abholen",
            "fr": "{title} de votre panier est ici : à retirer avec {percent} % de remise",
        },
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not 1 <= self.percent <= 90:
            problems["percent"] = "must be between 1 and 90"
        if self.validity_s <= 0:
            problems["validity_s"] = "must be greater than 0"
        if self.max_per_day < 1:
            problems["max_per_day"] = "must be at least 1 (disable the campaign instead)"
        for key, template in [("message", self.message)] + [
            (f"messages.{lang}", t) for lang, t in self.messages.items()
        ]:
            try:
                template.format(title="x", percent=1)
            except (KeyError, IndexError, ValueError):
                problems[key] = "only {title} and {percent} may be used as placeholders"
        return problems

    def with_id(self, campaign: str) -> PickupDiscountSection:
        return dataclasses.replace(self, campaign=campaign)

    def message_for(self, language: str) -> str:
        """The template for a shopper's language: exact tag, then its primary language."""
        return (
            self.messages.get(language) or self.messages.get(language.split("-")[0]) or self.message
        )


@dataclass(frozen=True, slots=True)
class LimitsSection:
    quiet_hours: list[str] = doc(
        "Store-local [start, end] times ('HH:MM') with no pushes at all; may wrap midnight. "
        "Empty list: none.",
        default_factory=lambda: ["20:00", "09:00"],
    )
    cooldown_s: float = doc("No push to a shopper this long after any push.", default=1800.0)
    max_per_day: int = doc(
        "At most this many offers per shopper per store day, all campaigns together.", default=2
    )
    max_per_hour_store: int = doc(
        "At most this many offers per hour in the whole store (a flood stops here).", default=120
    )

    def validate(self) -> dict[str, str]:
        clocks_ok = len(self.quiet_hours) == 2 and all(_is_clock(t) for t in self.quiet_hours)
        if self.quiet_hours and not clocks_ok:
            return {"quiet_hours": "give ['HH:MM', 'HH:MM'] (start, end) or []"}
        if self.cooldown_s < 0:
            return {"cooldown_s": "must not be negative"}
        if self.max_per_day < 1:
            return {"max_per_day": "must be at least 1"}
        if self.max_per_hour_store < 1:
            return {"max_per_hour_store": "must be at least 1"}
        return {}


def _is_clock(text: str) -> bool:
    parts = text.split(":")
    return (
        len(parts) == 2
        and all(p.isdigit() and len(p) == 2 for p in parts)
        and int(parts[0]) < 24
        and int(parts[1]) < 60
    )


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
        problem = _secret_problem(self.loyalty_key)
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
class WebhookSection:
    url: str = doc(
        "In-store push service endpoint (http/https). Empty: no webhook. Pushes wait in the "
        "outbox until a 2xx answer.",
        default="",
    )
    secret: str = doc(
        "HMAC-SHA256 key for the X-Signature header over the body (sha256=<hex>).", default=""
    )
    timeout_s: float = doc("Per-request timeout.", default=5.0)
    max_attempts: int = doc(
        "After this many failed tries a push goes to the dead letters.", default=8
    )
    backoff_max_s: float = doc(
        "Longest wait between tries (exponential with jitter).", default=300.0
    )

    def validate(self) -> dict[str, str]:
        if self.url and not self.url.startswith(("http://", "https://")):
            return {"url": "must start with http:// or https://"}
        if self.url and not self.secret:
            return {"secret": "set a secret so the push service can verify the signature"}
        if self.timeout_s <= 0 or self.backoff_max_s <= 0:
            return {"timeout_s": "timeouts and backoff must be greater than 0"}
        if self.max_attempts < 1:
            return {"max_attempts": "must be at least 1"}
        return {}


@dataclass(frozen=True, slots=True)
class SinksSection:
    stdout: bool = doc("Print each local push as a line on standard output.", default=True)
    push_log: str = doc(
        "JSON-lines file receiving every local push; relative to the state directory. "
        "Empty to disable.",
        default="pushes.jsonl",
    )
    webhook: WebhookSection = doc("Push delivery over HTTP.", default_factory=WebhookSection)
    display: bool = doc(
        "Publish each issued offer for the pickup-counter screen on the store's MQTT "
        "(`{prefix}/{store}/{gateway}/display/{zone}`; item, percent, last 4 code characters).",
        default=False,
    )


@dataclass(frozen=True, slots=True)
class ReplaySection:
    path: str = doc(
        "JSON-lines trace to replay (see docs/trace-format.md). Relative to the config "
        "file's directory, else to the shipped data directory. Empty: no replay source.",
        default="",
    )
    speed: float = doc(
        "Replay speed: 1.0 is real time, 10 ten times faster, 0 as fast as possible.",
        default=0.0,
    )
    keep_times: bool = doc(
        "Replay the recorded times unchanged (forensics). Default: the trace is moved to the "
        "present, its first item at the moment this state first replayed it.",
        default=False,
    )
    start: str = doc(
        "Place the trace's first item here instead of now: 'HH:MM' (store-local, the latest "
        "such time not in the future) or an ISO 8601 date-time. Empty: now.",
        default="",
    )

    def validate(self) -> dict[str, str]:
        if self.speed < 0:
            return {"speed": "must not be negative"}
        if self.start and self.keep_times:
            return {"start": "conflicts with keep_times = true; set one of them"}
        if self.start:
            from gateway.humantime import parse_instant

            try:
                parse_instant(self.start, ZoneInfo("UTC"), 0.0)
            except ValueError as exc:
                return {"start": str(exc)}
        return {}


@dataclass(frozen=True, slots=True)
class BleAdapterSection:
    receiver: str = doc(
        "The map's `gateway` feature id where this adapter stands (positions use it).",
        default="",
    )
    passive: bool = doc(
        "Passive scanning through BlueZ advertisement monitors (needs BlueZ ≥ 5.56 started "
        "with --experimental, kernel ≥ 5.10): the radio never transmits scan requests. "
        "Active scanning (false) works on every BlueZ.",
        default=False,
    )
    min_interval_s: float = doc(
        "Forward an unchanged advert of one address at most this often.", default=0.5
    )
    rssi_delta_db: float = doc(
        "…unless its RSSI moved by at least this much since the last forwarded one.",
        default=6.0,
    )
    silence_restart_s: float = doc(
        "No advert at all for this long means the scanner is stuck: restart it.", default=30.0
    )
    restarts_before_power_cycle: int = doc(
        "After this many failed restarts in a row, power-cycle the adapter through BlueZ.",
        default=2,
    )
    backoff_max_s: float = doc("Longest wait between recovery attempts.", default=60.0)
    address_ttl_s: float = doc(
        "Per-address duplicate-control state is forgotten after this silence (random "
        "addresses rotate; memory stays bounded under a flood of new ones).",
        default=120.0,
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        for key in ("min_interval_s", "silence_restart_s", "backoff_max_s", "address_ttl_s"):
            if getattr(self, key) <= 0:
                problems[key] = "must be greater than 0"
        if self.rssi_delta_db < 0:
            problems["rssi_delta_db"] = "must not be negative"
        if self.restarts_before_power_cycle < 1:
            problems["restarts_before_power_cycle"] = "must be at least 1"
        return problems


@dataclass(frozen=True, slots=True)
class SourcesSection:
    replay: ReplaySection = doc("Replay a recorded trace.", default_factory=ReplaySection)
    ble: dict[str, BleAdapterSection] = doc(
        "BLE adapters to scan with, by BlueZ name (a table per adapter, e.g. "
        "[sources.ble.hci0]); each is a separate source.",
        default_factory=dict,
    )


@dataclass(frozen=True, slots=True)
class MqttSection:
    enabled: bool = doc("Connect to the backend broker (uplink and downlink).", default=False)
    host: str = doc("Broker host name or address.", default="localhost")
    port: int = doc("Broker port (1883 plain, 8883 TLS by convention).", default=1883)
    tls: bool = doc("Use TLS; the system CAs unless `ca_file` is set.", default=False)
    ca_file: str = doc("CA bundle (PEM) that signs the broker's certificate.", default="")
    cert_file: str = doc("Client certificate (PEM) for mutual TLS.", default="")
    key_file: str = doc("Client private key (PEM) for mutual TLS.", default="")
    username: str = doc("User name, if the broker wants one.", default="")
    password: str = doc("Password, if the broker wants one.", default="")
    client_id: str = doc("MQTT client id; default: the gateway id.", default="")
    protocol: str = doc("'5' (default) or '3.1.1' for old brokers.", default="5")
    keepalive_s: int = doc("MQTT keepalive.", default=30)
    session_expiry_s: int = doc(
        "MQTT 5 session expiry: the broker keeps our QoS 1 subscriptions and queued "
        "downlink this long across a drop (clean start is off).",
        default=3600,
    )
    allow_plaintext_remote: bool = doc(
        "Allow an unencrypted connection to a broker that is not on this machine. Off: such "
        "a config is refused at start-up.",
        default=False,
    )
    topic_prefix: str = doc(
        "First topic levels of the contract (docs/asyncapi.yaml).", default="storegate/v1"
    )
    inflight: int = doc("QoS 1 messages in flight at once.", default=64)
    batch_events: int = doc(
        "A backlog drains as CloudEvents JSON batches of up to this many events of one "
        "stream per message (application/cloudevents-batch+json); a lone event is sent on "
        "its own. 1: always one event per message.",
        default=50,
    )
    backoff_max_s: float = doc("Longest wait between reconnection attempts.", default=30.0)
    downlink_key: str = doc(
        "Hex HMAC-SHA256 key that signs downlink documents and commands; unsigned or "
        "wrongly signed ones are rejected. Empty: reject every downlink.",
        default="",
    )
    delivered_retention_s: float = doc(
        "How long the ids of delivered events are remembered (replays within it are not "
        "sent again).",
        default=7 * 86400.0,
    )
    share_sightings: bool = doc(
        "Publish the shopper sightings this gateway hears (time, receiver, RSSI, advertising "
        "data; never the MAC address) to the store's other gateways, QoS 0, on "
        "`{prefix}/{store}/{gateway}/sightings`.",
        default=False,
    )
    peer_sightings: bool = doc(
        "Fold the sightings that peer gateways of the same store share into this gateway's "
        "positioning (their receivers must be gateway features of the store map).",
        default=False,
    )
    share_interval_s: float = doc(
        "How often shared sightings are published (a batch per interval).", default=0.2
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not 0.05 <= self.share_interval_s <= 2.0:
            problems["share_interval_s"] = "must be between 0.05 and 2 s (sightings go stale)"
        if self.protocol not in ("5", "3.1.1"):
            problems["protocol"] = "use '5' or '3.1.1'"
        if not 0 < self.port < 65536:
            problems["port"] = "must be 1-65535"
        if self.inflight < 1:
            problems["inflight"] = "must be at least 1"
        if not 1 <= self.batch_events <= 1000:
            problems["batch_events"] = "must be between 1 and 1000"
        if bool(self.cert_file) != bool(self.key_file):
            problems["cert_file"] = "set both cert_file and key_file for mutual TLS, or neither"
        if (self.cert_file or self.ca_file) and not self.tls:
            problems["tls"] = "certificates are set but tls = false; set tls = true"
        if self.downlink_key:
            try:
                bytes.fromhex(self.downlink_key)
            except ValueError:
                problems["downlink_key"] = "not hex"
        loopback = self.host in ("localhost", "::1") or self.host.startswith("127.")
        if self.enabled and not self.tls and not self.allow_plaintext_remote and not loopback:
            problems["tls"] = (
                f"refusing plaintext MQTT to {self.host}: set tls = true (or "
                "allow_plaintext_remote = true on a trusted network)"
            )
        return problems


@dataclass(frozen=True, slots=True)
class ServiceSection:
    control_listen: str = doc(
        "host:port of the local HTTP endpoint for `gateway status`, `/metrics` (Prometheus "
        "text) and `/healthz`. Loopback unless you mean the shop LAN to see it. Empty: off.",
        default="127.0.0.1:8787",
    )
    stop_drain_s: float = doc(
        "On SIGTERM: how long to keep delivering queued events before closing the store "
        "(they stay queued on disk either way).",
        default=5.0,
    )
    log_format: str = doc(
        "'kv' (key=value, one line per event; reads well in journalctl) or 'json'.",
        default="kv",
    )
    log_level: str = doc("debug, info, warning or error.", default="info")

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.control_listen and not _host_port(self.control_listen):
            problems["control_listen"] = "expected host:port, e.g. '127.0.0.1:8787' or '[::1]:8787'"
        if not 0 <= self.stop_drain_s <= 25:
            problems["stop_drain_s"] = "must be 0-25 s (systemd's stop timeout is 30 s)"
        if self.log_format not in ("kv", "json"):
            problems["log_format"] = "use 'kv' or 'json'"
        if self.log_level not in ("debug", "info", "warning", "error"):
            problems["log_level"] = "use debug, info, warning or error"
        return problems


@dataclass(frozen=True, slots=True)
class ConsoleSection:
    password_hash: str = doc(
        "scrypt hash of the staff password (`gateway console-password` prints one). Empty: "
        "no logins; the control API then takes only the local bearer token.",
        default="",
    )
    session_ttl_s: float = doc("A console login lasts this long.", default=8 * 3600.0)
    login_attempts_per_minute: int = doc(
        "Login attempts allowed per client address per minute.", default=5
    )

    def validate(self) -> dict[str, str]:
        from gateway.web.auth import valid_hash

        problems: dict[str, str] = {}
        if self.password_hash and not valid_hash(self.password_hash):
            problems["password_hash"] = "not a hash from `gateway console-password`"
        if not 60 <= self.session_ttl_s <= 7 * 86400:
            problems["session_ttl_s"] = "must be between a minute and a week"
        if not 1 <= self.login_attempts_per_minute <= 100:
            problems["login_attempts_per_minute"] = "must be 1-100"
        return problems


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def host_port(text: str) -> tuple[str, int]:
    """`control_listen` split (validated at load time)."""
    parsed = _host_port(text)
    if parsed is None:
        raise ValueError(f"not host:port: {text!r}")
    return parsed


@dataclass(frozen=True, slots=True)
class OutboxSection:
    max_events: int = doc(
        "Most events kept waiting for the uplink. Past it, the least important, oldest "
        "events are shed (never redemptions), counted and reported.",
        default=500_000,
    )
    ttl_s: dict[str, float] = doc(
        "Per stream: events waiting in the outbox longer than this (since they were queued, "
        "whatever time they happened) are dropped unsent (counted). 0 keeps forever.",
        default_factory=lambda: {
            "redemption": 0.0,
            "offer": 30 * 86400.0,
            "nfc": 7 * 86400.0,
            "zone": 86400.0,
            "beacon": 86400.0,
            "gateway": 7 * 86400.0,
        },
    )

    def validate(self) -> dict[str, str]:
        if self.max_events < 1000:
            return {"max_events": "must be at least 1000"}
        if self.ttl_s.get("redemption", 0.0) != 0.0:
            return {"ttl_s.redemption": "redemptions are never dropped: set 0"}
        if any(v < 0 for v in self.ttl_s.values()):
            return {"ttl_s": "must not be negative"}
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


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        item = typing.get_args(tp)[0]
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a list of {plural.get(item, 'tables')}"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, file: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, args[0], file, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table [{key}], got {value!r}")
        return build_section(typing.cast(type[Any], tp), value, file, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table [{key}], got {value!r}")
        item_type = typing.get_args(tp)[1]
        return {k: _convert(v, item_type, file, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        return [_convert(v, item_type, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(file, key, f"expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
    return value


def build_section(cls: type[T], data: dict[str, Any], file: str, prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, key, f"unknown key; known keys here: {known}")
        kwargs[name] = _convert(value, hints[name], file, key)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(file, key, f"missing; set it to {_type_name(hints[name])}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for name, problem in validate().items():
            raise ConfigError(file, f"{prefix}.{name}" if prefix else name, problem)
    return obj


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


def describe(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for every key, depth first: the config reference."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((f"[{key}]", "table", "", f.metadata.get("doc", "")))
            rows.extend(describe(typing.cast(type[Any], tp), key))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
        if typing.get_origin(tp) is dict:
            item = typing.get_args(tp)[1]
            if dataclasses.is_dataclass(item):
                rows.extend(describe(typing.cast(type[Any], item), f"{key}.<id>"))
    return rows


def _toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        values = [_toml_value(v) for v in value]
        return "[" + ", ".join(v for v in values if v is not None) + "]"
    if isinstance(value, dict):
        pairs = [f"{k} = {_toml_value(v)}" for k, v in value.items() if _toml_value(v)]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    if dataclasses.is_dataclass(value):
        return None  # a table: written as its own section
    return None


def config_template(state_dir: str, secrets: dict[str, str]) -> str:
    """A commented config for a fresh install: every key present, commented out at its
    default, with its documentation above it. Only the state directory and the given
    secrets (`"gateway.pseudonym_key"`, `"nfc.loyalty_key"`, …) are set."""
    import textwrap

    active = {"gateway.state_dir": state_dir, **secrets}
    out = [
        "# proximity-gateway configuration (written once by scripts/install; never overwritten).",
        "# Every key is optional; commented lines show the defaults. Reference: docs/config.md.",
        "# Check a change with `gateway doctor`, apply it with",
        "# `systemctl reload proximity-gateway` (SIGHUP).",
        "",
    ]

    def section(cls: type[Any], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        tables: list[tuple[str, type[Any], str]] = []
        out.append(f"[{prefix}]")
        instance = cls()
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            key = f"{prefix}.{f.name}"
            tp = hints[f.name]
            text = f.metadata.get("doc", "")
            if dataclasses.is_dataclass(tp):
                tables.append((key, typing.cast(type[Any], tp), text))
                continue
            for line in textwrap.wrap(text, 88):
                out.append(f"# {line}")
            if key in active:
                out.append(f"{f.name} = {_toml_value(active[key])}")
            else:
                value = _toml_value(getattr(instance, f.name))
                out.append(f"# {f.name} = {value}" if value is not None else f"# {f.name} =")
        out.append("")
        for key, tp, text in tables:
            for line in textwrap.wrap(text, 88):
                out.append(f"# {line}")
            section(tp, key)

    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        for line in textwrap.wrap(f.metadata.get("doc", ""), 88):
            out.append(f"# {line}")
        section(typing.cast(type[Any], hints[f.name]), f.name)
    return "\n".join(out) + "\n"
