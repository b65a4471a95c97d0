"""Plain data passed between pipeline stages.

Every stage is a pure synchronous core that takes and returns these values; the asyncio
shell only moves them around. They are frozen slotted dataclasses: cheap to build, safe to
share, and easy to print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# --- sources -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advert:
    """One BLE advertisement as a scanner hands it over (nothing decoded yet).

    `ad` is the raw advertising data (AD structures) when the scanner exposes it; `mfr` and
    `svc` are bleak's manufacturer-data and service-data dicts. A source fills whichever it
    has; the decoder looks at both.
    """

    t: float
    receiver: str
    address: str
    rssi: int
    ad: bytes = b""
    mfr: dict[int, bytes] = field(default_factory=dict)
    svc: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tap:
    """One NFC tag presented to a reader (a touchpoint)."""

    t: float
    reader: str
    uid: bytes
    ndef: bytes = b""


class AdapterState(StrEnum):
    """Where a radio source is (the `state` of `com.storegate.gateway.adapter` events)."""

    STARTING = "starting"
    SCANNING = "scanning"  # BLE: the adapter reports adverts
    READING = "reading"  # NFC: the reader waits for taps
    RESTARTING = "restarting"
    POWER_CYCLED = "power_cycled"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class AdapterHealth:
    """A radio source's state changed (scanning, restarting, power_cycled, unavailable)."""

    t: float
    adapter: str
    state: AdapterState
    reason: str
    restarts: int


class NoticeKind(StrEnum):
    """What a gateway notice reports (the type suffix of `com.storegate.gateway.*` events)."""

    DOWNLINK_APPLIED = "downlink_applied"
    DOWNLINK_REJECTED = "downlink_rejected"
    COMMAND = "command"
    OUTBOX_DROPPED = "outbox_dropped"
    CAMPAIGN_REPORT = "campaign_report"  # a store day's campaign aggregate (counts only)


@dataclass(frozen=True, slots=True)
class GatewayNotice:
    """Something the backend should know about the gateway itself (downlink applied or
    rejected with a reason, command handled)."""

    t: float
    kind: NoticeKind
    subject: str
    data: dict[str, object]


# --- decode --------------------------------------------------------------------------------


# Eddystone frames state power at 0 m; 41 dB is the spec's loss over the first metre.
EDDYSTONE_0M_TO_1M_DB = 41


@dataclass(frozen=True, slots=True)
class IBeacon:
    uuid: str  # lower-case 8-4-4-4-12
    major: int
    minor: int
    tx_power: int  # calibrated RSSI at 1 m, dBm

    kind = "ibeacon"

    @property
    def identity(self) -> str:
        return f"ibeacon:{self.uuid}:{self.major}:{self.minor}"

    @property
    def measured_power(self) -> int | None:
        return self.tx_power or None


@dataclass(frozen=True, slots=True)
class AltBeacon:
    company_id: int
    beacon_id: str  # 20 bytes, hex
    tx_power: int  # reference RSSI at 1 m, dBm
    mfg_reserved: int

    kind = "altbeacon"

    @property
    def identity(self) -> str:
        return f"altbeacon:{self.beacon_id}"

    @property
    def measured_power(self) -> int | None:
        return self.tx_power or None


@dataclass(frozen=True, slots=True)
class EddystoneUID:
    namespace: str  # 10 bytes, hex
    instance: str  # 6 bytes, hex
    tx_power: int  # at 0 m

    kind = "eddystone_uid"

    @property
    def identity(self) -> str:
        return f"eddystone_uid:{self.namespace}:{self.instance}"

    @property
    def measured_power(self) -> int | None:
        return self.tx_power - EDDYSTONE_0M_TO_1M_DB


@dataclass(frozen=True, slots=True)
class EddystoneURL:
    url: str
    tx_power: int  # at 0 m

    kind = "eddystone_url"

    @property
    def identity(self) -> str:
        return f"eddystone_url:{self.url}"

    @property
    def measured_power(self) -> int | None:
        return self.tx_power - EDDYSTONE_0M_TO_1M_DB


@dataclass(frozen=True, slots=True)
class EddystoneTLM:
    voltage: int  # mV; 0 = not reported (mains powered)
    temperature: float | None  # °C; None = not supported (0x8000)
    adv_count: int
    sec_count: int  # 0.1 s since power-on

    kind = "eddystone_tlm"
    identity = None  # telemetry: belongs to whatever the same address also sends
    measured_power = None

    @property
    def uptime(self) -> float:
        return self.sec_count / 10.0


