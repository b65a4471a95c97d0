"""The daemon as systemd runs it: sd_notify over a real unix datagram socket, the watchdog,
SIGHUP reload, SIGTERM shutdown, and the control endpoint scraped over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import Clock, PinnedClock, SystemClock
from gateway.config.schema import ConfigError
from gateway.config.sections import Config, load_config
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.service.process import Service
from gateway.service.sdnotify import Notifier
from gateway.sim.walkers import ANCHOR_UUID
from tests.conftest import REPO
from tests.support.broker import free_port

MAP = REPO / "geofences" / "demo-bookstore.geojson"


class NotifySocket:
    """What systemd listens on: a unix datagram socket, read continuously (as systemd does;
    the kernel queues only ~10 datagrams); records (time, fields)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.running = True
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.reader.start()

    def _read(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def poll(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait_for(self, key: str, value: str = "1", timeout: float = 30.0, after: int = 0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, (_, fields) in enumerate(list(self.messages[after:]), start=after):
                if fields.get(key) == value:
                    return i
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value} in {self.messages[after:]}")

    def close(self) -> None:
        self.running = False
        if self.reader.is_alive():
            self.reader.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    sock.start()
    yield sock
    sock.close()


def test_notifier_speaks_the_protocol(notify: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_s == 4.0
    assert notifier.ready("serving")
    assert notifier.watchdog() and notifier.reloading(time.monotonic()) and notifier.stopping()
    notify.poll(0.3)
    sent = [fields for _, fields in notify.messages]
    assert sent[0] == {"READY": "1", "STATUS": "serving"}
    assert sent[1] == {"WATCHDOG": "1"}
    assert sent[2]["RELOADING"] == "1" and int(sent[2]["MONOTONIC_USEC"]) > 0
    assert sent[3] == {"STOPPING": "1"}
    # Not under systemd: silently nothing. A watchdog meant for another pid is not ours.
    assert not Notifier({}).ready()
    other = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"gateway-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert server.recv(100) == b"READY=1"


TOKEN: list[str] = []  # the running daemon's local bearer token (read once it is up)


def _config(tmp_path: Path, port: int, extra: str = "") -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n"
        f"[sources.replay]\npath = '{data_file('demo-trace.jsonl')}'\nspeed = 5.0\n"
        "start = '10:00'\n"  # the shop is open: offers are pushed
        f"[sinks]\nstdout = false\n[service]\ncontrol_listen = '127.0.0.1:{port}'\n{extra}"
    )
    return cfg


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert TOKEN, "the daemon's bearer token was not read"
    auth = {"Authorization": f"Bearer {TOKEN[0]}"}
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, headers=auth)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_daemon_ready_watchdog_status_metrics_reload_and_stop(
    tmp_path: Path, notify: NotifySocket
) -> None:
    port = free_port()
    # the demo store plus a beacon that is never heard: it goes missing after 10 s
    store = json.loads((REPO / "geofences" / "demo-bookstore.geojson").read_text())
    ghost = json.loads(json.dumps(store["features"][-1]))
    ghost["properties"].update(id="bcn-ghost", ibeacon=ANCHOR_UUID + ":9:9")
    store["features"].append(ghost)
    (tmp_path / "store.geojson").write_text(json.dumps(store))
    cfg = _config(
        tmp_path,
        port,
        f"[map]\npath = '{tmp_path / 'store.geojson'}'\n[fleet]\nmissing_after_s = 10.0\n",
    )
    # the demo's shoppers (seeding only: the daemon runs on the system clock)
    seeding = Gateway(load_config(str(cfg)), quiet_sink=True, clock=SystemClock())
    seeding.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    seeding.close()
    env = os.environ | {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    env.pop("JOURNAL_STREAM", None)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = notify.wait_for("READY")
        assert "serving Demo bookstore" in notify.messages[ready][1]["STATUS"]
        # READY means the control endpoint listens: no retry needed
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["ready"]
        # pings every half interval while the loop is healthy
        first = notify.wait_for("WATCHDOG", after=ready)
        notify.poll(1.6)
        pings = [t for t, f in notify.messages[first:] if f.get("WATCHDOG") == "1"]
        assert len(pings) >= 3
        assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0

        deadline = time.monotonic() + 10
        while not (tmp_path / "state" / "control.token").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        TOKEN[:] = [(tmp_path / "state" / "control.token").read_text().strip()]
        assert (tmp_path / "state" / "control.token").stat().st_mode & 0o777 == 0o600
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["ready"]:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 401
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the 40 s trace at 5× has reached Alice's offer
            metrics = _metrics(port)
            if metrics.get(("gateway_offers_issued_total", ())):
                break
            time.sleep(0.3)
        assert metrics[("gateway_offers_issued_total", ())] == 1
        assert metrics[("gateway_adverts_total", (("receiver", "gw-entrance"),))] > 30
        assert metrics[("gateway_zone_events_total", (("kind", "enter"),))] >= 1
        assert metrics[("gateway_ready", ())] == 1
        assert ("gateway_outbox_depth", (("stream", "offer"),)) in metrics
        assert metrics[("gateway_mqtt_connected", ())] == 0

        status = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert "gw-demo-1 @ demo-bookstore" in status.stdout and "ISSUED" in status.stdout
        assert "gw-entrance" in status.stdout and "mqtt      off" in status.stdout
        # the fleet: the ghost beacon is reported missing, by metrics and by doctor
        deadline = time.monotonic() + 30
        while _metrics(port).get(("gateway_beacon_ok", (("beacon", "bcn-ghost"),))) != 0 or (
            _metrics(port)[("gateway_beacon_ok", (("beacon", "bcn-kids"),))] != 1
        ):
            assert time.monotonic() < deadline, {
                k: v for k, v in _metrics(port).items() if k[0] == "gateway_beacon_ok"
            }
            time.sleep(0.3)
        doctor = subprocess.run(
            [sys.executable, "-m", "gateway", "doctor", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        daemon_check = next(c for c in json.loads(doctor.stdout) if c["name"] == "daemon")
        assert daemon_check["status"] == "warn" and "bcn-ghost missing" in daemon_check["detail"]

        # SIGHUP with a broken config: refused, the daemon keeps serving the old one
        good = cfg.read_text()
        cfg.write_text(good + "[zones]\ndwell_s = 'long'\n")
        mark = len(notify.messages)
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", after=mark)
        refused = notify.wait_for("READY", after=mark)
        assert "reload refused" in notify.messages[refused][1]["STATUS"]
        assert "zones.dwell_s" in notify.messages[refused][1]["STATUS"]
        # SIGHUP with a good new config: a new map, applied live
        cfg.write_text(
            good.replace(str(tmp_path / "store.geojson"), str(MAP)) + "[zones]\ndwell_s = 12.0\n"
        )
        mark = len(notify.messages)
        daemon.send_signal(signal.SIGHUP)
        done = notify.wait_for("READY", after=notify.wait_for("RELOADING", after=mark))
        assert "reloaded" in notify.messages[done][1]["STATUS"]
        metrics = _metrics(port)
        assert metrics[("gateway_reloads_total", (("result", "failed"),))] == 1
        assert metrics[("gateway_reloads_total", (("result", "ok"),))] == 1
        assert metrics[("gateway_offers_issued_total", ())] == 1  # state survived the reload

        mark = len(notify.messages)
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        stopped_in = time.monotonic() - started
        notify.poll(0.2)
        assert code == 0, daemon.stderr.read() if daemon.stderr else ""
        assert stopped_in < 10  # stop_drain_s 5 s bounds it, nothing to drain here
        assert any(f.get("STOPPING") == "1" for _, f in notify.messages[mark:])
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    _, logs = daemon.communicate()  # the rest of its output; closes the pipes
    assert "level=info logger=gateway.service.process msg=ready" in logs
    assert "level=error" in logs and "reload refused" in logs
    assert 'msg="stopped; the store is closed"' in logs
    # closed cleanly: no WAL left behind, integrity intact, the offer on disk
    state = tmp_path / "state"
    assert not (state / "gateway.db-wal").exists() or (state / "gateway.db-wal").stat().st_size == 0
    conn = sqlite3.connect(state / "gateway.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM offers").fetchone() == (1,)
    conn.close()


class StallingGateway(Gateway):
    """A pipeline batch that blocks the event loop (a bug, a hung syscall)."""

    stall_s = 0.0

    def process(self, batch: list[Any]) -> list[Any]:
        if self.stall_s:
            stall, self.stall_s = self.stall_s, 0.0
            time.sleep(stall)
        return super().process(batch)


async def test_a_stalled_loop_stops_feeding_the_watchdog(
    tmp_path: Path, notify: NotifySocket, clock: PinnedClock
) -> None:
    cfg = _config(tmp_path, free_port(), "")
    gateways: list[StallingGateway] = []

    def factory(config: Config, clock: Clock) -> Gateway:
        gateway = StallingGateway(config, quiet_sink=True, clock=clock)
        gateways.append(gateway)
        return gateway

    notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
    service = Service(str(cfg), notifier=notifier, gateway_factory=factory, clock=clock)
    task = asyncio.create_task(service.run())

    async def collect(seconds: float) -> None:
        await asyncio.sleep(seconds)

    stamps = notify.messages
    await collect(2.5)
    assert any(f.get("READY") == "1" for _, f in stamps)
    before = [t for t, f in stamps if f.get("WATCHDOG") == "1"]
    assert len(before) >= 2
    stall_start = time.monotonic()
    gateways[0].stall_s = 2.5  # the next batch blocks the loop for 2.5 watchdog periods
    await collect(4.0)
    pings = [t for t, f in stamps if f.get("WATCHDOG") == "1"]
    during = [t for t in pings if stall_start + 0.6 < t < stall_start + 2.5]
    assert during == []  # systemd would have restarted us here
    assert [t for t in pings if t > stall_start + 2.6]  # and a recovered loop pings again
    assert service.runtime.loop_lag_max_s >= 2.0
    service.stop.set()
    assert await asyncio.wait_for(task, 30) == 0


def test_run_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[service]\ncontrol_listen = 'nowhere'\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "service.control_listen" in result.stderr and "host:port" in result.stderr


def _once_config(tmp_path: Path, replay: bool) -> Path:
    from tests.support.nfcsim import free_udp_port

    trace = data_file("demo-trace.jsonl")
    cfg = tmp_path / "once.toml"
    cfg.write_text(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
        "[service]\ncontrol_listen = ''\n"
        # a reader that is never there: a radio source that would run (and retry) forever
        f"[nfc.touchpoints.counter-reader]\nzone = 'pickup-counter'\nredeem = true\n"
        f"device = 'udp:127.0.0.1:{free_udp_port()}'\n"
        + (f"[sources.replay]\npath = '{trace}'\nspeed = 0\n" if replay else "")
    )
    return cfg


async def test_once_with_a_radio_ends_when_the_replay_ends(
    tmp_path: Path, clock: PinnedClock
) -> None:
    service = Service(str(_once_config(tmp_path, replay=True)), once=True, clock=clock)
    assert await asyncio.wait_for(service.run(), timeout=60) == 0
    assert service.gateway is not None and service.gateway.summary.items > 500


async def test_once_with_radios_only_is_refused_with_the_reason(
    tmp_path: Path, clock: PinnedClock
) -> None:
    service = Service(str(_once_config(tmp_path, replay=False)), once=True, clock=clock)
    with pytest.raises(ConfigError, match="only radios are configured"):
        await asyncio.wait_for(service.run(), timeout=60)
