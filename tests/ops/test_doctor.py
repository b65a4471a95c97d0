"""`gateway doctor` on a good set-up and on broken ones, against real parts: a private D-Bus
with a fake BlueZ, an emulated NFC reader over nfcpy's UDP frontend, Mosquitto with TLS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.humantime import local_datetime
from gateway.ops.checks import FAIL
from gateway.ops.doctor import EARLIEST_PLAUSIBLE, check_clock
from gateway.resources import shared_path
from gateway.sources.ble import set_adapter_powered
from tests.support.broker import Broker, make_pki
from tests.support.fakebluez import FakeBlueZ, PrivateBus
from tests.support.nfcsim import free_udp_port


@pytest.fixture
async def bluez(bus: PrivateBus) -> AsyncIterator[FakeBlueZ]:
    fake = FakeBlueZ(bus.address, adapters=("hci0", "hci1"))
    await fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    pki = make_pki(tmp_path / "pki")
    broker = Broker(tmp_path / "broker", mode="tls", pki=pki)
    broker.start()
    yield broker, pki.ca
    broker.stop()


async def _doctor(config: Path) -> tuple[int, list[dict[str, Any]]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "doctor",
        "--config",
        str(config),
        "--json",
        "--timeout",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ.copy(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert out.strip(), err.decode()
    assert process.returncode is not None
    checks = json.loads(out) if out.strip() else []
    return process.returncode, checks


def _by_name(checks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for check in checks:
        out.setdefault(check["name"], []).append(check)
    return out


def _write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    return config


async def test_good_set_up_passes(
    tmp_path: Path, bluez: FakeBlueZ, tls_broker: tuple[Broker, Path]
) -> None:
    broker, ca = tls_broker
    shop_map = tmp_path / "shop.geojson"
    demo_map = shared_path("geofences/demo-bookstore.geojson")
    assert demo_map is not None
    shop_map.write_text(demo_map.read_text())
    config = _write(
        tmp_path,
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\nstore = 'shop-42'\n"
        f"pseudonym_key = '{'1f' * 32}'\n[map]\npath = '{shop_map}'\n"
        f"[nfc]\nloyalty_key = '{'2e' * 32}'\n"
        "[sources.ble.hci0]\nreceiver = 'gw-entrance'\n"
        f"[nfc.touchpoints.counter]\nzone = 'pickup-counter'\n"
        f"device = 'udp:127.0.0.1:{free_udp_port()}'\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\ntls = true\n"
        f"ca_file = '{ca}'\ndownlink_key = '{'3d' * 32}'\n"
        "[service]\ncontrol_listen = ''\n",
    )
    config.chmod(0o640)
    code, checks = await _doctor(config)
    named = _by_name(checks)
    assert code == 0, checks
    for name in ("config", "site", "secrets", "state", "database", "map", "bluetooth", "nfc"):
        assert [c["status"] for c in named[name]] == ["pass"], named[name]
    assert [c["status"] for c in named["broker"]] == ["pass"], named["broker"]
    assert "hci0" in named["bluetooth"][0]["detail"]
    assert "over TLS" in named["broker"][0]["detail"]
    assert named["clock"][0]["status"] in ("pass", "warn")  # a container may not sync
    assert all(c["status"] != FAIL for c in checks)


async def test_broken_set_ups_fail_with_fixes(
    tmp_path: Path, bluez: FakeBlueZ, tls_broker: tuple[Broker, Path]
) -> None:
    broker, _ca = tls_broker
    await set_adapter_powered("hci1", False)
    state = tmp_path / "state"
    state.mkdir()
    (state / "gateway.db").write_bytes(b"this is not a database" * 100)
    broken_map = tmp_path / "store.geojson"
    broken_map.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    config = _write(
        tmp_path,
        f"[gateway]\nstate_dir = '{state}'\n[map]\npath = '{broken_map}'\n"
        "[sources.ble.hci1]\n[sources.ble.hci7]\n"
        f"[nfc.touchpoints.counter]\nzone = 'pickup-counter'\ndevice = 'usb:1234:5678'\n"
        "[nfc.touchpoints.door]\nzone = 'entrance'\nreader_profile = 'no-such-reader'\n"
        # TLS on, but without the CA that signed the broker's certificate
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\ntls = true\n"
        "[service]\ncontrol_listen = ''\n",
    )
    code, checks = await _doctor(config)
    named = _by_name(checks)
    assert code == 1
    assert named["database"][0]["status"] == "fail" and "aside" in named["database"][0]["fix"]
    assert named["map"][0]["status"] == "fail" and "feature #0" in named["map"][0]["detail"]
    bluetooth = {c["detail"].split(":")[0]: c for c in named["bluetooth"]}
    assert bluetooth["hci1"]["status"] == "fail" and "powered off" in bluetooth["hci1"]["detail"]
    assert (
        bluetooth["hci7"]["status"] == "fail" and "no such adapter" in bluetooth["hci7"]["detail"]
    )
    assert "hci0, hci1" in bluetooth["hci7"]["detail"]
    nfc = {c["detail"].split(":")[0]: c for c in named["nfc"]}
    assert nfc["counter"]["status"] == "fail" and "usb:1234:5678" in nfc["counter"]["detail"]
    # an unknown reader profile is a failed check with the known ones, not exit 2 and no report
    assert nfc["door"]["status"] == "fail" and "no-such-reader" in nfc["door"]["detail"]
    assert "reader_profile" in nfc["door"]["fix"]
    assert named["broker"][0]["status"] == "fail" and "ca_file" in named["broker"][0]["fix"]
    assert all(c["fix"] for c in checks if c["status"] == "fail")


async def test_no_bus_unwritable_state_and_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = _write(
        tmp_path,
        f"[gateway]\nstate_dir = '{blocker / 'state'}'\n[sources.ble.hci0]\n"
        "[service]\ncontrol_listen = ''\n",
    )
    code, checks = await _doctor(config)
    named = _by_name(checks)
    assert code == 1
    assert named["state"][0]["status"] == "fail" and "not writable" in named["state"][0]["detail"]
    assert named["bluetooth"][0]["status"] == "fail"
    bad = _write(tmp_path, "[zones]\ndwell_s = 'long'\n")
    code, checks = await _doctor(bad)
    named = _by_name(checks)
    assert code == 1 and named["config"][0]["status"] == "fail"
    assert "zones.dwell_s" in named["config"][0]["detail"]
    assert {c["status"] for c in checks if c["name"] != "config"} == {"skip"}
    # a device profile the daemon would refuse to start with: a failed config check (it
    # said "valid" before, and the daemon then refused to start)
    for name in ("../../../etc/passwd", "p" * 300, "no-such-profile"):
        bad = _write(tmp_path, f"[presence]\ndevice_profile = '{name}'\n")
        code, checks = await _doctor(bad)
        config_check = _by_name(checks)["config"][0]
        assert code == 1 and config_check["status"] == "fail", config_check
        assert "presence.device_profile" in config_check["detail"] and config_check["fix"]


def test_a_clock_in_the_past_fails() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert check_clock(EARLIEST_PLAUSIBLE - 86400, berlin).status == "fail"
    later = check_clock(EARLIEST_PLAUSIBLE + 86400 * 400, berlin)
    assert later.status in ("pass", "warn")
    # shown as the shop lives it, and in UTC for whoever reads logs
    assert later.detail.startswith(local_datetime(EARLIEST_PLAUSIBLE + 86400 * 400, berlin))
    assert "UTC" in later.detail


async def test_a_deaf_demo_box_with_open_secrets_is_not_called_healthy(tmp_path: Path) -> None:
    """Issue 17: on the config an installer writes, doctor said '0 failed' while the box ran
    the demo map and store id with no radio; zone typos and world-readable keys passed."""
    config = _write(
        tmp_path,
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n"
        "[offers.pickup_discount]\nenter_zones = ['entrance', 'entrence']\n"
        "[nfc.touchpoints.counter]\nzone = 'pickup-counter'\n"
        "[nfc.touchpoints.till]\nzone = 'tills'\n"
        "[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = 1\n"
        "[service]\ncontrol_listen = ''\n",
    )
    config.chmod(0o644)
    code, checks = await _doctor(config)
    named = _by_name(checks)
    assert code == 1
    site = " | ".join(c["detail"] for c in named["site"] if c["status"] == FAIL)
    assert "demo bookstore" in site and "no source of sightings" in site
    assert "'entrence'" in site and "'tills'" in site and "'entrance'" not in site
    secrets = {c["status"]: c for c in named["secrets"]}
    assert "every user can read it" in secrets[FAIL]["detail"] and "chmod" in secrets[FAIL]["fix"]
    assert "downlink_key is empty" in secrets["warn"]["detail"]
    assert all(c["fix"] for c in checks if c["status"] == FAIL)


def test_receivers_that_hear_nothing_and_strangers_are_named() -> None:
    from gateway.config.sections import Config
    from gateway.ops.doctor import _receiver_problem
    from gateway.site.storemap import load_map

    config = Config()
    receivers = sorted(load_map(config.resolve(config.map.path)).receivers)
    heard = {r: 10 for r in receivers[1:]} | {"hci9": 5}
    problem = _receiver_problem(config, heard)
    assert f"heard nothing: {receivers[0]}" in problem
    assert "not on the map (dropped): hci9" in problem
    assert _receiver_problem(config, dict.fromkeys(receivers, 1)) == ""


def test_a_receiver_id_the_map_lacks_fails_before_the_daemon_runs() -> None:
    from gateway.config.sections import parse_config
    from gateway.ops.site_checks import check_site
    from gateway.site.storemap import load_map

    config = parse_config(
        "[gateway]\nid = 'gw-nowhere'\n[sources.ble.hci0]\nreceiver = 'gw-entrence'\n"
        "[sources.ble.hci1]\n"
    )
    failed = " | ".join(c.detail for c in check_site(config) if c.status == FAIL)
    assert "sources.ble.hci0.receiver = 'gw-entrence'" in failed
    assert "sources.ble.hci1 (no receiver: gateway.id) = 'gw-nowhere'" in failed
    placed = sorted(load_map(config.resolve(config.map.path)).receivers)
    fixed = parse_config(f"[sources.ble.hci0]\nreceiver = '{placed[0]}'\n")
    assert "receivers not on the map" not in " ".join(c.detail for c in check_site(fixed))


def test_the_solver_check_says_whether_the_kernel_was_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staff learn from doctor that an install without a C compiler runs the slow path,
    and how to get the fast one."""
    from gateway.ops.checks import PASS, WARN
    from gateway.ops.site_checks import check_solver
    from gateway.presence import batch

    compiled = check_solver()
    assert compiled.status == (PASS if batch.KERNEL is not None else WARN)
    monkeypatch.setattr(batch, "KERNEL", None)
    fallback = check_solver()
    assert fallback.status == WARN and "compiled kernel" in fallback.detail
    assert "gcc python3-dev" in fallback.fix