@dataclass(frozen=True, slots=True)
class EddystoneETLM:
    etlm: str  # 12 bytes, hex (encrypted telemetry)
    salt: str
    mic: str

    kind = "eddystone_etlm"
    identity = None
    measured_power = None


@dataclass(frozen=True, slots=True)
class EddystoneEID:
    eid: str  # 8 bytes, hex
    tx_power: int  # at 0 m

    kind = "eddystone_eid"

    @property
    def identity(self) -> str:
        return f"eddystone_eid:{self.eid}"

    @property
    def measured_power(self) -> int | None:
        return self.tx_power - EDDYSTONE_0M_TO_1M_DB


Frame = (
    IBeacon | AltBeacon | EddystoneUID | EddystoneURL | EddystoneTLM | EddystoneETLM | EddystoneEID
)

# --- presence / zones ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    device: str
    t: float
    x: float
    y: float
    uncertainty_m: float
    method: str
    receivers: int
    level: int = 0  # floor number in a multi-storey store


class ZoneEventKind(StrEnum):
    ENTER = "enter"
    EXIT = "exit"
    DWELL = "dwell"


@dataclass(frozen=True, slots=True)
class ZoneEvent:
    kind: ZoneEventKind
    device: str
    zone: str
    t: float
    entered_at: float
    confidence: float


# --- identity ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityMatch:
    device: str
    t: float
    via: str  # "ibeacon" | "nfc_uid" | ...
    profile_id: str | None  # None: unknown device


# --- offers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferDecision:
    """The outcome of evaluating the offer rules for one trigger.

    `issued` is True for an emitted offer; otherwise `reason` says why nothing was sent.
    """

    t: float
    device: str
    profile_id: str | None
    campaign: str
    trigger: str  # e.g. "enter:entrance", "dwell:aisle-scifi", "tap:counter-reader"
    issued: bool
    reason: str
    sku: str | None = None
    title: str | None = None
    code: str | None = None
    expires_at: float | None = None
    percent: int | None = None
    message: str | None = None
    offer_id: str | None = None
    decision_id: str = ""
    variant: str = ""  # the campaign variant served ("": the campaign's own offer)


@dataclass(frozen=True, slots=True)
class Redemption:
    t: float
    profile_id: str
    offer_id: str
    code: str
    sku: str
    reader: str


@dataclass(frozen=True, slots=True)
class TapEvent:
    t: float
    reader: str
    zone: str | None
    device: str  # pseudonymous id of the tag, never the raw UID
    profile_id: str | None
    token_verified: bool


@dataclass(frozen=True, slots=True)
class HoldEvent:
    """One unit of an item set aside for the shopper an offer promised it to (`placed`), or
    no longer (`released`, with why: expired, redeemed, withdrawn_stock, not_found)."""

    t: float
    kind: str  # "placed" | "released"
    hold_id: str
    offer_id: str
    profile_id: str
    sku: str
    reason: str
    expires_at: float
    quantity: int  # the item's quantity after this (a redemption sold one)
    held: int  # active holds on the item after this
    message: str | None = None  # the apology pushed to a consenting shopper; never uplinked


@dataclass(frozen=True, slots=True)
class PickupTaskEvent:
    """A pickup task for staff: opened with an offer, then `ready`, `not_found`,
    `collected` (by a console user) or closed by the gateway (`expired`, `withdrawn`)."""

    t: float
    action: str
    task_id: str
    sku: str
    title: str
    zone: str
    code_hint: str  # the code's last four characters: never the whole bearer code
    language: str
    by: str  # the console user; "gateway" for what the gateway did itself


# --- fleet ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BeaconHealth:
    """A fixed beacon's state, emitted when its status changes."""

    t: float
    beacon: str
    status: str  # "ok" | "missing" | "low_battery" | "slow"
    last_seen: float | None
    interval_s: float | None  # observed mean interval between adverts
    battery_mv: int | None
    battery_pct: float | None
    temperature: float | None


PipelineEvent = (
    ZoneEvent
    | IdentityMatch
    | OfferDecision
    | Redemption
    | TapEvent
    | HoldEvent
    | PickupTaskEvent
    | BeaconHealth
    | AdapterHealth
    | GatewayNotice
)

JSON = dict[str, Any]
