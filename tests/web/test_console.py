"""The staff console: the API over a real server on loopback (auth, CSRF, rate limit, data),
and the pages in real headless Chromium (Selenium with Debian's chromium-driver)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import load_config
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import Inlet
from gateway.service.process import Service
from gateway.sources.replay import Rebase, replay
from gateway.web.auth import hash_password
from tests.conftest import REPO
from tests.support.broker import free_port

PASSWORD = "shop-floor-2026"
PASSWORD_HASH = hash_password(PASSWORD)


@dataclass
class Daemon:
    url: str
    service: Service
    go: asyncio.Event  # set: the scripted replay of the demo trace starts
    state: Path


@pytest.fixture
async def daemon(tmp_path: Path, clock: PinnedClock) -> AsyncIterator[Daemon]:
    port = free_port()
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n"
        "[sinks]\nstdout = false\n[offers.limits]\nquiet_hours = []\n"
        f"[service]\ncontrol_listen = '127.0.0.1:{port}'\n"
        f"[console]\npassword_hash = '{PASSWORD_HASH}'\nlogin_attempts_per_minute = 5\n"
    )
    seeding = Gateway(load_config(str(config_file)), quiet_sink=True, clock=clock)
    seeding.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    seeding.close()
    go = asyncio.Event()

    async def scripted(inlet: Inlet) -> None:
        await go.wait()
        await replay(
            data_file("demo-trace.jsonl"),
            25.0,
            inlet.put,
            lambda error: None,
            clock,
            Rebase.to(clock.wall()),
        )

    service = Service(str(config_file), extra_sources=[scripted], clock=clock)
    task = asyncio.create_task(service.run())
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
    try:
        yield Daemon(url, service, go, tmp_path / "state")
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


async def _login(client: httpx.AsyncClient, url: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post(f"{url}/login", data={"password": password}, follow_redirects=False)


async def test_nothing_without_a_login_but_the_health_probe(daemon: Daemon) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{daemon.url}/healthz")).status_code == 200
        for path in (
            "/api/state",
            "/api/plan",
            "/api/events",
            "/api/health",
            "/status",
            "/metrics",
            "/api/calibration",
        ):
            assert (await client.get(daemon.url + path)).status_code == 401, path
        page = await client.get(f"{daemon.url}/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert (await client.post(f"{daemon.url}/api/calibration", json={})).status_code == 401
        # the local bearer token (gateway status, Prometheus on the box) works without a cookie
        token = (daemon.state / "control.token").read_text().strip()
        reply = await client.get(
            f"{daemon.url}/api/state", headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status_code == 200
        wrong = await client.get(
            f"{daemon.url}/api/state", headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401


async def test_login_session_csrf_and_rate_limit(daemon: Daemon) -> None:
    async with httpx.AsyncClient() as client:
        bad = await _login(client, daemon.url, "wrong")
        assert bad.status_code == 401 and "Wrong password" in bad.text
        good = await _login(client, daemon.url)
        assert good.status_code == 303
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "gw_session=" in cookie
        page = await client.get(f"{daemon.url}/")
        assert page.status_code == 200 and 'id="zone-pickup-counter"' in page.text
        csrf = (await client.get(f"{daemon.url}/api/session")).json()["csrf"]
        assert csrf and csrf in page.text
        body = {"beacon": "bcn-counter", "distance": 1.0, "seconds": 5}
        no_token = await client.post(f"{daemon.url}/api/calibration", json=body)
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        forged = await client.post(
            f"{daemon.url}/api/calibration",
            json=body,
            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        assert forged.status_code == 403
        started = await client.post(
            f"{daemon.url}/api/calibration", json=body, headers={"X-CSRF-Token": csrf}
        )
        assert started.status_code == 200 and started.json()["started"]
        out = await client.post(f"{daemon.url}/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200
        assert (await client.get(f"{daemon.url}/api/state")).status_code == 401
        async with httpx.AsyncClient() as other:
            # 5 attempts per address per minute, a good login given back: one used above
            codes = [(await _login(other, daemon.url, "guess")).status_code for _ in range(5)]
            assert codes == [401, 401, 401, 401, 429]
            refused = await _login(other, daemon.url)  # even the right one, from here, now
            assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 12
        # ... but the browser that logged in before has its own budget (its device cookie)
        again = await _login(client, daemon.url)
        assert again.status_code == 303


async def test_the_data_behind_the_page(daemon: Daemon) -> None:
    async with httpx.AsyncClient() as client:
        await _login(client, daemon.url)
        plan = (await client.get(f"{daemon.url}/api/plan")).json()
        assert {z["id"] for z in plan["zones"]} >= {"entrance", "pickup-counter"}
        assert len(plan["beacons"]) == 6 and plan["projection"]["scale"] > 0
        daemon.go.set()
        events: list[dict[str, Any]] = []
        for _ in range(300):
            events = (await client.get(f"{daemon.url}/api/events?kind=offer")).json()
            if any(e["data"].get("code") for e in events):
                break
            await asyncio.sleep(0.1)
        issued = [e for e in events if e["data"].get("code")]
        assert issued and issued[0]["data"]["profile_id"] == "p-alice-3f9c"
        state = (await client.get(f"{daemon.url}/api/state")).json()
        assert state["timezone"] == plan["timezone"] == "Europe/Berlin"
        assert state["devices"] and all(d["id"].startswith("dev-") for d in state["devices"])
        text = json.dumps(state) + json.dumps(events)
        assert "C0:FF:EE" not in text and "ibeacon:" not in text  # pseudonyms only
        checks = (await client.get(f"{daemon.url}/api/health")).json()
        assert {c["name"] for c in checks} >= {"config", "state", "database", "map", "clock"}
        # the event stream: a state snapshot first
        async with client.stream("GET", f"{daemon.url}/api/events/stream") as stream:
            lines = stream.aiter_lines()
            first = [await anext(lines), await anext(lines)]
        assert first[0] == "event: state" and json.loads(first[1][6:])["devices"] is not None


# --- in a real browser ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = REPO / "docs" / "console"


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=DriverService(DRIVER), options=options)


def _wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


async def test_a_staff_member_in_the_browser(daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = await asyncio.to_thread(_browser)
    try:

        def log_in() -> None:
            driver.get(f"{daemon.url}/")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.save_screenshot(str(SHOTS / "login.png"))
            driver.find_element(By.ID, "login").click()
            _wait(driver, lambda d: d.find_elements(By.ID, "zone-pickup-counter"))

        await asyncio.to_thread(log_in)
        zones = await asyncio.to_thread(
            lambda: {
                e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "[id^=zone-]")
            }
        )
        assert {"zone-entrance", "zone-pickup-counter", "zone-aisle-scifi"} <= zones
        beacons = await asyncio.to_thread(
            lambda: driver.find_elements(By.CSS_SELECTOR, "[id^=beacon-]")
        )
        assert len(beacons) == 6

        daemon.go.set()  # the demo trace starts: Alice walks in

        def offer_appears() -> str:
            item = _wait(
                driver,
                lambda d: next(
                    (
                        e
                        for e in d.find_elements(By.CSS_SELECTOR, "#events li.issued")
                        if "ISSUED" in e.text
                    ),
                    None,
                ),
                timeout=60,
            )
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#devices circle.device"))
            driver.save_screenshot(str(SHOTS / "shop.png"))
            return str(item.text)

        offer = await asyncio.to_thread(offer_appears)
        assert "p-alice-3f9c" in offer and "enter:entrance" in offer
        # The shop's time (the clock is pinned to 10:30 in Berlin), not UTC (08:30) nor the
        # browser's own zone (this machine's: UTC).
        assert offer.startswith("10:3"), offer
        header = await asyncio.to_thread(lambda: driver.find_element(By.ID, "clock").text)
        assert header.startswith("10:3"), header

        def health() -> str:
            driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=health]").click()
            _wait(driver, lambda d: "PASS" in d.find_element(By.ID, "checks").text, timeout=60)
            driver.save_screenshot(str(SHOTS / "health.png"))
            return str(driver.find_element(By.ID, "checks").text)

        checks = await asyncio.to_thread(health)
        assert "database" in checks and "map" in checks

        def calibrate() -> str:
            driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=calibrate]").click()
            driver.find_element(By.ID, "cal-beacon").send_keys("bcn-counter")
            seconds = driver.find_element(By.ID, "cal-seconds")
            seconds.clear()
            seconds.send_keys("5")
            driver.find_element(By.ID, "cal-start").click()
            _wait(
                driver, lambda d: "readings" in d.find_element(By.ID, "cal-result").text, timeout=30
            )
            _wait(
                driver,
                lambda d: d.find_element(By.ID, "cal-progress").get_attribute("value") == "1",
                timeout=30,
            )
            driver.save_screenshot(str(SHOTS / "calibrate.png"))
            return str(driver.find_element(By.ID, "cal-result").text)

        result = await asyncio.to_thread(calibrate)
        assert "gw-" in result and "offset" in result
    finally:
        await asyncio.to_thread(driver.quit)
