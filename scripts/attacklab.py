"""Issue 16's attacks, re-run against the real gateway: `gateway run` daemons (two for the
cross-gateway replays), a real Mosquitto, loopback HTTP and headless Chromium.

    .venv/bin/python scripts/attacklab.py [attack ...] [--json FILE]

Attacks are the issue's numbered items 1-9 (`1` ... `9`; none named: all). Prints a table
(attack, what the issue measured, what happens now, verdict) and writes the figures as JSON
(default: attacklab.json in the working directory). Each attack takes seconds; `1` takes
about two minutes (150 connectivity samples over 75 s, as the issue measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiomqtt  # noqa: E402
import httpx  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from gateway.model import Advert  # noqa: E402
from gateway.sync import peers, signed  # noqa: E402
from gateway.trace import advert_object, parse_object  # noqa: E402
from gateway.web.auth import hash_password  # noqa: E402
from tests.support.broker import Broker, free_port  # noqa: E402

KEY = bytes.fromhex("5a" * 32)
PEER_KEY = bytes.fromhex("3c" * 32)
STORE = "demo-bookstore"
BASE = f"storegate/v1/{STORE}"
PASSWORD = "shop-floor-2026"
ALICE = "5f2b7a103c4d4e8f9a1b2c3d4e5f6a7b00640001"
BOB = "5f2b7a103c4d4e8f9a1b2c3d4e5f6a7b00640002"
BOB_ID = "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:2"
DATA = REPO / "gateway" / "data"


@dataclass
class Result:
    attack: str
    before: str
    now: str
    held: bool
    figures: dict[str, Any] = field(default_factory=dict)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 30.0, step: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await condition():
                return True
        await asyncio.sleep(step)
    return False


class Daemon:
    """One `gateway run` process with its own config, state and control port."""

    def __init__(
        self,
        folder: Path,
        sections: dict[str, list[str]],
        *,
        gateway_id: str = "gw-demo-1",
        files: int | None = None,
        profiles: bool = True,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = folder / "state"
        self.log = folder / "daemon.log"
        merged: dict[str, list[str]] = {
            "gateway": [f"id = '{gateway_id}'", f"state_dir = '{self.state}'"],
            "sinks": ["stdout = false"],
            "offers.limits": ["quiet_hours = []"],
            "service": [f"control_listen = '127.0.0.1:{self.port}'"],
            "console": [f"password_hash = '{PASSWORD_HASH}'"],
        }
        for name, lines in sections.items():
            merged.setdefault(name, []).extend(lines)
        self.config = folder / "gateway.toml"
        self.config.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{line}\n" for line in lines)
                for name, lines in merged.items()
            )
        )
        self.config.chmod(0o600)
        self.files = files
        self.profiles = profiles
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def _limit(self) -> None:
        if self.files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.files, self.files))

    async def start(self) -> None:
        if self.profiles:
            gateway_cli(
                "profiles", "import", str(DATA / "demo-profiles.json"), "--config", str(self.config)
            )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit if self.files else None,
            )
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
                return (await client.get(f"{self.url}/healthz", timeout=5)).status_code == 200

            if not await wait_for(healthy, 60, 0.1):
                raise RuntimeError(f"daemon did not start: {self.log.read_text()[-2000:]}")
        self.token = (self.state / "control.token").read_text().strip()

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            reply = await client.get(
                f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
            )
        out: dict[str, float] = {}
        for line in reply.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def metric(self, name: str) -> float:
        return (await self.metrics()).get(name, 0.0)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.state / 'gateway.db'}?mode=ro", uri=True)

    def stock(self, sku: str = "x") -> int | None:
        with contextlib.closing(self.db()) as conn:
            row = conn.execute("SELECT quantity FROM stock WHERE sku = ?", (sku,)).fetchone()
        return None if row is None else int(row[0])

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


PASSWORD_HASH = hash_password(PASSWORD)


def gateway_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def mqtt_sections(port: int, *extra: str, protocol: str = "5") -> dict[str, list[str]]:
    return {
        "mqtt": [
            "enabled = true",
            "host = '127.0.0.1'",
            f"port = {port}",
            f"downlink_key = '{KEY.hex()}'",
            "backoff_max_s = 0.5",
            f"protocol = '{protocol}'",
            *extra,
        ]
    }


@contextlib.asynccontextmanager
async def intruder(port: int, name: str = "intruder") -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=name, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        yield client


def rejected(metrics: dict[str, float]) -> dict[str, int]:
    prefix = 'gateway_downlink_rejected_total{reason="'
    return {k[len(prefix) : -2]: int(v) for k, v in metrics.items() if k.startswith(prefix) and v}


def sealed_stock(version: int, quantity: int, now: float, **bind: Any) -> bytes:
    doc = {
        "family": "stock",
        "kind": "snapshot",
        "version": version,
        "data": {"items": [{"sku": "x", "quantity": quantity, "zone_id": "aisle-kids"}]},
    }
    return json.dumps(
        signed.seal(KEY, doc, store=bind.pop("store", STORE), now=now, **bind)
    ).encode()


def raw_signed(text: str) -> bytes:
    """A document signed by whoever holds the key over bytes no canonical form allows."""
    sig = hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()
    return (text[:-1] + f', "sig": "{sig}"}}').encode()


# --- 1: hostile JSON on the broker ---


async def attack_1(lab: Path) -> Result:
    broker = Broker(lab / "broker1")
    broker.start()
    daemon = Daemon(
        lab / "gw1",
        mqtt_sections(broker.port, "peer_sightings = true", f"peer_key = '{PEER_KEY.hex()}'"),
    )
    figures: dict[str, Any] = {}
    try:
        await daemon.start()
        await wait_for(lambda: _is(daemon, "gateway_mqtt_connected", 1))
        async with intruder(broker.port) as evil:
            bomb = b"[" * 1024
            await evil.publish(f"{BASE}/down/stock", bomb, qos=1, retain=True)
            await evil.publish(f"{BASE}/gw-demo-1/cmd/flush", bomb, qos=1, retain=True)
            await evil.publish(f"{BASE}/gw-demo-2/sightings", bomb, qos=1, retain=True)
            samples: list[bool] = []
            applied_at: float | None = None
            start = time.monotonic()
            for n in range(150):
                samples.append(await daemon.metric("gateway_mqtt_connected") == 1)
                if n == 20:  # a correctly signed document, while the bomb stays retained
                    sent = time.monotonic()
                    await evil.publish(f"{BASE}/down/stock", sealed_stock(1, 5, time.time()), qos=1)
                if applied_at is None and n > 20 and daemon.stock() == 5:
                    applied_at = time.monotonic() - sent
                await asyncio.sleep(max(0.0, start + 0.5 * (n + 1) - time.monotonic()))
            metrics = await daemon.metrics()
            figures["connected_samples"] = f"{sum(samples)}/{len(samples)}"
            figures["sampled_over_s"] = round(time.monotonic() - start, 1)
            figures["connects"] = int(metrics.get("gateway_mqtt_connects_total", 0))
            figures["signed_applied_after_s"] = None if applied_at is None else round(applied_at, 2)
            figures["rejected_by_reason"] = rejected(metrics)
            figures["peer_rejected"] = {
                k: int(v)
                for k, v in metrics.items()
                if k.startswith("gateway_peer_sightings_total") and v
            }
            held_bomb = (
                sum(samples) == len(samples) and figures["connects"] == 1 and applied_at is not None
            )
            # 2,000 tiny unsigned messages: counted, not queued, uplinked and logged one by one
            lines_before = len(daemon.log.read_text().splitlines())
            before = rejected(await daemon.metrics()).get("unsigned", 0)
            for i in range(2000):
                await evil.publish(f"{BASE}/down/stock", b'{"n": %d}' % i, qos=0)
            await wait_for(lambda: _rejected_at_least(daemon, "unsigned", before + 2000), 60, 0.2)
            await asyncio.sleep(1.0)
            with contextlib.closing(daemon.db()) as conn:
                notices = (
                    conn.execute(
                        "SELECT count(*) FROM outbox WHERE type LIKE '%downlink_rejected'"
                    ).fetchone()[0]
                    + conn.execute("SELECT count(*) FROM delivered").fetchone()[0]
                )
            log_lines = len(daemon.log.read_text().splitlines()) - lines_before
            counted = rejected(await daemon.metrics()).get("unsigned", 0) - before
            figures["flood"] = {
                "sent": 2000,
                "counted": counted,
                "outbox_rows_incl_delivered": notices,
                "log_lines": log_lines,
            }
            held_flood = counted == 2000 and notices <= 25 and log_lines <= 25
            # 50 MB messages: RSS (MQTT 5 tells the broker our Maximum Packet Size)
            rss_before = daemon.peak_rss_mb()
            await evil.publish(f"{BASE}/down/stock", b"[" * (50 << 20), qos=1)
            await evil.publish(f"{BASE}/gw-demo-1/cmd/flush", b"{" * (50 << 20), qos=1)
            await asyncio.sleep(5)
            figures["rss_50mb_mqtt5"] = {
                "peak_before_mb": round(rss_before, 1),
                "peak_after_mb": round(daemon.peak_rss_mb(), 1),
                "connects": int(await daemon.metric("gateway_mqtt_connects_total")),
            }
            await evil.publish(f"{BASE}/down/stock", b"", qos=1, retain=True)
            await evil.publish(f"{BASE}/gw-demo-1/cmd/flush", b"", qos=1, retain=True)
            await evil.publish(f"{BASE}/gw-demo-2/sightings", b"", qos=1, retain=True)
    finally:
        daemon.stop()
        broker.stop()
    figures["rss_50mb_mqtt311_broker_limit"] = await _rss_311(lab)
    # the documented residual: 3.1.1 with a broker that has no size limit
    figures["rss_50mb_mqtt311_no_broker_limit"] = await _rss_311(lab, broker_limit=False)
    nolimit = figures["rss_50mb_mqtt311_no_broker_limit"]["peak_after_mb"]
    rss = figures["rss_50mb_mqtt5"]["peak_after_mb"]
    rss311 = figures["rss_50mb_mqtt311_broker_limit"]["peak_after_mb"]
    held = held_bomb and held_flood and rss < 200 and rss311 < 200
    return Result(
        "1 unsigned nested JSON / flood / 50 MB",
        "1 kB of '[' retained: connected 2/150 samples over 75 s, signed doc applied only after "
        "clearing; 50 MB: RSS 215-359 MB; 2,000 junk: 2,000 outbox writes, uplinks, log lines",
        f"connected {figures['connected_samples']} over {figures['sampled_over_s']} s, "
        f"{figures['connects']} connection, signed doc applied in "
        f"{figures['signed_applied_after_s']} s "
        f"with the bomb retained; 2,000 junk: {counted} counted, {notices} notices, "
        f"{log_lines} log lines; 50 MB: peak RSS {rss} MB (MQTT 5), {rss311} MB "
        f"(3.1.1, broker max_packet_size); {nolimit} MB on 3.1.1 with no broker limit "
        "(documented: such a broker must set max_packet_size)",
        held,
        figures,
    )


async def _rss_311(lab: Path, broker_limit: bool = True) -> dict[str, Any]:
    """MQTT 3.1.1 cannot tell the broker a size: the operations guide's broker limit does."""
    name = "limit" if broker_limit else "nolimit"
    broker = Broker(lab / f"broker1-{name}")
    if broker_limit:
        with broker.conf.open("a") as conf:
            conf.write("max_packet_size 4200000\n")
    broker.start()
    daemon = Daemon(
        lab / f"gw1-{name}", mqtt_sections(broker.port, protocol="3.1.1"), profiles=False
    )
    try:
        await daemon.start()
        await wait_for(lambda: _is(daemon, "gateway_mqtt_connected", 1))
        before = daemon.peak_rss_mb()
        with contextlib.suppress(aiomqtt.MqttError):  # the broker may drop the publisher
            async with intruder(broker.port, "intruder-311") as evil:
                await evil.publish(f"{BASE}/down/stock", b"[" * (50 << 20), qos=1, timeout=10)
        await asyncio.sleep(3)
        return {
            "peak_before_mb": round(before, 1),
            "peak_after_mb": round(daemon.peak_rss_mb(), 1),
            "connects": int(await daemon.metric("gateway_mqtt_connects_total")),
        }
    finally:
        daemon.stop()
        broker.stop()


