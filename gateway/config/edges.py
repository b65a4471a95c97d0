"""Settings of the gateway's edges: where sightings come from (replay, BLE adapters), where
pushes go (local sinks, webhook), the backend broker and the outbox's bounds (the service and
its console: `gateway.config.service`). Assembled with the stages' sections into `Config` by
`gateway.config.sections`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.config.schema import doc, topic_level_problem
from gateway.config.secrets import secret_problem


def is_loopback_host(host: str) -> bool:
    """True only for this machine: a loopback address (127.0.0.0/8, ::1) or the name
    `localhost`. A name is never judged by its spelling: "127.evil.example" is remote."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


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
    cloudevents_mode: str = doc(
        "How events are carried (CloudEvents MQTT binding): 'structured' (the JSON event as "
        "payload; on MQTT 5 Content Type application/cloudevents+json) or 'binary' (MQTT 5 "
        "only: `data` as payload, Content Type = datacontenttype, the other attributes as "
        "User Properties).",
        default="structured",
    )
    batch_events: int = doc(
        "1: one event per message, as the binding defines. Above 1 (an extension the binding "
        "does not define; MQTT 5 structured mode only): a backlog drains as CloudEvents JSON "
        "batches of up to this many events of one stream per message "
        "(application/cloudevents-batch+json); a lone event is still sent on its own.",
        default=1,
    )
    backoff_max_s: float = doc("Longest wait between reconnection attempts.", default=30.0)
    downlink_key: str = doc(
        "Hex HMAC-SHA256 key that signs downlink documents and commands; unsigned or "
        "wrongly signed ones are rejected. Empty: reject every downlink.",
        default="",
    )
    downlink_max_validity_days: float = doc(
        "Longest validity (expires_at - issued_at) a signed document may claim; a new "
        "document must also be issued before and expire after this box's clock, so neither "
        "an old captured snapshot nor a far-future one is taken for the truth.",
        default=30.0,
    )
    max_message_kb: int = doc(
        "Largest MQTT message accepted (MQTT 5 Maximum Packet Size, told to the broker; "
        "bigger downlink documents must be split into a snapshot and deltas). Checked again "
        "before parsing on MQTT 3.1.1.",
        default=4096,
    )
    receive_maximum: int = doc(
        "MQTT 5 Receive Maximum: QoS 1 messages the broker may have in flight to us.",
        default=32,
    )
    peer_key: str = doc(
        "Hex HMAC-SHA256 key shared by the store's gateways (and no one else) that signs "
        "shared sightings; required with share_sightings or peer_sightings. Unsigned or "
        "wrongly signed batches are dropped and counted.",
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
    store_state: bool = doc(
        "Publish the store's state as retained plain JSON for Node-RED and dashboards, on "
        "change and at most once a second: `{prefix}/{store}/{gateway}/state/zones/{zone}` "
        "(people now), `.../state/beacons/{beacon}` (fixed beacon health) and "
        "`.../state/offers` (offers issued and redeemed this store day). Never per shopper.",
        default=False,
    )
    ha_discovery: bool = doc(
        "Announce the gateway to Home Assistant by MQTT discovery (retained configs): "
        "connectivity from the status topic, occupancy per zone, battery and last seen per "
        "fixed beacon, offers issued and redeemed today. Implies store_state; a zone or "
        "beacon removed from the map is removed from Home Assistant on reload.",
        default=False,
    )
    ha_discovery_prefix: str = doc(
        "Home Assistant's discovery prefix (its MQTT integration's setting).",
        default="homeassistant",
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        levels = self.topic_prefix.split("/")
        bad = [p for level in levels if (p := topic_level_problem(level))]
        if bad:
            problems["topic_prefix"] = f"{bad[0]} in a level; e.g. 'storegate/v1'"
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
        if self.cloudevents_mode not in ("structured", "binary"):
            problems["cloudevents_mode"] = "use 'structured' or 'binary'"
        elif self.cloudevents_mode == "binary" and self.protocol != "5":
            problems["cloudevents_mode"] = (
                "binary mode needs MQTT 5 (User Properties); use 'structured' with 3.1.1"
            )
        elif self.batch_events > 1 and (
            self.protocol != "5" or self.cloudevents_mode != "structured"
        ):
            problems["batch_events"] = (
                "batches are an extension for MQTT 5 structured mode only (a 3.1.1 or "
                "binary-mode consumer could not tell them from events); set 1"
            )
        prefix = [
            p for level in self.ha_discovery_prefix.split("/") if (p := topic_level_problem(level))
        ]
        if prefix:
            problems["ha_discovery_prefix"] = f"{prefix[0]} in a level; e.g. 'homeassistant'"
        if bool(self.cert_file) != bool(self.key_file):
            problems["cert_file"] = "set both cert_file and key_file for mutual TLS, or neither"
        if (self.cert_file or self.ca_file) and not self.tls:
            problems["tls"] = "certificates are set but tls = false; set tls = true"
        if self.downlink_key and (problem := secret_problem(self.downlink_key)):
            problems["downlink_key"] = problem
        if self.peer_key and (problem := secret_problem(self.peer_key)):
            problems["peer_key"] = problem
        elif not self.peer_key and (self.share_sightings or self.peer_sightings):
            problems["peer_key"] = (
                "required with share_sightings/peer_sightings: the same secret on every "
                "gateway of the store (make one with `gateway secret`)"
            )
        if not 16 <= self.max_message_kb <= 65536:
            problems["max_message_kb"] = "must be between 16 and 65536 (kB)"
        if not 1 <= self.receive_maximum <= 65535:
            problems["receive_maximum"] = "must be between 1 and 65535"
        if not 0 < self.downlink_max_validity_days <= 366:
            problems["downlink_max_validity_days"] = "must be more than 0 and at most 366"
        loopback = is_loopback_host(self.host)
        if self.enabled and not self.tls and not self.allow_plaintext_remote and not loopback:
            problems["tls"] = (
                f"refusing plaintext MQTT to {self.host}: set tls = true (or "
                "allow_plaintext_remote = true on a trusted network)"
            )
        return problems


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

    max_mb: float = doc(
        "Most megabytes of queued event bodies. Past it, the least important, oldest events "
        "are shed as past max_events.",
        default=200.0,
    )
    min_free_mb: float = doc(
        "Free space to keep on the state directory's filesystem: below it, queued events "
        "are shed (least important, oldest first, never redemptions) before SQLite meets a "
        "full disk. Checked at every commit that may have crossed it.",
        default=64.0,
    )

    def validate(self) -> dict[str, str]:
        if self.max_events < 1000:
            return {"max_events": "must be at least 1000"}
        if not 1 <= self.max_mb <= 1_000_000:
            return {"max_mb": "must be between 1 and 1000000 (MB)"}
        if not 0 <= self.min_free_mb <= 1_000_000:
            return {"min_free_mb": "must be between 0 and 1000000 (MB)"}
        if self.ttl_s.get("redemption", 0.0) != 0.0:
            return {"ttl_s.redemption": "redemptions are never dropped: set 0"}
        if any(v < 0 for v in self.ttl_s.values()):
            return {"ttl_s": "must not be negative"}
        return {}
