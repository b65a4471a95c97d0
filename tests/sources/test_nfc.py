"""NFC through nfcpy's simulated UDP frontend: the reader code path is production code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import ndef
import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.decode.ndef import parse_message
from gateway.identity import loyalty
from gateway.model import AdapterHealth, Tap
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.sources import nfc_sources
from gateway.sources.nfc import NfcSource, read_once, write_ndef
from tests.support.fakebluez import wait_for
from tests.support.nfcsim import EmulatedTag, free_udp_port

KEY = bytes.fromhex("64656d6f2d6c6f79616c74792d6b6579")  # the default config's loyalty key
IDM = "02fe001122334455"


def test_read_once_sees_uid_and_records(clock: PinnedClock) -> None:
    port = free_udp_port()
    message = b"".join(ndef.message_encoder([ndef.UriRecord("https://shop.example/shelf/12")]))
    with EmulatedTag(port, IDM, message):
        read = read_once(f"udp:127.0.0.1:{port}", clock, timeout=5)
    assert read is not None
    assert read.uid.hex() == IDM and read.technology == "Type3Tag"
    assert parse_message(read.ndef)["records"][0]["uri"] == "https://shop.example/shelf/12"


def test_write_is_verified_by_reading_back(clock: PinnedClock) -> None:
    port = free_udp_port()
    token = loyalty.token_record(KEY, "p-alice-3f9c", "card-0002")
    with EmulatedTag(port, IDM) as tag:
        read = write_ndef(f"udp:127.0.0.1:{port}", token, clock, timeout=5)
        assert tag.message == token
    assert read.ndef == token
    verified, reason = loyalty.read_token(KEY, read.ndef)
    assert reason == "" and verified is not None and verified.profile_id == "p-alice-3f9c"


def test_write_to_a_read_only_tag_fails_clearly(clock: PinnedClock) -> None:
    port = free_udp_port()
    with EmulatedTag(port, IDM, writable=False), pytest.raises(OSError, match="read-only"):
        write_ndef(f"udp:127.0.0.1:{port}", b"\xd1\x01\x01\x55\x00", clock, timeout=5)


async def test_a_held_card_is_one_tap_and_a_new_presentation_another(
    clock: PinnedClock,
) -> None:
    port = free_udp_port()
    items: list[Tap | AdapterHealth] = []
    source = NfcSource("counter-reader", f"udp:127.0.0.1:{port}", items.append, clock)
    with EmulatedTag(port, IDM, loyalty.token_record(KEY, "p-alice-3f9c", "card-0001")) as tag:
        task = asyncio.create_task(source.run())
        try:
            await wait_for(lambda: source.taps == 1)
            await asyncio.sleep(1.0)  # the card stays on the reader
            assert source.taps == 1
            tag.present.clear()  # lifted...
            await asyncio.sleep(0.5)
            tag.present.set()  # ...and presented again
            await wait_for(lambda: source.taps == 2)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    taps = [i for i in items if isinstance(i, Tap)]
    assert [t.uid.hex() for t in taps] == [IDM, IDM]
    assert taps[0].reader == "counter-reader" and taps[0].ndef.startswith(b"\xd2")
    assert next(i.state for i in items if isinstance(i, AdapterHealth)) == "reading"


async def test_a_missing_reader_is_reported_and_retried(clock: PinnedClock) -> None:
    items: list[Tap | AdapterHealth] = []
    source = NfcSource("door", "usb:ffff:0000", items.append, clock, backoff_max_s=0.05)
    task = asyncio.create_task(source.run())
    try:
        await wait_for(lambda: len(items) >= 2)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    assert {i.state for i in items if isinstance(i, AdapterHealth)} == {"unavailable"}
    first = items[0]
    assert isinstance(first, AdapterHealth) and "usb:ffff:0000" in first.reason


async def _run_counter(tmp_path: Path, token: bytes, clock: PinnedClock) -> Gateway:
    port = free_udp_port()
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path}'\n[sinks]\nstdout = false\n"
        f"[nfc.touchpoints.counter-reader]\nzone = 'pickup-counter'\nredeem = true\n"
        f"device = 'udp:127.0.0.1:{port}'\n"
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    # Alice was offered her book a minute ago.
    gateway.conn.execute(
        "INSERT INTO offers (offer_id, profile_id, campaign, sku, code, issued_at, expires_at, "
        "store_day, status) VALUES ('of-1', 'p-alice-3f9c', 'pickup-discount', '978-0441478125', "
        "'PK-AAAA-BBBB', ?, ?, 'today', 'issued')",
        (clock.wall() - 60, clock.wall() + 7200),
    )
    stop = asyncio.Event()
    with EmulatedTag(port, "03fe00aabbccddee", token):  # (01 FE would mean NFC-DEP, not a tag)
        run = asyncio.create_task(run_gateway(gateway, nfc_sources(gateway), stop))
        await wait_for(lambda: bool(gateway.nfc_sources) and gateway.nfc_sources[0].taps >= 1)
        await asyncio.sleep(0.3)
        stop.set()
        await run
    return gateway


async def test_a_signed_card_redeems_at_the_counter(tmp_path: Path, clock: PinnedClock) -> None:
    token = loyalty.token_record(KEY, "p-alice-3f9c", "card-9")
    gateway = await _run_counter(tmp_path, token, clock)
    types = gateway.outbox.types()
    assert "nfc.tap" in types and "redemption.redeemed" in types
    status = gateway.conn.execute("SELECT status FROM offers WHERE offer_id = 'of-1'").fetchone()
    assert status == ("redeemed",)
    wire = json.dumps([json.loads(r[0]) for r in gateway.conn.execute("SELECT body FROM outbox")])
    assert "00aabbccddee" not in wire.lower()  # the raw UID never leaves the box


async def test_a_forged_card_does_not_redeem(tmp_path: Path, clock: PinnedClock) -> None:
    forged = loyalty.token_record(b"not-the-store-key", "p-alice-3f9c", "card-9")
    gateway = await _run_counter(tmp_path / "f", forged, clock)
    assert "redemption.redeemed" not in gateway.outbox.types()
    tap = json.loads(
        gateway.conn.execute("SELECT body FROM outbox WHERE type = 'nfc.tap'").fetchone()[0]
    )
    assert tap["data"]["token_verified"] is False
    status = gateway.conn.execute("SELECT status FROM offers WHERE offer_id = 'of-1'").fetchone()
    assert status == ("issued",)


def test_read_and_write_commands() -> None:
    port = free_udp_port()
    device = f"udp:127.0.0.1:{port}"
    with EmulatedTag(port, IDM) as tag:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "nfc",
                "write",
                "--device",
                device,
                "--uri",
                "https://shop.example/p/7",
                "--timeout",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["records"][0]["uri"] == "https://shop.example/p/7"
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "nfc", "read", "--device", device, "--timeout", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        read = json.loads(out.stdout)
        assert read["uid"] == IDM and read["records"][0]["uri"] == "https://shop.example/p/7"
        assert tag.message.hex() == read["ndef_hex"]
