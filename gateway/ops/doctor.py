"""`gateway doctor`: does this box work? One line per check, each failure with its fix.

Checks run in order; a check whose prerequisite failed (no valid config) is skipped, not
failed again. Statuses: pass, warn (works, but look at it), fail (does not work), skip.
The exit code is 1 when anything failed, so install scripts and monitoring can use it.
Nothing here writes except a probe file in the state directory, removed at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.config.schema import ConfigError
from gateway.config.sections import Config, load_config
from gateway.config.service import host_port
from gateway.humantime import duration, local_datetime
from gateway.ops.checks import FAIL, PASS, SKIP, WARN, Check
from gateway.ops.site_checks import check_secrets, check_site, check_solver

MIN_FREE_MB = 50
LOW_FREE_MB = 500
# A clock before this is certainly wrong (no RTC on a Pi, and no NTP yet).
EARLIEST_PLAUSIBLE = 1767225600.0  # 2026-01-01


def run_checks(config_file: str, clock: Clock, timeout_s: float = 5.0) -> list[Check]:
    checks: list[Check] = []
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        fix = (
            "correct the key named above (docs/config.md)"
            if exc.key
            else "give --config FILE or set $GATEWAY_CONFIG; to start one: "
            "gateway config-template > FILE (scripts/install writes it)"
        )
        checks.append(Check("config", FAIL, str(exc), fix))
        for name in ("site", "secrets", "state", "database", "map", "bluetooth", "nfc"):
            checks.append(Check(name, SKIP, "needs a valid config"))
        for name in ("broker", "clock"):
            checks.append(Check(name, SKIP, "needs a valid config"))
        return checks
    profile_problem = _device_profile_problem(config)
    if profile_problem:
        fix = "name a file of firmware_profiles/beacons/, without .toml (docs/config.md)"
        checks.append(Check("config", FAIL, profile_problem, fix))
    else:
        checks.append(Check("config", PASS, f"{config_file} is valid"))
    state = config.state_path

    def guarded(name: str, check: Callable[[], Check | list[Check]]) -> None:
        """A check that breaks is reported as a failed check, never as a traceback: the
        operator still gets the rest of the report."""
        try:
            result = check()
        except Exception as exc:
            result = Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}")
        checks.extend(result if isinstance(result, list) else [result])

    guarded("site", lambda: check_site(config))
    guarded("secrets", lambda: check_secrets(config, Path(config_file)))
    guarded("state", lambda: check_state_dir(state))
    guarded("database", lambda: check_database(state / "gateway.db"))
    guarded("map", lambda: check_map(config))
    guarded("solver", check_solver)
    guarded("bluetooth", lambda: asyncio.run(check_bluetooth(config, timeout_s)))
    guarded("nfc", lambda: check_nfc(config))
    guarded("broker", lambda: asyncio.run(check_broker(config, timeout_s, clock)))
    guarded("clock", lambda: check_clock(clock.wall(), ZoneInfo(config.gateway.timezone)))
    guarded("daemon", lambda: check_daemon(config, timeout_s))
    return checks


def _device_profile_problem(config: Config) -> str | None:
    """The daemon loads the shoppers' device profile at start-up and refuses to start
    without it: a string the schema accepts may name no profile, or not be a name at all."""
    from gateway.site.hardware import load_beacon_profile

    try:
        load_beacon_profile(config.presence.device_profile)
    except ConfigError as exc:
        return f"presence.device_profile: {exc}"
    return None


def check_state_dir(state: Path) -> Check:
    if not state.exists():
        # Not made here: a directory root creates would be root's, and the service could
        # not write it. The installer makes it; a daemon run by hand creates its own.
        parent = next((p for p in state.parents if p.exists()), Path("/"))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return Check(
                "state",
                FAIL,
                f"{state} does not exist and {parent} is not writable (to create it)",
                "create it for the service user (scripts/install does), or set gateway.state_dir",
            )
        return Check("state", PASS, f"{state} will be created at first start")
    try:
        probe = state / f".doctor-{os.getpid()}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return Check(
                "state",
                FAIL,
                f"{state}: the disk is full ({exc.strerror})",
                "free space on that file system (journal, old logs, large files), or move "
                "gateway.state_dir to a bigger one; the daemon sheds its outbox meanwhile",
            )
        return Check(
            "state",
            FAIL,
            f"{state} is not writable: {exc.strerror or exc}",
            "chown the directory to the service user, or set gateway.state_dir",
        )
    free_mb = shutil.disk_usage(state).free / 1e6
    if free_mb < MIN_FREE_MB:
        return Check(
            "state",
            FAIL,
            f"{state}: only {free_mb:.0f} MB free",
            "free space: the outbox and the profile cache need room",
        )
    if free_mb < LOW_FREE_MB:
        return Check(
            "state",
            WARN,
            f"{state}: {free_mb:.0f} MB free",
            "less than 500 MB: an outage backlog may not fit",
        )
    return Check("state", PASS, f"{state} writable, {free_mb:,.0f} MB free")


def check_database(path: Path) -> Check:
    from gateway.store.db import SCHEMA_VERSION

    if not path.exists():
        return Check("database", PASS, f"{path} will be created at first start")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
            version_row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Check(
            "database",
            FAIL,
            f"{path}: {exc}",
            "stop the service, move the file aside, restart (profiles resync from "
            "the backend; unsent events in it are lost)",
        )
    if result != ("ok",):
        return Check(
            "database",
            FAIL,
            f"{path}: integrity check says {result[0]}",
            "stop the service, run sqlite3 .recover into a new file, or move it aside",
        )
    version = version_row[0] or 0
    if version > SCHEMA_VERSION:
        return Check(
            "database",
            FAIL,
            f"schema {version} is newer than this gateway's {SCHEMA_VERSION}",
            "upgrade the gateway",
        )
    return Check("database", PASS, f"{path}: integrity ok, schema {version}")


def check_map(config: Config) -> Check:
    from gateway.site.check import check_file

    path = config.resolve(config.map.path)
    store, findings = check_file(path)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        first = errors[0]
        return Check(
            "map",
            FAIL,
            f"{path}: {len(errors)} errors, first: {first.where}: {first.problem}",
            f"gateway fences check {path}",
        )
    assert store is not None
    detail = (
        f"{path.name}: {len(store.zones)} zones, {len(store.receivers)} gateways, "
        f"{len(store.anchors)} beacons"
    )
    if findings:
        return Check(
            "map", WARN, f"{detail}; {len(findings)} warnings", f"gateway fences check {path}"
        )
    return Check("map", PASS, detail)


async def check_bluetooth(config: Config, timeout_s: float) -> list[Check]:
    adapters = list(config.sources.ble)
    if not adapters:
        return [Check("bluetooth", SKIP, "no [sources.ble.<adapter>] configured")]
    try:
        objects = await asyncio.wait_for(_bluez_objects(), timeout_s)
    except FileNotFoundError:
        return [
            Check(
                "bluetooth",
                FAIL,
                "no D-Bus system bus",
                "install and start dbus (apt-get install dbus)",
            )
        ]
    except Exception as exc:  # dbus-fast raises its own error types
        return [
            Check(
                "bluetooth",
                FAIL,
                f"BlueZ not answering on D-Bus: {exc}",
                "systemctl start bluetooth (apt-get install bluez)",
            )
        ]
    out = []
    for adapter in adapters:
        props = objects.get(f"/org/bluez/{adapter}", {}).get("org.bluez.Adapter1")
        if props is None:
            found = sorted(p.rsplit("/", 1)[-1] for p in objects if p.count("/") == 3)
            out.append(
                Check(
                    "bluetooth",
                    FAIL,
                    f"{adapter}: no such adapter (BlueZ has {', '.join(found) or 'none'})",
                    "plug in the dongle, or fix the adapter name in [sources.ble]",
                )
            )
        elif not props.get("Powered"):
            out.append(
                Check(
                    "bluetooth",
                    FAIL,
                    f"{adapter}: present but powered off",
                    "bluetoothctl power on (or rfkill unblock bluetooth)",
                )
            )
        else:
            out.append(Check("bluetooth", PASS, f"{adapter}: {props.get('Address', '?')}, powered"))
    return out


async def _bluez_objects() -> dict[str, dict[str, dict[str, Any]]]:
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
    finally:
        bus.disconnect()
    if reply is None or reply.message_type == MessageType.ERROR:
        raise ConnectionError(reply.error_name if reply is not None else "no reply")
    objects: dict[str, dict[str, dict[str, Any]]] = {}
    for path, interfaces in reply.body[0].items():
        objects[path] = {
            name: {k: v.value for k, v in props.items()} for name, props in interfaces.items()
        }
    return objects


def check_nfc(config: Config) -> list[Check]:
    from gateway.site.hardware import load_reader_profile, profile_names
    from gateway.sources.nfc import open_frontend

    out = []
    for touchpoint, settings in config.nfc.touchpoints.items():
        device = settings.device
        if not device and settings.reader_profile:
            try:
                device = load_reader_profile(settings.reader_profile).device
            except ConfigError as exc:
                known = ", ".join(profile_names("readers")) or "none installed"
                out.append(
                    Check(
                        "nfc",
                        FAIL,
                        f"{touchpoint}: {exc.problem}",
                        f"set nfc.touchpoints.{touchpoint}.reader_profile to one of: {known}",
                    )
                )
                continue
        if not device:
            continue
        try:
            frontend = open_frontend(device)
        except OSError as exc:
            out.append(
                Check(
                    "nfc",
                    FAIL,
                    f"{touchpoint}: {exc}",
                    "plug the reader in; for USB readers unload pn533_usb "
                    "(echo 'blacklist pn533_usb' > /etc/modprobe.d/nfc.conf)",
                )
            )
            continue
        frontend.close()
        out.append(Check("nfc", PASS, f"{touchpoint}: reader at {device} opens"))
    return out or [Check("nfc", SKIP, "no NFC touchpoint with a reader configured")]


async def check_broker(config: Config, timeout_s: float, clock: Clock) -> Check:
    mqtt = config.mqtt
    if not mqtt.enabled:
        return Check("broker", SKIP, "[mqtt] enabled = false (offline store)")
    import aiomqtt

    from gateway.sync.uplink import client_settings

    where = f"{mqtt.host}:{mqtt.port}"
    settings = client_settings(mqtt, config, b"")
    settings.pop("will", None)  # a probe must not announce this gateway offline
    settings["identifier"] = f"{settings['identifier']}-doctor"
    settings["timeout"] = timeout_s
    started = clock.monotonic()
    try:
        async with aiomqtt.Client(**settings):
            pass
    except Exception as exc:
        hint = "check host/port, credentials and certificates in [mqtt]"
        if "certificate" in str(exc).lower():
            hint = "the broker's certificate is not trusted: set mqtt.ca_file"
        return Check("broker", FAIL, f"{where}: {exc}", hint)
    ms = (clock.monotonic() - started) * 1000
    if not mqtt.tls:
        return Check(
            "broker",
            WARN,
            f"{where} reachable in {ms:.0f} ms, WITHOUT TLS",
            "set mqtt.tls = true unless the broker is on this box",
        )
    return Check("broker", PASS, f"{where} reachable over TLS in {ms:.0f} ms")


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux): only the leading fields are read; the rest is
    # padding large enough for every architecture.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


TIME_ERROR = 5  # adjtimex: the clock is not synchronised


def clock_synchronised() -> bool | None:
    """The kernel's own view (what timedatectl reports as 'System clock synchronized')."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)


