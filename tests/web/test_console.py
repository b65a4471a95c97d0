"""The staff console: the API over a real server on loopback (auth, CSRF, rate limit, data),
and the pages in real headless Chromium (Selenium with Debian's chromium-driver)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import load_config
from gateway.decode.ble import decode_advert
from gateway.model import Advert
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import Inlet
from gateway.service.process import Service
from gateway.site.storemap import load_map
from gateway.sources.replay import Rebase, replay
from gateway.trace import parse_line
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
    replayed: asyncio.Event  # set: the demo trace is over, the counter's beacon talks on


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
    replayed = asyncio.Event()

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
        replayed.set()
        # then the counter's beacon, as if held 1 m from its receiver: 4 adverts/s at -59 dBm
        # or so (the generic iBeacon's measured power)
        t = clock.wall() + 200.0
        held = _counter_adverts()
        for n in range(100_000):
            t += 0.25
            advert = held[n % len(held)]
            await inlet.put(dataclasses.replace(advert, t=t, rssi=advert.rssi + 9))
            await asyncio.sleep(0.25)

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
        yield Daemon(url, service, go, tmp_path / "state", replayed)
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


def _counter_adverts() -> list[Advert]:
    """The demo trace's adverts of bcn-counter as gw-counter heard them."""
    store = load_map(REPO / "geofences" / "demo-bookstore.geojson")
    identity = next(a.identity for a in store.anchors if a.id == "bcn-counter")
    out = []
    with data_file("demo-trace.jsonl").open(encoding="utf-8") as trace:
        for number, text in enumerate(trace, 1):
            item = parse_line(text, number)
            if isinstance(item, Advert) and item.receiver == "gw-counter":
                frame, _reason = decode_advert(item)
                if frame is not None and frame.identity == identity:
                    out.append(item)
    assert len(out) > 20
    return out


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
        body = {"receiver": "gw-counter", "beacon": "bcn-counter", "distance": 1.0, "seconds": 20}
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
        # too short for 10 readings of a 1 Hz beacon at one receiver: refused, saying why
        short = await client.post(
            f"{daemon.url}/api/calibration",
            json=body | {"seconds": 5},
            headers={"X-CSRF-Token": csrf},
        )
        assert short.status_code == 400
        assert short.json()["error"] == (
            "bcn-counter advertises about every 1.0 s: 10 readings need at least 20 s. "
            "Choose 20 s or more."
        )
        wrong = await client.post(
            f"{daemon.url}/api/calibration",
            json=body | {"receiver": "gw-nowhere"},
            headers={"X-CSRF-Token": csrf},
        )
        assert wrong.status_code == 400 and "no receiver 'gw-nowhere'" in wrong.json()["error"]
        options = (await client.get(f"{daemon.url}/api/calibration/options")).json()
        where = {r["id"]: r["where"] for r in options["receivers"]}
        assert where["gw-counter"] == "in Pickup counter, bottom right of the plan"
        assert where["gw-nw"] == "by Fiction, top left of the plan"
        counter = next(b for b in options["beacons"] if b["id"] == "bcn-counter")
        assert counter["min_seconds"] == 20 and counter["nearest_receiver"] == "gw-counter"
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
        # the same events as staff read them: sentences in store time, no JSON
        feed = (await client.get(f"{daemon.url}/api/feed?limit=500")).json()
        assert len(feed) == len((await client.get(f"{daemon.url}/api/events?limit=500")).json())
        offer = next(line for line in feed if line["type"] == "com.storegate.offer.issued")
        code = issued[0]["data"]["code"]
        assert offer["text"].startswith("Offer to shopper p-alice-3f9c on entering Entrance: ")
        assert "10 % off “The Left Hand of Darkness”" in offer["text"]
        assert f"code …{code.replace('-', '')[-4:]}" in offer["text"] and code not in offer["text"]
        assert offer["clock"].startswith("10:3") and offer["when"].endswith(" CEST")
        assert not any(c in line["text"] for line in feed for c in "{}[]")
        zones = (await client.get(f"{daemon.url}/api/feed?kind=zone")).json()
        assert zones and all(line["stream"] == "zone" for line in zones)
        assert re.fullmatch(r"Shopper dev-…[0-9a-f]{4} entered Entrance", zones[0]["text"])
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


def _log_in(driver: Any, daemon: Daemon, shot: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{daemon.url}/")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    if shot:
        driver.save_screenshot(str(SHOTS / shot))
    driver.find_element(By.ID, "login").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "zone-pickup-counter"))