async def _is(daemon: Daemon, name: str, value: float) -> bool:
    return await daemon.metric(name) == value


async def _rejected_at_least(daemon: Daemon, reason: str, n: int) -> bool:
    return rejected(await daemon.metrics()).get(reason, 0) >= n


# --- 2: stored XSS through map ids ---

PWN = [
    '" tabindex="1" autofocus onfocus="window.__pwned=1" x="',
    "' autofocus onfocus='window.__pwned=2' x='",
    "<script>window.__pwned=3</script>",
    '<img src=x onerror="window.__pwned=4">',
    '</text><svg onload="window.__pwned=5"></svg><text>',
]


async def attack_2(lab: Path) -> Result:
    base = json.loads((REPO / "geofences" / "demo-bookstore.geojson").read_text())
    zones = [f for f in base["features"] if f["properties"]["kind"] == "zone"]
    # (a) hostile ids: the map must not load anywhere
    hostile_ids = json.loads(json.dumps(base))
    lab.mkdir(parents=True, exist_ok=True)
    hz = [f for f in hostile_ids["features"] if f["properties"]["kind"] == "zone"]
    hz[-1]["properties"]["id"] = "x" + PWN[0]
    hz[-2]["properties"]["id"] = "y" + PWN[1]
    ids_map = lab / "hostile-ids.geojson"
    ids_map.write_text(json.dumps(hostile_ids))
    fences = gateway_cli("fences", "check", str(ids_map))
    folder = lab / "gw2a"
    lab.mkdir(parents=True, exist_ok=True)
    probe = Daemon(folder, {"map": [f"path = '{ids_map}'"]}, profiles=False)
    run = gateway_cli("run", "--config", str(probe.config), timeout=60)
    first = (run.stderr or run.stdout).strip().splitlines()[:1]
    doctor = gateway_cli("doctor", "--config", str(probe.config), timeout=120)
    doctor_map = [x for x in doctor.stdout.splitlines() if x.split()[1:2] == ["map"]]
    # (b) hostile names, categories and store name (free text): shown as text in Chromium
    for feature, payload in zip(zones, PWN, strict=False):
        feature["properties"]["name"] = payload
        feature["properties"]["category"] = payload
    base["properties"]["name"] = PWN[2] + PWN[0]
    names_map = lab / "hostile-names.geojson"
    names_map.write_text(json.dumps(base))
    daemon = Daemon(lab / "gw2b", {"map": [f"path = '{names_map}'"]})
    facts: dict[str, Any] = {}
    try:
        await daemon.start()
        facts = await asyncio.to_thread(_browse, daemon.url)
    finally:
        daemon.stop()
    figures = {
        "fences_check_exit": fences.returncode,
        "fences_check_says": (fences.stdout + fences.stderr).strip().splitlines()[:2],
        "run_exit": run.returncode,
        "doctor_exit": doctor.returncode,
        "doctor_map": doctor_map[:1],
        "run_says": first,
        **facts,
    }
    held = (
        fences.returncode != 0
        and run.returncode != 0
        and bool(doctor_map)
        and doctor_map[0].startswith("FAIL")
        and facts.get("pwned") is None
        and facts.get("handlers") == 0
        and facts.get("csp_violations") == 0
    )
    return Result(
        "2 stored XSS through map ids",
        "zone id with tabindex autofocus onfocus ran on page load, read the CSRF token and "
        "/status, started a calibration; fences check and doctor passed the map",
        f"hostile ids: fences check exit {fences.returncode}, gateway run exit {run.returncode}, "
        f"doctor {(doctor_map or ['no map line'])[0].split()[0]} map (exit {doctor.returncode}); "
        f"hostile names/categories/store name in Chromium: {facts.get('payloads_shown')} shown as "
        f"text, window.__pwned={facts.get('pwned')}, {facts.get('handlers')} on* attributes, "
        f"{facts.get('csp_violations')} CSP reports, {facts.get('calibrations')} calibrations",
        held,
        figures,
    )


