"""BLE source: bleak's BlueZ backend with a detection callback, duplicate control and
self-recovery.

What field gateways get wrong, handled here:
  * adapters that silently stop reporting — a silence watchdog restarts the scanner, and
    after `restarts_before_power_cycle` failed restarts the adapter is power-cycled through
    BlueZ (Adapter1.Powered off/on), with exponential backoff between attempts;
  * bluetoothd / D-Bus going away — the same path: errors are caught, reported as adapter
    health, and retried; scanning never depends on the broker or anything downstream;
  * floods of rotating random addresses — per-address duplicate state expires after a TTL;
  * devices dropped by flags — nothing is filtered on the flags field: every advert that
    carries manufacturer or service data is forwarded.
Passive scanning registers BlueZ advertisement monitors with or-patterns for the beacon
formats we decode (iBeacon, AltBeacon, Eddystone); see docs/ble.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock
from gateway.config.edges import BleAdapterSection
from gateway.model import AdapterHealth, AdapterState, Advert

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

log = logging.getLogger(__name__)


class AdvertFilter:
    """Per-address duplicate and rate control (pure).

    An advert goes through when its content changed, when its RSSI moved by at least
    `rssi_delta_db`, or when `min_interval_s` passed since the last one forwarded.
    """

    def __init__(self, min_interval_s: float, rssi_delta_db: float, ttl_s: float) -> None:
        self.min_interval_s = min_interval_s
        self.rssi_delta_db = rssi_delta_db
        self.ttl_s = ttl_s
        self.last: dict[str, tuple[float, int, int]] = {}  # address -> (t, content hash, rssi)
        self.forwarded = 0
        self.suppressed = 0
        self.forgotten = 0

    def admit(self, address: str, t: float, rssi: int, content: int) -> bool:
        prev = self.last.get(address)
        if (
            prev is None
            or prev[1] != content
            or abs(rssi - prev[2]) >= self.rssi_delta_db
            or t - prev[0] >= self.min_interval_s
        ):
            self.last[address] = (t, content, rssi)
            self.forwarded += 1
            return True
        self.suppressed += 1
        return False

    def sweep(self, now: float) -> int:
        """Forget addresses silent for longer than the TTL; return how many."""
        limit = now - self.ttl_s
        stale = [a for a, (t, _, _) in self.last.items() if t < limit]
        for address in stale:
            del self.last[address]
        self.forgotten += len(stale)
        return len(stale)


class ScannerSilent(Exception):
    """No advert for longer than the silence limit."""


def _or_patterns() -> list[Any]:
    """BlueZ advertisement-monitor patterns for the formats the decoder understands."""
    from bleak.args.bluez import OrPattern
    from bleak.assigned_numbers import AdvertisementDataType

    mfr = AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA
    return [
        OrPattern(0, mfr, b"\x4c\x00\x02\x15"),  # iBeacon
        OrPattern(2, mfr, b"\xbe\xac"),  # AltBeacon, any company
        OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),  # Eddystone
    ]


@dataclass(slots=True)
class BleSource:
    """One adapter, scanned until cancelled."""

    adapter: str
    settings: BleAdapterSection
    receiver: str
    emit: Callable[[Advert | AdapterHealth], None]
    clock: Clock  # wall: advert times; monotonic: silence detection
    filter: AdvertFilter = field(init=False)
    received: int = 0
    last_advert: float = field(default=0.0, init=False)
    failures: int = field(default=0, init=False)
    restarts: int = field(default=0, init=False)
    power_cycles: int = field(default=0, init=False)
    state: AdapterState = field(default=AdapterState.STARTING, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.filter = AdvertFilter(s.min_interval_s, s.rssi_delta_db, s.address_ttl_s)

    # --- the detection callback (runs in the event loop, must not block) -----------------

    def on_detection(self, device: BLEDevice, adv: AdvertisementData) -> None:
        now = self.clock.wall()
        self.received += 1
        self.last_advert = self.clock.monotonic()
        if self.failures:
            self.failures = 0
        mfr: dict[int, bytes] = {int(k): bytes(v) for k, v in adv.manufacturer_data.items()}
        svc: dict[str, bytes] = {str(k): bytes(v) for k, v in adv.service_data.items()}
        if not mfr and not svc:
            return  # nothing a beacon decoder could use (names, flags only)
        content = hash((tuple(sorted(mfr.items())), tuple(sorted(svc.items()))))
        if self.filter.admit(device.address, now, int(adv.rssi), content):
            self.emit(Advert(now, self.receiver, device.address, int(adv.rssi), b"", mfr, svc))

    # --- the recovery loop -------------------------------------------------------------

    def _health(self, state: AdapterState, reason: str = "") -> None:
        self.state = state
        log.info("adapter %s: %s %s", self.adapter, state, reason)
        self.emit(AdapterHealth(self.clock.wall(), self.adapter, state, reason, self.restarts))

    def _backoff(self) -> float:
        base = min(self.settings.backoff_max_s, 0.5 * 2.0 ** min(self.failures, 10))
        return base * random.uniform(0.75, 1.25)

    async def run(self, check_every: float = 1.0) -> None:
        from bleak import BleakScanner

        while True:
            scanner: Any = None
            try:
                bluez: dict[str, Any] = {"adapter": self.adapter}
                kwargs: dict[str, Any] = {"bluez": bluez}
                if self.settings.passive:
                    kwargs["scanning_mode"] = "passive"
                    bluez["or_patterns"] = _or_patterns()
                scanner = BleakScanner(detection_callback=self.on_detection, **kwargs)
                await scanner.start()
                self.last_advert = self.clock.monotonic()
                self._health(AdapterState.SCANNING)
                while True:
                    await asyncio.sleep(check_every)
                    self.filter.sweep(self.clock.wall())
                    if self.clock.monotonic() - self.last_advert > self.settings.silence_restart_s:
                        raise ScannerSilent(f"no advert for {self.settings.silence_restart_s} s")
            except asyncio.CancelledError:
                if scanner is not None:
                    with suppress(Exception):
                        await scanner.stop()
                raise
            except Exception as exc:  # bleak/D-Bus/OS errors all mean: recover
                self.failures += 1
                self.restarts += 1
                self._health(AdapterState.RESTARTING, f"{type(exc).__name__}: {exc}")
                if scanner is not None:
                    with suppress(Exception):
                        await asyncio.wait_for(scanner.stop(), 5.0)
                if self.failures >= self.settings.restarts_before_power_cycle:
                    await self._power_cycle()
                await asyncio.sleep(self._backoff())

    async def _power_cycle(self) -> None:
        """Adapter1.Powered off then on, through BlueZ on the system bus."""
        try:
            await set_adapter_powered(self.adapter, False)
            await asyncio.sleep(0.5)
            await set_adapter_powered(self.adapter, True)
            self.power_cycles += 1
            self._health(AdapterState.POWER_CYCLED)
        except Exception as exc:
            self._health(
                AdapterState.UNAVAILABLE, f"power cycle failed: {type(exc).__name__}: {exc}"
            )


async def set_adapter_powered(adapter: str, powered: bool) -> None:
    from dbus_fast import BusType, Message, MessageType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path=f"/org/bluez/{adapter}",
                interface="org.freedesktop.DBus.Properties",
                member="Set",
                signature="ssv",
                body=["org.bluez.Adapter1", "Powered", Variant("b", powered)],
            )
        )
        if reply is None or reply.message_type == MessageType.ERROR:
            name = reply.error_name if reply is not None else "no reply"
            raise ConnectionError(f"BlueZ refused Powered={powered}: {name}")
    finally:
        bus.disconnect()