def _line(driver: Any, start: str, css: str = "#events li") -> str:
    """The text of the first event line whose sentence starts with `start`, once it is there."""
    from selenium.webdriver.common.by import By

    def found(d: Any) -> str | None:
        for item in d.find_elements(By.CSS_SELECTOR, css):
            text = str(item.text)
            if text[6:].startswith(start):  # after "10:30 "
                return text
        return None

    return str(_wait(driver, found, timeout=60))


# Every shopper dot with its label, and the boxes they and the plan's own labels take.
MARKERS_JS = """
const svg = document.querySelector('#plan svg');
const box = (e) => { const b = e.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; };
const projection = JSON.parse(document.getElementById('plan').dataset.projection);
return {
  dots: [...svg.querySelectorAll('#devices circle.device')].map((c) => c.dataset.device),
  labels: [...svg.querySelectorAll('#devices text.device-label')].map(
    (t) => ({device: t.dataset.device, text: t.textContent, box: box(t)})),
  fixed: [...svg.querySelectorAll(':scope > text')].map((t) => t.textContent),
  legend_top: projection.panel_h,
};
"""


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


async def test_a_staff_member_in_the_browser(daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = await asyncio.to_thread(_browser)
    try:
        await asyncio.to_thread(_log_in, driver, daemon, "login.png")
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

        daemon.go.set()  # the demo trace starts: Alice walks in, later taps at the counter

        def shop() -> tuple[str, str, list[str], dict[str, Any]]:
            offer = _line(driver, "Offer to shopper p-alice-3f9c")
            tap = _line(driver, "Tap at reader counter-reader")
            markers = _wait(driver, lambda d: (m := d.execute_script(MARKERS_JS))["dots"] and m)
            driver.save_screenshot(str(SHOTS / "shop.png"))
            lines = [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#events li")]
            return offer, tap, lines, markers

        offer, tap, lines, markers = await asyncio.to_thread(shop)
        # The shop's time (the clock is pinned to 10:30 in Berlin), not UTC (08:30) nor the
        # browser's own zone (this machine's: UTC); the item's title, the discount, the
        # code's last four characters.
        assert re.fullmatch(
            r"10:3\d Offer to shopper p-alice-3f9c on entering Entrance: 10 % off “The Left "
            r"Hand of Darkness”, code …[A-Z0-9]{4}, valid until 12:3\d",
            offer,
        ), offer
        assert re.fullmatch(
            r"10:3\d Tap at reader counter-reader \(Pickup counter\): shopper p-alice-3f9c, "
            r"card verified",
            tap,
        ), tap
        assert any(
            re.fullmatch(r"10:3\d Shopper dev-…[0-9a-f]{4} entered Entrance", t) for t in lines
        )
        assert not any(c in t for t in lines for c in '{}[]"')  # no JSON anywhere
        header = await asyncio.to_thread(lambda: driver.find_element(By.ID, "clock").text)
        assert header.startswith("10:3"), header
        # Labelled dots: every shopper has a label (the last four of its pseudonym, as in
        # the events), the labels keep apart and stay above the legend; receivers and
        # beacons carry their ids.
        assert markers["dots"] and len(markers["labels"]) == len(markers["dots"])
        for label in markers["labels"]:
            assert label["text"] == "…" + label["device"][-4:]
            assert label["box"][3] <= markers["legend_top"]
        boxes = [label["box"] for label in markers["labels"]]
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert {"gw-counter", "bcn-counter", "Pickup counter"} <= set(markers["fixed"])

        def health() -> str:
            driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=health]").click()
            _wait(driver, lambda d: "PASS" in d.find_element(By.ID, "checks").text, timeout=60)
            driver.save_screenshot(str(SHOTS / "health.png"))
            return str(driver.find_element(By.ID, "checks").text)

        checks = await asyncio.to_thread(health)
        assert "database" in checks and "map" in checks

        await asyncio.wait_for(daemon.replayed.wait(), 60)  # the counter's beacon talks on

        def calibrate() -> dict[str, Any]:
            find = driver.find_element
            find(By.CSS_SELECTOR, "nav button[data-tab=calibrate]").click()
            Select(find(By.ID, "cal-receiver")).select_by_value("gw-counter")
            out: dict[str, Any] = {
                "beacon": find(By.ID, "cal-beacon").get_attribute("value"),
                "instruction": find(By.ID, "cal-instruction").text,
                "need": find(By.ID, "cal-need").text,
                "axes": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#cal-plot text")],
            }
            seconds = find(By.ID, "cal-seconds")
            seconds.clear()
            seconds.send_keys("5")
            find(By.ID, "cal-start").click()
            _wait(driver, lambda d: "Not started" in d.find_element(By.ID, "cal-result").text)
            out["refused"] = find(By.ID, "cal-result").text
            out["min"] = int(seconds.get_attribute("value"))  # the page offers what works
            find(By.ID, "cal-start").click()
            _wait(
                driver,
                lambda d: d.find_element(By.ID, "cal-progress").get_attribute("value") == "1",
                timeout=out["min"] + 30,
            )
            _wait(driver, lambda d: "offset" in d.find_element(By.ID, "cal-result").text)
            driver.save_screenshot(str(SHOTS / "calibrate.png"))
            out["result"] = find(By.ID, "cal-result").text
            out["count"] = find(By.ID, "cal-count").text
            out["readings"] = len(driver.find_elements(By.CSS_SELECTOR, "#cal-plot .reading"))
            out["plot"] = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#cal-plot text")]
            find(By.ID, "cal-save").click()
            _wait(driver, lambda d: "Saved to" in d.find_element(By.ID, "cal-result").text)
            return out

        cal = await asyncio.to_thread(calibrate)
        assert cal["beacon"] == "bcn-counter"  # the beacon nearest the chosen receiver
        assert cal["instruction"].startswith(
            "Stand at receiver gw-counter (in Pickup counter, bottom right of the plan). "
            "Hold beacon bcn-counter 1 m from it"
        )
        assert re.fullmatch(
            r"bcn-counter advertises about every \d\.\d+ s: 10 readings need at least \d+ s\.",
            cal["need"],
        )
        assert cal["min"] >= 20
        # axes with units before anything is measured, and after
        assert {"time since start (s)", "RSSI (dBm)"} <= set(cal["axes"])
        assert {"time since start (s)", "RSSI (dBm)", "0", "-60"} <= set(cal["plot"])
        assert any(t.startswith("expected at 1 m: -59") for t in cal["plot"])
        assert any(t.startswith("median ") and t.endswith(" dBm") for t in cal["plot"])
        assert re.fullmatch(
            rf"Not started: bcn-counter advertises about every \d\.\d s: 10 readings need at "
            rf"least {cal['min']} s\. Choose {cal['min']} s or more\.",
            cal["refused"],
        )
        samples = int(re.match(r"gw-counter: (\d+) readings", cal["result"]).group(1))  # type: ignore[union-attr]
        assert samples >= 10 and cal["readings"] == samples and "Not saved" not in cal["result"]
        assert cal["count"].startswith(f"{samples} readings from gw-counter (at least 10 needed)")
        assert '[receivers."gw-counter"]' in (daemon.state / "calibration.toml").read_text()
    finally:
        await asyncio.to_thread(driver.quit)


async def test_on_a_phone(daemon: Daemon) -> None:
    """At 390 px (a phone held upright): one column, no sideways scrolling on any tab."""
    from selenium.webdriver.common.by import By

    driver = await asyncio.to_thread(_browser)
    try:
        await asyncio.to_thread(
            driver.execute_cdp_cmd,
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
        )
        await asyncio.to_thread(_log_in, driver, daemon)
        daemon.go.set()

        def each_tab() -> dict[str, Any]:
            _line(driver, "Offer to shopper p-alice-3f9c")
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#devices circle.device"))
            widths: dict[str, Any] = {}
            for tab in ("shop", "health", "calibrate"):
                driver.find_element(By.CSS_SELECTOR, f"nav button[data-tab={tab}]").click()
                if tab == "health":
                    _wait(driver, lambda d: "PASS" in d.find_element(By.ID, "checks").text, 60)
                widths[tab] = driver.execute_script(
                    "return [document.scrollingElement.scrollWidth, innerWidth]"
                )
                driver.save_screenshot(str(SHOTS / f"phone-{tab}.png"))
                driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=shop]").click()
            widths["stacked"] = driver.execute_script(
                "const p = document.querySelector('.plan-box').getBoundingClientRect();"
                "const s = document.querySelector('.side').getBoundingClientRect();"
                "return [p.bottom <= s.top, p.width, s.width]"
            )
            return widths

        widths = await asyncio.to_thread(each_tab)
        for tab in ("shop", "health", "calibrate"):
            scroll, inner = widths[tab]
            assert inner == 390 and scroll <= inner, (tab, widths[tab])
        below, plan_w, side_w = widths["stacked"]
        assert below and plan_w > 350 and side_w > 350  # one column, each full width
    finally:
        await asyncio.to_thread(driver.quit)