def _browse(url: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    from tests.web.test_console import _browser, _wait

    driver = _browser()
    try:
        driver.get(f"{url}/")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login").click()
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#plan svg"))
        time.sleep(1.0)
        for element in driver.find_elements(By.CSS_SELECTOR, "[tabindex], #plan *"):
            with contextlib.suppress(Exception):
                element.click()
        texts = driver.execute_script(
            "return [...document.querySelectorAll('#plan text')].map(e => e.textContent)"
        )
        shown = sum(1 for p in PWN if any(p[:12] in t for t in texts))
        calibration = driver.execute_script(
            "return fetch('/api/calibration').then(r => r.json()).catch(e => null)"
        )
        log = driver.get_log("browser")
        return {
            "pwned": driver.execute_script(
                "return window.__pwned === undefined ? null : window.__pwned"
            ),
            "handlers": driver.execute_script(
                "return [...document.querySelectorAll('*')].filter(e => "
                "[...e.attributes].some(a => a.name.startsWith('on'))).length"
            ),
            "scripts": driver.execute_script("return [...document.scripts].map(s => s.src)"),
            "csp_violations": sum(1 for e in log if "Content Security Policy" in e["message"]),
            "payloads_shown": shown,
            "calibrations": 0 if not calibration or not calibration.get("running") else 1,
        }
    finally:
        driver.quit()


# --- 3: replays across gateways and time ---


async def attack_3(lab: Path) -> Result:
    broker = Broker(lab / "broker3")
    broker.start()
    one = Daemon(lab / "gw3a", mqtt_sections(broker.port), gateway_id="gw-demo-1", profiles=False)
    two = Daemon(lab / "gw3b", mqtt_sections(broker.port), gateway_id="gw-demo-2", profiles=False)
    replies: list[tuple[str, dict[str, Any]]] = []
    figures: dict[str, Any] = {}
    try:
        await asyncio.gather(one.start(), two.start())
        for d in (one, two):
            await wait_for(lambda d=d: _is(d, "gateway_mqtt_connected", 1))  # type: ignore[misc]
        async with intruder(broker.port) as evil:
            await evil.subscribe(f"{BASE}/#", qos=1)

            async def collect() -> None:
                async for message in evil.messages:
                    topic = str(message.topic)
                    if "/cmd-resp/" in topic or "/events/" in topic:
                        with contextlib.suppress(Exception):
                            assert isinstance(message.payload, bytes)
                            replies.append((topic, json.loads(message.payload)))

            collector = asyncio.create_task(collect())
            now = time.time()
            one_topic, two_topic = f"{BASE}/gw-demo-1", f"{BASE}/gw-demo-2"
            await evil.publish(
                f"{one_topic}/down/stock", sealed_stock(1, 7, now, gateway="gw-demo-1"), qos=1
            )
            await evil.publish(
                f"{two_topic}/down/stock", sealed_stock(1, 9, now, gateway="gw-demo-2"), qos=1
            )
            await wait_for(lambda: _true(one.stock() == 7 and two.stock() == 9))
            # captured on gw-demo-1's topic (a newer snapshot that empties the shelf)
            captured = sealed_stock(2, 0, now, gateway="gw-demo-1")
            await evil.publish(f"{two_topic}/down/stock", captured, qos=1)
            # a fresh gateway (gw-demo-2 holds no profiles) fed an old capture
            old = json.dumps(
                signed.seal(
                    KEY,
                    {
                        "family": "profiles",
                        "kind": "snapshot",
                        "version": 1,
                        "data": {"profiles": []},
                    },
                    store=STORE,
                    now=now - 40 * 86400,
                    valid_s=7 * 86400,
                )
            ).encode()
            await evil.publish(f"{BASE}/down/profiles", old, qos=1)
            other_store = sealed_stock(3, 0, now, store="other-store")
            await evil.publish(f"{BASE}/down/stock", other_store, qos=1)
            # a command sniffed on gw-demo-1's topic
            cmd = signed.seal(
                KEY,
                {"command": "diagnose", "nonce": "lab-nonce-1"},
                store=STORE,
                gateway="gw-demo-1",
                now=now,
                valid_s=300,
            )
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho
            props.ResponseTopic = f"{one_topic}/events/orders"  # steering the reply
            await evil.publish(
                f"{one_topic}/cmd/diagnose", json.dumps(cmd), qos=1, properties=props
            )
            await wait_for(lambda: _true(len([r for r in replies if "/cmd-resp/" in r[0]]) >= 1))
            await evil.publish(f"{two_topic}/cmd/diagnose", json.dumps(cmd), qos=1)
            await evil.publish(f"{one_topic}/cmd/diagnose", json.dumps(cmd), qos=1)  # again
            star = signed.sign(KEY, {**cmd, "gateway": "*", "nonce": "lab-nonce-2"})
            await evil.publish(f"{one_topic}/cmd/diagnose", json.dumps(star), qos=1)
            await wait_for(lambda: _true(len([r for r in replies if "/cmd-resp/" in r[0]]) >= 4))
            await asyncio.sleep(1.0)
            collector.cancel()
        reasons_one = rejected(await one.metrics())
        reasons_two = rejected(await two.metrics())
        answers = [
            (t.split("/")[3], r.get("ok"), r.get("reason")) for t, r in replies if "/cmd-resp/" in t
        ]
        steered = [t for t, r in replies if t.endswith("/events/orders")]
        figures = {
            "stock_gw1": one.stock(),
            "stock_gw2_after_captured_snapshot": two.stock(),
            "rejected_gw1": reasons_one,
            "rejected_gw2": reasons_two,
            "command_answers": answers,
            "replies_steered_into_events": len(steered),
        }
    finally:
        one.stop()
        two.stop()
        broker.stop()
    ran = [a for a in figures["command_answers"] if a[1] is True]
    held = (
        figures["stock_gw2_after_captured_snapshot"] == 9
        and figures["stock_gw1"] == 7
        and len(ran) == 1
        and ran[0][0] == "gw-demo-1"
        and figures["replies_steered_into_events"] == 0
        and figures["rejected_gw2"].get("expired", 0) >= 1
    )
    return Result(
        "3 replay across gateways and time",
        "a snapshot captured from one gateway's topic wiped another's stock; a sniffed command "
        "worked on a second gateway; a fresh gateway took any old snapshot; the reply could be "
        "steered into another stream",
        f"gw-demo-2 stock {figures['stock_gw2_after_captured_snapshot']} (kept 9; "
        f"{figures['rejected_gw2']}); command answers {figures['command_answers']} "
        f"(ran once, on its gateway); 40-day-old snapshot and other store's: "
        f"{figures['rejected_gw1']}; replies in events/orders: "
        f"{figures['replies_steered_into_events']}",
        held,
        figures,
    )


async def _true(value: bool) -> bool:
    return value


# --- 4: forged peer sightings ---


def _alice_adverts(now: float, seconds: float = 40.0) -> list[list[Advert]]:
    """Alice's beacon as the store's four receivers heard it, moved to now, in 100 batches."""
    lines = [json.loads(x) for x in (DATA / "demo-trace.jsonl").read_text().splitlines()]
    hers = [o for o in lines if o.get("kind") == "ble" and ALICE in o.get("ad", "")]
    t0 = hers[0]["t"]
    hers = [o for o in hers if o["t"] - t0 <= seconds]
    adverts: list[Advert] = []
    for index, obj in enumerate(hers):
        item = parse_object({**obj, "t": now - seconds + (obj["t"] - t0)}, index)
        if isinstance(item, Advert):
            adverts.append(item)
    size = max(1, len(adverts) // 100)
    return [adverts[i * size : (i + 1) * size] for i in range(100)]


async def attack_4(lab: Path) -> Result:
    broker = Broker(lab / "broker4")
    broker.start()
    daemon = Daemon(
        lab / "gw4",
        mqtt_sections(broker.port, "peer_sightings = true", f"peer_key = '{PEER_KEY.hex()}'"),
    )
    try:
        await daemon.start()
        await wait_for(lambda: _is(daemon, "gateway_mqtt_connected", 1))
        wrong_key = bytes.fromhex("77" * 32)
        async with intruder(broker.port) as evil:
            for n, batch in enumerate(_alice_adverts(time.time())):
                peer = "gw-evil" if n % 2 else "gw-demo-2"  # made up, or a real peer's name
                topic = peers.PeerTopic("storegate/v1", STORE, peer)
                if n % 4 < 2:  # the old unsigned format
                    payload = json.dumps(
                        {
                            "v": peers.FORMAT_VERSION,
                            "gateway": peer,
                            "sent_at": time.time(),
                            "sightings": [advert_object(a, with_address=False) for a in batch],
                        }
                    ).encode()
                else:  # signed with a key that is not the store's
                    payload = peers.encode(topic, wrong_key, batch, sent_at=time.time())
                await evil.publish(topic.topic, payload, qos=1)
                await asyncio.sleep(0.02)
        await wait_for(lambda: _peer_total(daemon, 100), 30)
        await asyncio.sleep(2.0)
        metrics = await daemon.metrics()
        peer_results = {
            k.split('"')[1]: int(v)
            for k, v in metrics.items()
            if k.startswith("gateway_peer_sightings_total") and v
        }
        zone_events = int(
            sum(v for k, v in metrics.items() if k.startswith("gateway_zone_events_total"))
        )
        offers = int(
            sum(v for k, v in metrics.items() if k.startswith("gateway_offers_issued_total"))
        )
        pushes = daemon.state / "pushes.jsonl"
        pushed = len(pushes.read_text().splitlines()) if pushes.exists() else 0
    finally:
        daemon.stop()
        broker.stop()
    accepted = sum(v for k, v in peer_results.items() if k == "accepted")
    held = accepted == 0 and zone_events == 0 and offers == 0 and pushed == 0
    return Result(
        "4 forged peer sightings",
        "100 unsigned batches from a made-up gateway carrying a shopper's beacon: a zone entry "
        "and an offer pushed to her",
        f"100 forged batches (50 unsigned, 50 under a wrong key; from gw-evil and gw-demo-2): "
        f"{peer_results}; {zone_events} zone events, {offers} offers, {pushed} pushes",
        held,
        {
            "peer_sightings": peer_results,
            "zone_events": zone_events,
            "offers": offers,
            "pushes": pushed,
        },
    )


async def _peer_total(daemon: Daemon, n: int) -> bool:
    metrics = await daemon.metrics()
    return sum(v for k, v in metrics.items() if k.startswith("gateway_peer_sightings_total")) >= n


# --- 5: a shopper who said no ---


Visit = tuple[list[dict[str, Any]], list[Any], list[Any], list[str]]


async def _visit(lab: Path) -> Visit:
    """The demo trace replayed by a fresh gateway: what went upstream, what the box kept."""
    broker = Broker(lab / "broker5")
    broker.start()
    events: list[dict[str, Any]] = []
    daemon = Daemon(
        lab / "gw5",
        {
            **mqtt_sections(broker.port),
            "sources.replay": [f"path = '{DATA / 'demo-trace.jsonl'}'", "speed = 0"],
        },
    )

    async def consume(ready: asyncio.Event) -> None:
        async with intruder(broker.port, "backend") as backend:
            await backend.subscribe(f"{BASE}/+/events/#", qos=1)
            ready.set()
            async for message in backend.messages:
                with contextlib.suppress(Exception):
                    assert isinstance(message.payload, bytes)
                    body = json.loads(message.payload)
                    events.extend(body if isinstance(body, list) else [body])

    ready = asyncio.Event()
    consumer = asyncio.create_task(consume(ready))
    try:
        await ready.wait()
        await daemon.start()

        async def drained() -> bool:
            m = await daemon.metrics()
            depth = sum(v for k, v in m.items() if k.startswith("gateway_outbox_depth"))
            return depth == 0 and len(events) > 20

        await wait_for(drained, 60, 0.5)
        seen = -1
        while seen != len(events):  # quiet for 3 s: the replay is done and uplinked
            seen = len(events)
            await asyncio.sleep(3.0)
        with contextlib.closing(daemon.db()) as conn:
            rows = conn.execute("SELECT * FROM decisions").fetchall()
            table = conn.execute("SELECT device, profile_id, reason FROM decisions").fetchall()
            columns = [c[1] for c in conn.execute("PRAGMA table_info(decisions)")]
    finally:
        daemon.stop()
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await consumer
        broker.stop()
    return events, rows, table, columns


async def attack_5(lab: Path) -> Result:
    # two visits: the same trace on two fresh gateways, a few seconds apart
    events, rows, table, columns = await _visit(lab / "visit1")
    events2, _rows2, _table2, _columns2 = await _visit(lab / "visit2")

    def devices_of(evs: list[dict[str, Any]]) -> Counter[str]:
        zone = [e for e in evs if ".zone." in str(e.get("type", ""))]
        return Counter(str(e.get("data", {}).get("device", "")) for e in zone)

    devices, devices2 = devices_of(events), devices_of(events2)
    per_visit = sorted(set(devices) ^ set(devices2))
    text = [json.dumps(e) for e in events + events2]
    bob_profile = sum("p-bob-81d2" in t for t in text)
    bob_beacon = sum(BOB_ID in t or BOB in t for t in text)
    decisions = [e for e in events if ".offer." in str(e.get("type", ""))]
    no_consent = [e for e in decisions if "consent" in json.dumps(e.get("data", {}))]
    raw_rows = sum(1 for r in rows if any(BOB_ID in str(v) or "ibeacon:" in str(v) for v in r))
    figures = {
        "events_uplinked": len(events),
        "events_naming_bob_profile": bob_profile,
        "events_with_bob_beacon_id": bob_beacon,
        "decision_events": len(decisions),
        "no_consent_decisions": [e.get("data", {}).get("profile_id") for e in no_consent][:5],
        "zone_devices_visit1": dict(devices.most_common(6)),
        "zone_devices_visit2": dict(devices2.most_common(6)),
        "device_ids_differing_between_visits": per_visit,
        "decisions_table_columns": columns,
        "decisions_rows": len(rows),
        "decisions": [list(r) for r in table],
        "event_types": dict(Counter(str(e.get("type")) for e in events)),
        "decisions_rows_with_raw_ibeacon_id": raw_rows,
    }
    held = bob_profile == 0 and bob_beacon == 0 and raw_rows == 0 and len(per_visit) == 2
    return Result(
        "5 a non-consenting shopper",
        "her profile id upstream in no_consent decisions; her device pseudonym linked a full "
        "route of zone events; raw iBeacon ids kept 30 days in decisions",
        f"demo trace (Alice consents, Bob does not) on two fresh gateways, "
        f"{len(events) + len(events2)} events uplinked: {bob_profile} name p-bob, {bob_beacon} "
        f"carry his beacon id; zone events by device {dict(devices.most_common(4))}, next visit "
        f"{dict(devices2.most_common(4))} (only Bob's id changes); decisions table: "
        f"{raw_rows}/{len(rows)} rows with a raw iBeacon id, his rows "
        f"{[list(r) for r in table if r[0] in per_visit]}",
        held,
        figures,
    )


# --- 6: login limits ---


async def _login_phase(
    daemon: Daemon, staff: httpx.AsyncClient, seconds: float, pace_s: float
) -> dict[str, Any]:
    """40 addresses guessing for `seconds` (each waits `pace_s` between guesses; 0: as fast
    as they are answered), /healthz probed 10 times a second, and halfway the right password
    from a browser that logged in here before and from a new one."""
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    stop = asyncio.Event()

    async def guesser(n: int) -> None:
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n + 2}"),
            base_url=daemon.url,
            timeout=60,
        ) as client:
            while not stop.is_set():
                try:
                    reply = await client.post("/login", data={"password": f"guess-{n}"})
                    codes[str(reply.status_code)] += 1
                except httpx.HTTPError as exc:
                    codes[type(exc).__name__] += 1
                if pace_s:
                    await asyncio.sleep(pace_s)

    async def prober() -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                t = time.perf_counter()
                await client.get(f"{daemon.url}/healthz", timeout=60)
                latencies.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(guesser(n)) for n in range(40)]
    tasks.append(asyncio.create_task(prober()))
    await asyncio.sleep(seconds / 2)
    t = time.perf_counter()
    known = await staff.post("/login", data={"password": PASSWORD}, follow_redirects=False)
    known_ms = (time.perf_counter() - t) * 1000
    staff.cookies.delete("gw_session")
    async with httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address="127.0.0.99"), timeout=60
    ) as newcomer:
        fresh = await newcomer.post(
            f"{daemon.url}/login", data={"password": PASSWORD}, follow_redirects=False
        )
    await asyncio.sleep(seconds / 2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(latencies)
    return {
        "guesses_sent_per_minute": round(sum(codes.values()) * 60 / seconds),
        "replies": dict(codes),
        "passwords_checked_per_minute": round(codes["401"] * 60 / seconds, 1),
        "known_browser_right_password": known.status_code,
        "known_browser_login_ms": round(known_ms),
        "new_browser_right_password": fresh.status_code,
        "healthz_ms": {
            "median": round(lat[len(lat) // 2], 1),
            "p95": round(lat[int(len(lat) * 0.95)], 1),
            "max": round(lat[-1], 1),
        },
    }


async def attack_6(lab: Path, seconds: float = 20.0) -> Result:
    daemon = Daemon(lab / "gw6", {}, profiles=False)
    try:
        await daemon.start()
        # a staff browser that logged in here before (it carries the device cookie), from
        # the first of the attacker's addresses
        staff = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
            base_url=daemon.url,
            timeout=120,
        )
        first = await staff.post("/login", data={"password": PASSWORD}, follow_redirects=False)
        staff.cookies.delete("gw_session")  # logged out; the device cookie stays
        idle: list[float] = []
        async with httpx.AsyncClient() as client:
            for _ in range(30):
                t = time.perf_counter()
                await client.get(f"{daemon.url}/healthz")
                idle.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.05)
        # the attacker reached 1,307 guesses a minute: 40 addresses, one each 1.8 s
        paced = await _login_phase(daemon, staff, seconds, 40 * 60 / 1307)
        flood = await _login_phase(daemon, staff, seconds, 0.0)
        await staff.aclose()
    finally:
        daemon.stop()
    load = os.getloadavg()[0]
    figures = {
        "addresses": 40,
        "seconds_per_phase": seconds,
        "known_browser_first_login": first.status_code,
        "healthz_idle_ms_median": round(sorted(idle)[len(idle) // 2], 1),
        "paced_at_1307_per_min": paced,
        "unpaced_flood": flood,
        "box_load_average": round(load, 1),
    }
    held = (
        paced["passwords_checked_per_minute"] <= 120
        and flood["passwords_checked_per_minute"] <= 120
        and paced["known_browser_right_password"] == 303
        and flood["known_browser_right_password"] == 303
        and paced["healthz_ms"]["p95"] < 164
    )
    return Result(
        "6 login limits",
        "40 rotating addresses: 1,307 guesses/min; right password refused when locked out; "
        "/healthz 1.5 -> 164 ms under attack",
        f"40 addresses, {seconds:.0f} s paced to the issue's 1,307/min "
        f"({paced['guesses_sent_per_minute']}/min sent): "
        f"{paced['passwords_checked_per_minute']:.0f} passwords checked/min, known browser with "
        f"the right password {paced['known_browser_right_password']} in "
        f"{paced['known_browser_login_ms']} ms, new browser {paced['new_browser_right_password']}, "
        f"/healthz median/p95 {paced['healthz_ms']['median']}/{paced['healthz_ms']['p95']} ms "
        f"(idle {figures['healthz_idle_ms_median']}); unpaced ({flood['guesses_sent_per_minute']}"
        f"/min): {flood['passwords_checked_per_minute']:.0f} checked/min, known browser "
        f"{flood['known_browser_right_password']} in {flood['known_browser_login_ms']} ms, "
        "/healthz "
        f"p95 {flood['healthz_ms']['p95']} ms; box load {load:.1f} on 2 cores",
        held,
        figures,
    )


# --- 7: idle connections at a low fd limit ---


async def attack_7(lab: Path) -> Result:
    daemon = Daemon(lab / "gw7", {}, files=200, profiles=False)
    held_sockets: list[socket.socket] = []
    try:
        await daemon.start()
        lines_before = len(daemon.log.read_text().splitlines())
        for _ in range(200):
            held_sockets.append(socket.create_connection(("127.0.0.1", daemon.port), timeout=30))
        t = time.perf_counter()
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{daemon.url}/healthz", timeout=30)
        health_ms = (time.perf_counter() - t) * 1000
        await asyncio.sleep(10)
        text = daemon.log.read_text()
        emfile = text.count("Too many open files")
        emfile_lines = [x for x in text.splitlines() if "open files" in x or "system resource" in x]
        new_lines = len(text.splitlines()) - lines_before
        start = time.monotonic()

        def closed_all() -> float:
            for sock in held_sockets:
                sock.settimeout(max(0.1, 30 - (time.monotonic() - start)))
                with contextlib.suppress(ConnectionResetError, TimeoutError):
                    sock.recv(1)
            return time.monotonic() - start + 10

        closed_after = await asyncio.to_thread(closed_all)
        open_left = 0
        for sock in held_sockets:
            sock.setblocking(False)
            try:
                open_left += sock.recv(1) != b""
            except BlockingIOError:
                open_left += 1
            except OSError:
                pass
    finally:
        for sock in held_sockets:
            sock.close()
        daemon.stop()
    held = health.status_code == 200 and emfile == 0 and open_left == 0
    return Result(
        "7 idle connections at a 200-fd limit",
        "200 idle connections stopped /healthz; 255,744 'Too many open files' lines in ~10 s",
        f"200 idle connections at RLIMIT_NOFILE 200: /healthz {health.status_code} in "
        f"{health_ms:.0f} ms, {emfile} 'Too many open files' lines ({new_lines} log lines in "
        f"10 s), all closed by the server within {closed_after:.0f} s ({open_left} left open)",
        held,
        {
            "healthz": health.status_code,
            "healthz_ms": round(health_ms, 1),
            "emfile_lines": emfile,
            "emfile_text": emfile_lines[:3],
            "log_lines_10s": new_lines,
            "closed_within_s": round(closed_after, 1),
            "left_open": open_left,
        },
    )


# --- 8: config safety nets and malformed signed documents ---


def _refused(folder: Path, sections: dict[str, list[str]], *command: str) -> tuple[int, str]:
    daemon = Daemon(folder, sections, profiles=False)
    args = command or ("run",)
    done = gateway_cli(*args, "--config", str(daemon.config), timeout=60)
    lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
    return done.returncode, (lines[-1] if lines else "")[:160]


async def attack_8(lab: Path) -> Result:
    checks: dict[str, tuple[int, str]] = {}
    checks["host 127.evil.example"] = _refused(
        lab / "c1",
        {"mqtt": ["enabled = true", "host = '127.evil.example'", f"downlink_key = '{KEY.hex()}'"]},
    )
    checks["store without pseudonym_key"] = _refused(lab / "c2", {"gateway": ["store = 'shop-12'"]})
    checks["store with the demo loyalty_key"] = _refused(
        lab / "c3",
        {
            "gateway": ["store = 'shop-12'", f"pseudonym_key = '{'11' * 16}'"],
            "nfc": ["loyalty_key = '64656d6f2d6c6f79616c74792d6b6579'"],
        },
    )
    checks["1-byte downlink_key"] = _refused(
        lab / "c4", {"mqtt": ["enabled = true", "host = '127.0.0.1'", "downlink_key = '00'"]}
    )
    world = Daemon(lab / "c5", {"mqtt": [f"downlink_key = '{KEY.hex()}'"]}, profiles=False)
    world.config.chmod(0o644)
    done = gateway_cli("doctor", "--config", str(world.config), timeout=120)
    doctor_lines = [
        x for x in (done.stdout + done.stderr).splitlines() if "FAIL" in x and "secrets" in x
    ]
    checks["doctor, world-readable config with keys"] = (
        done.returncode,
        (doctor_lines[0] if doctor_lines else "")[:160],
    )
    # signed-but-malformed documents against a connected daemon
    broker = Broker(lab / "broker8")
    broker.start()
    daemon = Daemon(lab / "gw8", mqtt_sections(broker.port))
    malformed: dict[str, Any] = {}
    modes: dict[str, str] = {}
    try:
        await daemon.start()
        await wait_for(lambda: _is(daemon, "gateway_mqtt_connected", 1))
        now = time.time()
        big = raw_signed(
            '{"data": {"items": [{"quantity": 9223372036854775809, "sku": "x", "zone_id": "a"}]}, '
            f'"expires_at": {now + 3600}, "family": "stock", "gateway": "*", "issued_at": {now}, '
            f'"kind": "snapshot", "store": "{STORE}", "version": 18446744073709551617}}'
        )
        obj_time = json.dumps(
            signed.sign(
                KEY,
                {
                    "family": "stock",
                    "kind": "snapshot",
                    "version": 4,
                    "store": STORE,
                    "gateway": "*",
                    "issued_at": {"$date": now},
                    "expires_at": {"$date": now + 60},
                    "data": {"items": []},
                },
            )
        ).encode()
        nan_cmd = raw_signed(
            '{"command": "diagnose", "expires_at": NaN, "gateway": "gw-demo-1", "issued_at": NaN, '
            f'"nonce": "n-nan", "store": "{STORE}"}}'
        )
        async with intruder(broker.port) as evil:
            await evil.publish(f"{BASE}/down/stock", big, qos=1)
            await evil.publish(f"{BASE}/down/stock", obj_time, qos=1)
            await evil.publish(f"{BASE}/gw-demo-1/cmd/diagnose", nan_cmd, qos=1)
            await wait_for(lambda: _rejected_total(daemon, 3), 20)
            await evil.publish(f"{BASE}/down/stock", sealed_stock(5, 4, time.time()), qos=1)
            await wait_for(lambda: _true(daemon.stock() == 4), 20)
        metrics = await daemon.metrics()
        malformed = {
            "rejected": rejected(metrics),
            "connects": int(metrics.get("gateway_mqtt_connects_total", 0)),
            "connected": int(metrics.get("gateway_mqtt_connected", 0)),
            "good_document_applied": daemon.stock() == 4,
        }
        for path in [daemon.state, *sorted(daemon.state.iterdir())]:
            modes[path.name] = oct(path.stat().st_mode & 0o777)
    finally:
        daemon.stop()
        broker.stop()
    # a lock file (empty, inside the 0700 directory) may stay group-readable
    loose = {k: v for k, v in modes.items() if int(v, 8) & 0o077 and not k.endswith(".lock")}
    refused_all = all(code != 0 for code, _ in checks.values())
    held = (
        refused_all
        and not loose
        and malformed["connects"] == 1
        and malformed["good_document_applied"]
        and sum(malformed["rejected"].values()) >= 3
    )
    return Result(
        "8 config safety nets, malformed signed documents",
        "127.evil.example passed as loopback; missing keys fell back to public demo keys; 1-byte "
        "downlink_key accepted; world-readable secrets passed; state files 0644; ints > 2^63 and "
        "objects as timestamps dropped the connection; NaN-timestamped command never expired",
        "; ".join(f"{k}: exit {c}" for k, (c, _) in checks.items())
        + f"; state modes {sorted(set(modes.values()))}; 2^63+/object-time/NaN documents: "
        f"{malformed['rejected']}, {malformed['connects']} connection, next signed doc applied: "
        f"{malformed['good_document_applied']}",
        held,
        {
            "config": {k: {"exit": c, "says": s} for k, (c, s) in checks.items()},
            "modes": modes,
            **malformed,
        },
    )


async def _rejected_total(daemon: Daemon, n: int) -> bool:
    return sum(rejected(await daemon.metrics()).values()) >= n


# --- 9: behind the TLS proxy ---

PROXIED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "gw-12.shop.example",
    "X-Forwarded-For": "192.0.2.50",
}


async def attack_9(lab: Path) -> Result:
    daemon = Daemon(
        lab / "gw9",
        {"console": ["trusted_proxies = ['127.0.0.3']", "origins = ['http://gateway.local:8787']"]},
        profiles=False,
    )
    f: dict[str, Any] = {}
    try:
        await daemon.start()
        origin = "https://gw-12.shop.example"
        async with httpx.AsyncClient(
            headers=PROXIED,
            base_url=daemon.url,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3"),
        ) as proxy:
            login = await proxy.post(
                "/login",
                data={"password": PASSWORD},
                headers={"Origin": origin},
                follow_redirects=False,
            )
            f["login_via_proxy"] = login.status_code
            f["cookie_secure"] = "Secure" in login.headers.get("set-cookie", "")
            proxy.cookies.set("gw_session", login.cookies.get("gw_session") or "")
            csrf = (await proxy.get("/api/session")).json()["csrf"]
            body = {"beacon": "bcn-counter", "distance": 1.0, "seconds": 5}
            good = await proxy.post(
                "/api/calibration", json=body, headers={"X-CSRF-Token": csrf, "Origin": origin}
            )
            evil = await proxy.post(
                "/api/calibration",
                json=body,
                headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
            )
            f["post_same_origin"] = good.status_code
            f["post_evil_origin"] = evil.status_code
        # not through the proxy: a DNS-rebound name in both Host and Origin
        async with httpx.AsyncClient(base_url=daemon.url) as direct:
            await direct.post("/login", data={"password": PASSWORD}, follow_redirects=False)
            csrf = (await direct.get("/api/session")).json()["csrf"]
            rebound = await direct.post(
                "/api/calibration",
                json={"beacon": "bcn-counter", "distance": 1.0, "seconds": 5},
                headers={
                    "X-CSRF-Token": csrf,
                    "Origin": "http://evil.example:8787",
                    "Host": "evil.example:8787",
                },
            )
            f["post_rebound_host"] = rebound.status_code
            health = await direct.get("/healthz")
            f["csp"] = health.headers.get("Content-Security-Policy", "")
            f["x_frame_options"] = health.headers.get("X-Frame-Options", "")
        async with httpx.AsyncClient(base_url=daemon.url) as tool:  # no session cookie
            wrong = await tool.get("/status", headers={"Authorization": "Bearer " + "0" * 43})
            right = await tool.get("/status", headers={"Authorization": f"Bearer {daemon.token}"})
            f["bearer_wrong"], f["bearer_right"] = wrong.status_code, right.status_code
    finally:
        daemon.stop()
    source = (REPO / "gateway" / "web" / "access.py").read_text() + (
        REPO / "gateway" / "web" / "auth.py"
    ).read_text()
    f["token_compare"] = "hmac.compare_digest" if "compare_digest" in source else "=="
    held = (
        f["cookie_secure"]
        and f["post_same_origin"] == 200
        and f["post_evil_origin"] == 403
        and f["post_rebound_host"] == 403
        and "frame-ancestors 'none'" in f["csp"]
        and f["x_frame_options"] == "DENY"
        and f["bearer_wrong"] == 401
        and f["token_compare"] == "hmac.compare_digest"
    )
    return Result(
        "9 behind the TLS reverse proxy",
        "session cookie never Secure; POSTs failed the Origin check (403); Origin trusted Host; "
        "bearer compared with ==; no CSP or frame protection",
        f"via trusted proxy: login {f['login_via_proxy']}, Secure cookie {f['cookie_secure']}, "
        "POST "
        f"{f['post_same_origin']}, evil Origin {f['post_evil_origin']}; rebound Host+Origin "
        f"{f['post_rebound_host']}; CSP frame-ancestors 'none' and X-Frame-Options "
        f"{f['x_frame_options']}; "
        f"bearer by {f['token_compare']} (wrong token {f['bearer_wrong']})",
        held,
        f,
    )


ATTACKS: dict[str, Callable[[Path], Awaitable[Result]]] = {
    "1": attack_1,
    "2": attack_2,
    "3": attack_3,
    "4": attack_4,
    "5": attack_5,
    "6": attack_6,
    "7": attack_7,
    "8": attack_8,
    "9": attack_9,
}


async def run(names: list[str], out: Path) -> int:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="attacklab-") as tmp:
        for name in names:
            started = time.monotonic()
            print(f"attack {name} ...", file=sys.stderr, flush=True)
            try:
                result = await ATTACKS[name](Path(tmp) / f"a{name}")
            except Exception as exc:  # a lab failure is reported, not hidden
                result = Result(name, "", f"lab error: {type(exc).__name__}: {exc}", False)
            result.figures["lab_seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
    print("| attack | the issue measured | now | verdict |")
    print("| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.attack} | {r.before} | {r.now} | {'held' if r.held else 'STILL WORKS'} |")
    out.write_text(
        json.dumps(
            [
                {
                    "attack": r.attack,
                    "before": r.before,
                    "now": r.now,
                    "held": r.held,
                    "figures": r.figures,
                }
                for r in results
            ],
            indent=1,
            default=str,
        )
        + "\n"
    )
    return 0 if all(r.held for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("attacks", nargs="*", choices=[*ATTACKS, []], metavar="attack")
    parser.add_argument("--json", default="attacklab.json", help="where the figures go")
    args = parser.parse_args()
    names = args.attacks or list(ATTACKS)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(run(names, Path(args.json)))


if __name__ == "__main__":
    sys.exit(main())
