"""Where a gateway's items come from, built from its config: a recorded trace (placed in time
by a `Rebase`), and one source per configured BLE adapter and NFC touchpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config.edges import BleAdapterSection
from gateway.humantime import parse_instant
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import Inlet, Source
from gateway.sources.replay import Rebase, replay
from gateway.store import db
from gateway.trace import TraceError


def replay_rebase(gateway: Gateway, keep_times: bool = False, start: str = "") -> Rebase:
    """How a replay places a recorded trace in time: its recorded times (`keep_times`), from
    a start a person typed (`start`: HH:MM store-local or ISO 8601), or — the default — from
    the moment this state first replayed it (stable across runs: the same event ids)."""
    if keep_times:
        return Rebase.keep()
    if start:
        tz = ZoneInfo(gateway.config.gateway.timezone)
        return Rebase.to(parse_instant(start, tz, gateway.clock.wall()))
    return Rebase(lambda first: db.replay_shift(gateway.conn, first, gateway.clock.wall()))


def replay_source(gateway: Gateway, path: Path, speed: float, rebase: Rebase) -> Source:
    def on_error(error: TraceError) -> None:
        gateway.summary.trace_errors.append(str(error))
        print(f"{path}: rejected {error}", file=sys.stderr)

    async def source(inlet: Inlet) -> int:
        return await replay(
            path, speed, inlet.put, on_error, gateway.clock, rebase, gateway.replay_progress
        )

    return source


def nfc_sources(gateway: Gateway) -> list[Source]:
    """One source per touchpoint that has a reader (profile or device string)."""
    from gateway.site.hardware import load_reader_profile
    from gateway.sources.nfc import NfcSource

    out: list[Source] = []
    for touchpoint, settings in gateway.config.nfc.touchpoints.items():
        device = settings.device
        if not device and settings.reader_profile:
            device = load_reader_profile(settings.reader_profile).device
        if not device:
            continue

        def make(reader: str = touchpoint, device: str = device) -> Source:
            async def source(inlet: Inlet) -> None:
                nfc = NfcSource(reader, device, inlet.put_nowait, gateway.clock)
                gateway.source_up(nfc)
                await nfc.run()

            return source

        out.append(make())
    return out


def ble_sources(gateway: Gateway) -> list[Source]:
    """One source per configured adapter; each scans until cancelled."""
    from gateway.sources.ble import BleSource

    out: list[Source] = []
    for adapter, settings in gateway.config.sources.ble.items():
        receiver = settings.receiver or gateway.config.gateway.id

        def make(
            adapter: str = adapter, settings: BleAdapterSection = settings, receiver: str = receiver
        ) -> Source:
            async def source(inlet: Inlet) -> None:
                ble = BleSource(adapter, settings, receiver, inlet.put_nowait, gateway.clock)
                gateway.source_up(ble)
                await ble.run()

            return source

        out.append(make())
    return out