def check_clock(t: float, tz: ZoneInfo) -> Check:
    """The system clock `t` (wall time, read by the caller) against plausibility and the
    kernel's synchronisation state; shown in the store's zone and in UTC."""
    when = f"{local_datetime(t, tz)} ({local_datetime(t, ZoneInfo('UTC'))})"
    if t < EARLIEST_PLAUSIBLE:
        return Check(
            "clock",
            FAIL,
            f"system time {when} is in the past",
            "enable NTP (timedatectl set-ntp true); offers and EIDs depend on time",
        )
    synced = clock_synchronised()
    if synced is None:
        return Check("clock", WARN, f"{when}; synchronisation state unknown", "check timedatectl")
    if not synced:
        return Check(
            "clock",
            WARN,
            f"{when}, NOT synchronised (quiet hours, caps and rotating ids drift with it)",
            "timedatectl set-ntp true (systemd-timesyncd or chrony)",
        )
    return Check("clock", PASS, f"{when}, synchronised")


def check_daemon(config: Config, timeout_s: float) -> Check:
    if not config.service.control_listen:
        return Check("daemon", SKIP, "service.control_listen is off")
    import httpx

    host, port = host_port(config.service.control_listen)
    host = f"[{host}]" if ":" in host else host
    from gateway.store.token import read_token

    token = read_token(config.state_path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(f"http://{host}:{port}/status", timeout=timeout_s, headers=headers)
        reply.raise_for_status()
        status = reply.json()
    except (httpx.HTTPError, ValueError):
        return Check(
            "daemon",
            WARN,
            f"not answering on {config.service.control_listen}",
            "systemctl start proximity-gateway (journalctl -u proximity-gateway)",
        )
    detail = (
        f"running {duration(status['uptime_s'])}, {status['tracked_devices']} devices, "
        f"outbox {sum(status['outbox']['depth'].values())}"
    )
    if not status.get("ready"):
        return Check("daemon", WARN, f"{detail}; not ready yet", "wait, then look at the log")
    unwell = {
        b: v["status"]
        for b, v in status.get("beacons", {}).items()
        if v["status"] in ("missing", "low_battery", "slow")
    }
    if unwell:
        listed = ", ".join(f"{b} {s.replace('_', ' ')}" for b, s in sorted(unwell.items()))
        return Check(
            "daemon",
            WARN,
            f"{detail}; beacons: {listed}",
            "replace the battery or check the beacon's place and power",
        )
    heard = status.get("sources", {}).get("adverts_by_receiver", {})
    if status["uptime_s"] >= DEAF_AFTER_S and heard is not None:
        problem = _receiver_problem(config, heard)
        if problem:
            return Check(
                "daemon",
                WARN,
                f"{detail}; {problem}",
                "check each receiver's adapter and its id in the map (gateway fences check)",
            )
    if status["mqtt"]["enabled"] and not status["mqtt"]["connected"]:
        return Check(
            "daemon",
            WARN,
            f"{detail}; broker disconnected: {status['mqtt']['last_error']}",
            "see the broker check above",
        )
    return Check("daemon", PASS, detail)


DEAF_AFTER_S = 60.0  # a running daemon's receivers that heard nothing for this long: warn


def _receiver_problem(config: Config, heard: dict[str, int]) -> str:
    """Receivers of the map that heard nothing, and sightings from receivers not on it."""
    from gateway.site.storemap import MapError, load_map

    try:
        receivers = set(load_map(config.resolve(config.map.path)).receivers)
    except (MapError, OSError):
        return ""  # the map check says why
    deaf = sorted(r for r in receivers if not heard.get(r))
    strangers = sorted(r for r, n in heard.items() if n and r not in receivers)
    parts = []
    if deaf:
        parts.append(f"receivers that heard nothing: {', '.join(deaf)}")
    if strangers:
        parts.append(f"sightings from receivers not on the map (dropped): {', '.join(strangers)}")
    return "; ".join(parts)
