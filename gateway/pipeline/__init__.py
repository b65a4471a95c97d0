"""The pipeline's synchronous core, read top to bottom:

    advert ─ decode ─ presence (filter, distance, position) ─ zones ─ identity ─ offers
    tap ──── touchpoint ─ identity ─ (redemption with a verified token)

Each call takes one input with its own timestamp and returns the events it caused, in
order. The caller (the asyncio shell, `gateway.runtime`) owns the transaction around it and
routes the events to the outbox and the sinks. Time moves only through the inputs and
`advance`, so a replayed trace gives the same result however fast it is played.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.sections import Config
from gateway.decode import ble as decode
from gateway.identity import loyalty
from gateway.identity.rotating import EidTable, RpaResolver, parse_address
from gateway.identity.store import IdentityStore, pseudonymise
from gateway.model import (
    Advert,
    EddystoneEID,
    IdentityMatch,
    OfferDecision,
    PipelineEvent,
    Position,
    Tap,
    TapEvent,
    ZoneEvent,
)
from gateway.offers.engine import OfferEngine
from gateway.pipeline import sharing
from gateway.pipeline.sharing import Forwarded
from gateway.pipeline.tracking import self_calibration_for, tracker_for
from gateway.presence.fleet import FleetHealth, expectations_for
from gateway.site.hardware import BeaconProfile
from gateway.site.storemap import StoreMap
from gateway.zones.handover import HandedOver
from gateway.zones.tracker import ZoneTracker

# Adverts without a beacon frame that may still come from a shopper's phone with an RPA
# (iPhones advertise Apple Continuity data, Android phones service data or nothing).
RPA_CANDIDATES = frozenset(
    ("no_beacon_data", "unknown_manufacturer", "unknown_service", "apple_not_ibeacon")
)

# One position solve per device per quarter second of trace time (see PresenceSettings).
SOLVE_INTERVAL_S = 0.25
# A shopper who declined is followed under a per-visit alias (counted, never identified), and
# her sightings stay on this gateway: peers would otherwise see her beacon id on the broker.
VISIT_ALIAS_PREFIX = "visit:"


def _aliased(device: str) -> bool:
    return device.startswith(VISIT_ALIAS_PREFIX)


# How often silent devices are looked for.
EXPIRY_CHECK_S = 0.5


def _zone_tracker(config: Config, store_map: StoreMap) -> ZoneTracker:
    z = config.zones
    return ZoneTracker(
        store_map.zones,
        hysteresis_m=z.hysteresis_m,
        dwell_s=z.dwell_s,
        min_inside_s=z.min_inside_s,
        min_outside_s=z.min_outside_s,
    )


@dataclass(slots=True)
class PipelineStats:
    adverts: int = 0
    taps: int = 0
    decode: decode.DecodeStats = field(default_factory=decode.DecodeStats)
    anchor_adverts: Counter[str] = field(default_factory=Counter)
    zone_events: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)  # by reason
    offers_issued: int = 0
    redemptions: int = 0
    taps_rejected: Counter[str] = field(default_factory=Counter)
    not_owned: int = 0  # shopper sightings left to their owner gateway (work sharing)
    forwarded_in: int = 0  # readings peers forwarded to us, the owner (folded, not decoded)
    misrouted: int = 0  # forwarded readings of devices we do not own (membership in flux)
    taken_over: int = 0  # devices continued from their previous owner's state


class Pipeline:
    def __init__(
        self,
        config: Config,
        store_map: StoreMap,
        identity: IdentityStore,
        offers: OfferEngine,
        device_profile: BeaconProfile,
    ) -> None:
        self.config = config
        self.map = store_map
        self.identity = identity
        self.offers = offers
        self.key = bytes.fromhex(config.gateway.pseudonym_key)
        self.loyalty_key = bytes.fromhex(config.nfc.loyalty_key)
        self.presence = tracker_for(
            config, store_map, device_profile, solve_interval_s=SOLVE_INTERVAL_S
        )
        self.selfcal = self_calibration_for(store_map, self.presence)
        self.zones = _zone_tracker(config, store_map)
        self.anchor_ids = {a.identity: a.id for a in store_map.anchors}
        self.fleet = FleetHealth(
            store_map.anchors,
            expectations=expectations_for(store_map.anchors),
            missing_after_s=config.fleet.missing_after_s,
            low_battery_pct=config.fleet.low_battery_pct,
        )
        self._next_fleet_check = 0.0
        self._next_expiry = 0.0
        self.profiles: dict[str, str | None] = {}  # device -> profile (resolved once per visit)
        # A shopper who said no is not recognised: while her device is in the shop it is
        # tracked under a per-visit alias ("visit:<hash of device and first sighting>"), so
        # its zone events cannot be linked to her, nor her visits to each other. Deterministic,
        # so a replay after a crash derives the same ids.
        self.visit_aliases: dict[str, str] = {}  # device -> alias
        self.last_taps: dict[tuple[str, bytes], float] = {}
        self.stats = PipelineStats()
        self.now = 0.0
        self.eids = EidTable()
        self.rpas = RpaResolver()
        # Shopper sightings to share with peer gateways ([mqtt] share_sightings), else None.
        self.share: Callable[[Advert], None] | None = None
        # Work sharing in a fleet (`gateway.sync.ownership`): is this gateway the device's
        # owner? None: no fleet, every device is ours. Peers' latest state of their devices.
        self.owns: Callable[[str], bool] | None = None
        self.declined: dict[str, bool] = {}  # device -> its shopper declined (fleet forwarding)
        self.handed_over: dict[str, HandedOver] = {}
        # In a fleet: a reading of a device we do not own goes to its owner already decoded
        # (device key, power, t, receiver, rssi); None: the raw advert is shared instead.
        self.forward: Callable[[str, int | None, float, str, int], None] | None = None
        # Forwarded readings waiting for the next batch (folded in its transaction).
        self.inbox: list[Forwarded] = []
        # The owner's jitter buffer: a due solve waits this long (store time) so the readings
        # peers forward (every share interval) are folded first. 0: solve at once.
        self.solve_delay_s = 0.0
        # the jitter buffer: tracked device -> when its solve became due (`sharing.jitter`)
        self._waiting_peers: dict[str, float] = {}
        self.released_to = -math.inf  # store time up to which it was released
        self._eid_checked = 0.0
        self.reload_identities()

    def reconfigure(
        self, config: Config, store_map: StoreMap, device_profile: BeaconProfile
    ) -> None:
        """SIGHUP: new settings, map and zones, keeping what is known about the people in
        the shop. RSSI filters of receivers that still exist carry over; visits to zones
        that still exist (by id) carry over, so nobody re-enters a zone they are standing in.
        """
        old_presence, old_zones = self.presence, self.zones
        self.config = config
        self.map = store_map
        self.presence = tracker_for(
            config, store_map, device_profile, solve_interval_s=SOLVE_INTERVAL_S
        )
        old_selfcal, self.selfcal = self.selfcal, self_calibration_for(store_map, self.presence)
        for r in set(old_selfcal.learned) & set(store_map.receivers):  # keep what was learned
            self.selfcal.learned[r] = old_selfcal.learned[r]
            self.selfcal.samples[r] = old_selfcal.samples[r]
            if r in old_selfcal.applied:
                self.selfcal.applied[r] = old_selfcal.applied[r]
        for device, state in old_presence.devices.items():
            state.grid = None  # the grid may have changed with the map
            state.filters = {r: f for r, f in state.filters.items() if r in store_map.receivers}
            self.presence.devices[device] = state
        self.zones = _zone_tracker(config, store_map)
        new_index = {z.id: i for i, z in enumerate(store_map.zones)}
        for device, visits in old_zones.visits.items():
            kept = {
                new_index[old_zones.zones[i].id]: visit
                for i, visit in visits.items()
                if old_zones.zones[i].id in new_index
            }
            if kept:
                self.zones.adopt(device, kept)
        self.anchor_ids = {a.identity: a.id for a in store_map.anchors}
        self.loyalty_key = bytes.fromhex(config.nfc.loyalty_key)

    def reload_identities(self) -> None:
        """Re-read rotating keys (start-up, downlink updates) and resolve anew."""
        eid_keys, irks, problems = self.identity.rotating_keys()
        self.eids = EidTable(eid_keys)
        self.rpas = RpaResolver(irks)
        self.key_problems = problems
        self.profiles.clear()
        self.declined.clear()

    def pseudonym(self, identity: str) -> str:
        return pseudonymise(self.key, identity)

    # --- time ----------------------------------------------------------------------------

    def advance(self, now: float) -> list[PipelineEvent]:
        """Let time pass: devices that fell silent leave their zones; dwell timers fire."""
        if now <= self.now:
            return []
        self.now = now
        events: list[PipelineEvent] = []
        if self.presence.deferred and (
            self.offers.lapse_due(now)
            or self.zones.dwell_due(now)
            or (now >= self._next_expiry and self.presence.any_silent(now))
        ):
            # What happens at `now` comes after the fixes of the sightings before it, as it
            # does one sighting at a time: the waiting solves first.
            events += self._solve_deferred()
        self.offers.lapse_holds(now)  # an expired hold frees its unit before anything else
        events += self.offers.take_events()
        if now >= self._next_expiry:
            # Silence is measured in seconds (stale_after_s): checking twice a second is
            # plenty, and looking at every device on every sighting is not free.
            self._next_expiry = now + EXPIRY_CHECK_S
            if self._waiting_peers:  # the owner's jitter buffer, when no batch came to flush it
                events.extend(self._solve_due({}))
            expired = self.presence.expire(now)
            for device in expired:
                for zone_event in self.zones.leave_all(device, now):
                    events.extend(self._on_zone_event(zone_event))
                self.profiles.pop(device, None)
            if expired and self.visit_aliases:
                gone = set(expired)
                self.visit_aliases = {d: a for d, a in self.visit_aliases.items() if a not in gone}
        for zone_event in self.zones.due_dwells(now):
            events.extend(self._on_zone_event(zone_event))
        if now >= self._next_fleet_check:
            self._next_fleet_check = math.floor(now) + 1.0
            events.extend(self.fleet.check(now))
        return events

    # --- BLE -----------------------------------------------------------------------------

    def on_advert(self, advert: Advert) -> list[PipelineEvent]:
        """One sighting through every stage, its position solved at once if one is due."""
        events, shopper = self._sighting(advert)
        if shopper is not None:
            device, power = shopper
            events.extend(self._track(device, advert, power))
            if self.share is not None and self.owns is None and not _aliased(device):
                self.share(advert)
        return events

    def on_adverts(self, adverts: list[Advert]) -> list[PipelineEvent]:
        """A run of sightings in time order, with the events `on_advert` one by one gives:
        a position due is taken at its sighting (`PresenceTracker.defer`: the filters, the
        hint) and solved with the others of the run in one vectorised fit at its end — or
        earlier, when something at a later sighting must come after it (the same device
        due again, a dwell timer, a device timing out, a hold lapsing). The fixes, and so
        the zone events and decisions, do not depend on where a run is cut."""
        events: list[PipelineEvent] = []
        for advert in adverts:
            found, shopper = self._sighting(advert)
            events.extend(found)
            if shopper is None:
                continue
            device, power = shopper
            if self.presence.fold(device, advert.receiver, advert.t, advert.rssi, power):
                events.extend(self._position_due(device, advert.t))
            # In a fleet, what we own stays here; a declined shopper's sightings never leave.
            if self.share is not None and self.owns is None and not _aliased(device):
                self.share(advert)
        events.extend(self._solve_deferred())
        if self._waiting_peers:
            events.extend(self._solve_due({}))
        return events

    def _position_due(self, device: str, t: float) -> list[PipelineEvent]:
        presence = self.presence
        if self.solve_delay_s > 0.0:
            # In a fleet the owner waits for its peers' forwarded readings (`_solve_due`).
            self._waiting_peers.setdefault(device, t)
            return []
        if not presence.deferrable:
            position = presence.position(device, t)
            return [] if position is None else self._positioned([position])
        if presence.defer(device, t):
            return []
        events = self._solve_deferred()  # its previous fix is this solve's starting point
        presence.defer(device, t)
        return events

    def _solve_deferred(self) -> list[PipelineEvent]:
        if not self.presence.deferred:
            return []
        return self._positioned(self.presence.solve_deferred())

    def _solve_due(self, due: dict[str, float]) -> list[PipelineEvent]:
        """In a fleet: the solves the owner's jitter buffer releases (due at least
        `solve_delay_s` ago, `sharing.jitter`), with the filters as they are now — peers'
        readings of the same moment folded in."""
        ready = sharing.jitter(self, due) if self.solve_delay_s > 0.0 else due
        events = self._solve_deferred()
        return events + self._positioned(self.presence.positions_many(list(ready.items())))

    def _positioned(self, positions: list[Position]) -> list[PipelineEvent]:
        """Positions → the heat map and zone events (and the offers they trigger)."""
        events: list[PipelineEvent] = []
        for position in positions:
            self.offers.floor.position(position)  # the heat map (aggregated)
            for zone_event in self.zones.update(position):
                events.extend(self._on_zone_event(zone_event))
        return events

    def _sighting(
        self, advert: Advert
    ) -> tuple[list[PipelineEvent], tuple[str, int | None] | None]:
        """Everything about one sighting but its position: time, decode, telemetry, fixed
        beacons, identity. Returns the events and, for a shopper device, (device, the
        frame's calibrated power) to track."""
        self.stats.adverts += 1
        events = self.advance(advert.t)
        frame, reason = decode.decode_advert(advert)
        self.stats.decode.record(frame, reason)
        if frame is None:
            if self.rpas.irks and reason in RPA_CANDIDATES:
                events.extend(self._rpa_sighting(advert))
            return events, None
        device = frame.identity
        if device is None:  # telemetry (Eddystone-TLM): health of a fixed beacon, not a person
            self.fleet.telemetry(advert.address, advert.t, frame)
            return events, None
        if isinstance(frame, EddystoneEID):
            device = self._resolve_eid(frame.eid, advert.t) or device
        anchor = self.anchor_ids.get(device)
        if anchor is not None:
            # A fixed beacon: fleet health, not a shopper.
            self.stats.anchor_adverts[anchor] += 1
            self.fleet.seen(anchor, advert.address, advert.t)
            self.selfcal.observe(anchor, advert.receiver, advert.rssi)
            return events, None
        if self.owns is not None and not self._owned(device, advert, frame.measured_power):
            return events, None
        alias = self.visit_aliases.get(device)
        if alias is not None:
            device = alias
        elif device not in self.profiles:
            match = self._resolve(device, advert.t)
            events.append(match)
            device = match.device
        return events, (device, frame.measured_power)

    def _track(
        self, device: str, advert: Advert, measured_power: int | None
    ) -> list[PipelineEvent]:
        """Presence → position → zone events (and the offers they trigger), at once."""
        events = self._solve_deferred()  # a run's waiting solves come first
        position = self.presence.observe(
            device, advert.receiver, advert.t, advert.rssi, measured_power
        )
        return events + ([] if position is None else self._positioned([position]))

    def _resolve_eid(self, eid_hex: str, t: float) -> str | None:
        """An ephemeral id → the stable device `profile:<id>` (tracking survives rotation)."""
        if not self.eids.keys:
            return None
        if t - self._eid_checked >= 1.0 or not self.eids.table:
            self._eid_checked = t
            if not self.eids.table or self.eids.stale(t):
                self.eids.rebuild(t)
        profile_id = self.eids.resolve(eid_hex)
        return None if profile_id is None else f"profile:{profile_id}"

    def _rpa_sighting(self, advert: Advert) -> list[PipelineEvent]:
        """A phone advertising from a resolvable private address of a known IRK."""
        try:
            address = parse_address(advert.address)
        except ValueError:
            return []
        profile_id = self.rpas.resolve(address)
        if profile_id is None:
            return []
        device = f"profile:{profile_id}"
        if self.owns is not None and not self._owned(device, advert, None):
            return []
        events: list[PipelineEvent] = []
        if device not in self.profiles:
            self.profiles[device] = profile_id
            events.append(IdentityMatch(device, advert.t, "rpa", profile_id))
        events.extend(self._track(device, advert, None))
        return events

    # --- work sharing (gateway.pipeline.sharing) ---------------------------------------------

    _owned = sharing.owned  # (self, device, advert, power): ours, or forwarded to its owner

    def on_forwarded(self, devices: list[Forwarded]) -> list[PipelineEvent]:
        """Readings peers forwarded of devices we own (`sharing.on_forwarded`)."""
        return sharing.on_forwarded(self, devices)

    def take_inbox(self) -> list[PipelineEvent]:
        """Fold the forwarded readings waiting in the inbox (the runtime's batch calls it)."""
        inbox, self.inbox = self.inbox, []
        return sharing.on_forwarded(self, inbox)

    def _resolve(self, device: str, t: float) -> IdentityMatch:
        kind, value = device.split(":", 1)
        if kind == "profile":  # resolved from a rotating identifier already
            self.profiles[device] = value
            return IdentityMatch(device, t, "eid", value)
        profile_id, declined = self.identity.resolve_consenting(kind, value)
        if declined:
            digest = hmac.new(self.key, f"{device}|{t!r}".encode(), hashlib.sha256).hexdigest()
            alias = f"{VISIT_ALIAS_PREFIX}{digest[:16]}"
            self.visit_aliases[device] = alias
            self.profiles[alias] = None
            return IdentityMatch(alias, t, kind, None)
        self.profiles[device] = profile_id
        return IdentityMatch(device, t, kind, profile_id)

    def _on_zone_event(self, event: ZoneEvent) -> list[PipelineEvent]:
        self.stats.zone_events[event.kind] += 1
        out: list[PipelineEvent] = [event]
        for decision in self.offers.evaluate_all(
            event, event.device, self.profiles.get(event.device)
        ):
            out.append(decision)
            self._count(decision)
        out.extend(self.offers.take_events())  # holds placed, pickup tasks opened
        return out

    def _count(self, decision: OfferDecision) -> None:
        self.stats.decisions[decision.reason] += 1
        if decision.issued:
            self.stats.offers_issued += 1

    # --- NFC -----------------------------------------------------------------------------

    def on_tap(self, tap: Tap) -> list[PipelineEvent]:
        self.stats.taps += 1
        events = self._solve_deferred() + self.advance(tap.t)
        touchpoint = self.config.nfc.touchpoints.get(tap.reader)
        if touchpoint is None:
            self.stats.taps_rejected["unknown_reader"] += 1
            return events
        last = self.last_taps.get((tap.reader, tap.uid))
        self.last_taps[(tap.reader, tap.uid)] = tap.t
        if last is not None and tap.t - last < self.config.nfc.debounce_s:
            self.stats.taps_rejected["debounced"] += 1
            return events
        uid_identity = "nfc_uid:" + tap.uid.hex()
        token, _reason = loyalty.read_token(self.loyalty_key, tap.ndef)
        profile_id, declined = self.identity.resolve_consenting("nfc_uid", tap.uid.hex())
        verified = token is not None and token.verified
        if verified and token is not None:
            # A verified token names its profile; a UID that disagrees is not trusted. A
            # shopper who said no is not recognised by her card either.
            declined = not self.identity.consents(token.profile_id)
            profile_id = None if declined else token.profile_id
        if declined:  # her card's taps must not link either: one alias per tap
            digest = hmac.new(self.key, f"{uid_identity}|{tap.t!r}".encode(), hashlib.sha256)
            uid_identity = f"visit:{digest.hexdigest()[:16]}"
        events.append(IdentityMatch(uid_identity, tap.t, "nfc", profile_id))
        events.append(
            TapEvent(
                tap.t,
                tap.reader,
                touchpoint.zone,
                self.pseudonym(uid_identity),
                profile_id,
                verified,
            )
        )
        if touchpoint.redeem and verified and profile_id is not None:
            for redemption in self.offers.redeem(profile_id, tap.t, tap.reader):
                self.stats.redemptions += 1
                events.append(redemption)
        elif touchpoint.offer_on_tap:
            for decision in self.offers.evaluate_trigger_all(
                f"tap:{tap.reader}", tap.t, uid_identity, profile_id, None
            ):
                events.append(decision)
                self._count(decision)
        events.extend(self.offers.take_events())
        return events
