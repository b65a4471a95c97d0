"""The BLE source through bleak's real BlueZ backend, on a private D-Bus with a fake BlueZ.

Only the radio is simulated: bleak talks D-Bus to a service that owns `org.bluez`, exactly
as on a gateway. Tests assert the frames the pipeline receives, duplicate control, passive
scanning, and recovery when the adapter goes quiet or BlueZ disappears.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from gateway.clock import ManualClock, PinnedClock
from gateway.config.edges import BleAdapterSection
from gateway.config.sections import parse_config
from gateway.decode.ble import decode_advert
from gateway.model import AdapterHealth, Advert, EddystoneEID, IBeacon
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_pipeline
from gateway.runtime.sources import ble_sources
from gateway.sim.walkers import ibeacon_ad
from gateway.sources.ble import AdvertFilter, BleSource
from tests.support.fakebluez import FakeBlueZ, PrivateBus, wait_for

IBEACON_MFR = ibeacon_ad("5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b", 100, 1, -59)[
    7:
]  # after 0xFF and the company id
EDDYSTONE_EID = bytes.fromhex("30f68fb7cd3f0a1b2c3d")
FULL_FEAA = "0000feaa-0000-1000-8000-00805f9b34fb"


@pytest.fixture
async def bluez(bus: PrivateBus) -> AsyncIterator[FakeBlueZ]:
    fake = FakeBlueZ(bus.address)
    await fake.start()
    yield fake
    fake.stop()


class Collector:
    def __init__(self) -> None:
        self.items: list[Advert | AdapterHealth] = []

    def __call__(self, item: Advert | AdapterHealth) -> None:
        self.items.append(item)

    @property
    def adverts(self) -> list[Advert]:
        return [i for i in self.items if isinstance(i, Advert)]

    @property
    def states(self) -> list[str]:
        return [i.state for i in self.items if isinstance(i, AdapterHealth)]


class SettingsChanges(TypedDict, total=False):
    """The BleAdapterSection keys these tests set."""

    passive: bool
    min_interval_s: float
    silence_restart_s: float
    restarts_before_power_cycle: int
    backoff_max_s: float


def _settings(**kw: Unpack[SettingsChanges]) -> BleAdapterSection:
    return dataclasses.replace(BleAdapterSection(min_interval_s=60.0, rssi_delta_db=6.0), **kw)


async def _running(source: BleSource) -> asyncio.Task[None]:
    task = asyncio.create_task(source.run(check_every=0.05))
    await wait_for(lambda: source.state == "scanning")
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def test_frames_arrive_through_bleak_with_duplicate_control(
    bluez: FakeBlueZ, clock: PinnedClock
) -> None:
    out = Collector()
    source = BleSource("hci0", _settings(), "gw-entrance", out, clock)
    task = await _running(source)
    try:
        assert ("hci0", "SetDiscoveryFilter") in bluez.calls
        assert ("hci0", "StartDiscovery") in bluez.calls

        bluez.advertise("5A:10:22:8B:C1:03", -60, manufacturer={0x004C: IBEACON_MFR})
        await wait_for(lambda: len(out.adverts) == 1)
        first = out.adverts[0]
        assert (first.receiver, first.address, first.rssi) == (
            "gw-entrance",
            "5A:10:22:8B:C1:03",
            -60,
        )
        frame, _ = decode_advert(first)
        assert frame == IBeacon("5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b", 100, 1, -59)

        bluez.advertise("5A:10:22:8B:C1:03", -62)  # same content, RSSI moved 2 dB: duplicate
        bluez.advertise("5A:10:22:8B:C1:03", -71)  # moved 9 dB from the last forwarded
        await wait_for(lambda: len(out.adverts) == 2)
        assert out.adverts[1].rssi == -71
        assert source.filter.suppressed == 1

        other = ibeacon_ad("5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b", 100, 2, -59)[7:]
        bluez.advertise("5A:10:22:8B:C1:03", -71, manufacturer={0x004C: other})  # new content
        await wait_for(lambda: len(out.adverts) == 3)
        changed, _ = decode_advert(out.adverts[2])
        assert isinstance(changed, IBeacon) and changed.minor == 2

        # bleak names service data by full UUID; the decoder folds it to 0xFEAA.
        bluez.advertise("6B:00:00:00:00:01", -80, service={FULL_FEAA: EDDYSTONE_EID})
        await wait_for(lambda: len(out.adverts) == 4)
        eid, _ = decode_advert(out.adverts[3])
        assert eid == EddystoneEID("8fb7cd3f0a1b2c3d", -10)

        # A device with nothing a beacon decoder could use is not forwarded.
        bluez.advertise("7C:00:00:00:00:02", -50)
        await asyncio.sleep(0.2)
        assert len(out.adverts) == 4
        assert source.received == 6
    finally:
        await _stop(task)
    assert ("hci0", "StopDiscovery") in bluez.calls


async def test_unchanged_adverts_pass_again_after_the_interval(bluez: FakeBlueZ) -> None:
    out = Collector()
    manual = ManualClock(1000.0)
    source = BleSource("hci0", _settings(min_interval_s=5.0), "gw", out, manual)
    task = await _running(source)
    try:
        bluez.advertise("5A:10:22:8B:C1:03", -60, manufacturer={0x004C: IBEACON_MFR})
        await wait_for(lambda: len(out.adverts) == 1)
        manual.advance(1.0)
        bluez.advertise("5A:10:22:8B:C1:03", -61)
        await wait_for(lambda: source.received == 2)
        assert len(out.adverts) == 1
        manual.advance(5.0)
        bluez.advertise("5A:10:22:8B:C1:03", -60)
        await wait_for(lambda: len(out.adverts) == 2)
    finally:
        await _stop(task)


async def test_passive_scanning_registers_a_monitor(bluez: FakeBlueZ, clock: PinnedClock) -> None:
    out = Collector()
    source = BleSource("hci0", _settings(passive=True), "gw", out, clock)
    task = await _running(source)
    try:
        assert ("hci0", "RegisterMonitor") in bluez.calls
        assert ("hci0", "StartDiscovery") not in bluez.calls  # the radio never scans actively
        bluez.advertise("5A:10:22:8B:C1:03", -60, manufacturer={0x004C: IBEACON_MFR})
        await wait_for(lambda: len(out.adverts) == 1)
    finally:
        await _stop(task)
    assert ("hci0", "UnregisterMonitor") in bluez.calls


async def test_a_silent_adapter_is_restarted_then_power_cycled(
    bluez: FakeBlueZ, clock: PinnedClock
) -> None:
    out = Collector()
    settings = _settings(silence_restart_s=0.3, restarts_before_power_cycle=2, backoff_max_s=0.05)
    source = BleSource("hci0", settings, "gw", out, clock)
    task = await _running(source)
    try:
        await wait_for(lambda: source.power_cycles == 1, timeout=15)
        assert bluez.calls.count(("hci0", "StartDiscovery")) >= 2  # restarted before cycling
        assert ("hci0", "Powered=False") in bluez.calls
        assert bluez.calls.index(("hci0", "Powered=False")) < bluez.calls.index(
            ("hci0", "Powered=True")
        )
        await wait_for(lambda: out.states[-1] == "scanning")
        # Escalation: a restart first, and only when that did not help, a power cycle.
        assert out.states[:6] == [
            "scanning",
            "restarting",
            "scanning",
            "restarting",
            "power_cycled",
            "scanning",
        ]
        assert any("ScannerSilent" in i.reason for i in out.items if isinstance(i, AdapterHealth))
        # Adverts flow again after recovery.
        bluez.advertise("5A:10:22:8B:C1:03", -60, manufacturer={0x004C: IBEACON_MFR})
        await wait_for(lambda: len(out.adverts) == 1)
    finally:
        await _stop(task)


async def test_recovers_when_bluez_disappears_and_returns(
    bus: PrivateBus, clock: PinnedClock
) -> None:
    bluez = FakeBlueZ(bus.address)
    await bluez.start()
    out = Collector()
    settings = _settings(silence_restart_s=0.3, restarts_before_power_cycle=1, backoff_max_s=0.05)
    source = BleSource("hci0", settings, "gw", out, clock)
    task = await _running(source)
    try:
        bluez.advertise("5A:10:22:8B:C1:03", -60, manufacturer={0x004C: IBEACON_MFR})
        await wait_for(lambda: len(out.adverts) == 1)

        bluez.stop()  # bluetoothd died
        await wait_for(lambda: "unavailable" in out.states, timeout=15)
        reasons = " ".join(i.reason for i in out.items if isinstance(i, AdapterHealth))
        assert "org.bluez" in reasons or "ServiceUnknown" in reasons

        revived = FakeBlueZ(bus.address)  # systemd restarted it
        await revived.start()
        await wait_for(lambda: ("hci0", "StartDiscovery") in revived.calls, timeout=15)
        await wait_for(lambda: out.states[-1] == "scanning")
        revived.advertise("5A:10:22:8B:C1:04", -60, manufacturer={0x004C: IBEACON_MFR})
        await wait_for(lambda: len(out.adverts) == 2)
        revived.stop()
    finally:
        await _stop(task)


def test_address_flood_keeps_duplicate_state_bounded() -> None:
    """100k distinct random addresses over ~3 minutes: state stays within the TTL window."""
    rng = random.Random(5)
    flt = AdvertFilter(min_interval_s=1.0, rssi_delta_db=6.0, ttl_s=10.0)
    peak = 0
    for i in range(100_000):
        t = i * 0.002  # 500 new addresses per second for 200 s
        address = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
        assert flt.admit(address, t, -70, 1)
        if i % 500 == 0:
            flt.sweep(t)
        peak = max(peak, len(flt.last))
    assert peak <= 10.0 / 0.002 + 500 + 1  # TTL window plus one sweep period
    flt.sweep(1000.0)
    assert flt.last == {} and flt.forgotten == 100_000


async def test_ble_sightings_reach_the_offer_engine(
    bluez: FakeBlueZ, tmp_path: Path, clock: PinnedClock
) -> None:
    """D-Bus → bleak → BleSource → pipeline → zone enter → identity → offer → outbox."""
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path}'\n"
        "[sources.ble.hci0]\nreceiver = 'gw-entrance'\nmin_interval_s = 0.1\n"
        "[sinks]\nstdout = false\n"
    )
    gateway = Gateway(config, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    stop = asyncio.Event()
    run = asyncio.create_task(run_pipeline(gateway, ble_sources(gateway), stop))
    await wait_for(lambda: bool(gateway.ble_sources) and gateway.ble_sources[0].state == "scanning")
    for i in range(30):  # Alice's phone right by the entrance receiver for ~3 s
        bluez.advertise("5A:10:22:8B:C1:03", -52 - (i % 3), manufacturer={0x004C: IBEACON_MFR})
        await asyncio.sleep(0.1)
    await wait_for(lambda: gateway.pipeline.stats.offers_issued == 1)
    stop.set()
    summary = await run
    types = gateway.outbox.types()
    assert "gateway.adapter" in types  # the adapter reported itself scanning
    assert types.index("zone.enter") < types.index("offer.issued")
    assert summary.dropped == 0
    gateway.close()


async def test_two_adapters_are_two_sources(bus: PrivateBus, clock: PinnedClock) -> None:
    bluez = FakeBlueZ(bus.address, adapters=("hci0", "hci1"))
    await bluez.start()
    out = Collector()
    first = BleSource("hci0", _settings(), "gw-entrance", out, clock)
    second = BleSource("hci1", _settings(), "gw-counter", out, clock)
    tasks = [await _running(first), await _running(second)]
    try:
        bluez.advertise(
            "5A:10:22:8B:C1:03", -60, manufacturer={0x004C: IBEACON_MFR}, adapter="hci0"
        )
        bluez.advertise(
            "5A:10:22:8B:C1:03", -75, manufacturer={0x004C: IBEACON_MFR}, adapter="hci1"
        )
        await wait_for(lambda: len(out.adverts) == 2)
        assert sorted((a.receiver, a.rssi) for a in out.adverts) == [
            ("gw-counter", -75),
            ("gw-entrance", -60),
        ]
        assert ("hci1", "StartDiscovery") in bluez.calls
    finally:
        for task in tasks:
            await _stop(task)
        bluez.stop()
