"""The pickup page: staff see the task an offer opened and close it, in real headless
Chromium against a real daemon replaying the demo trace (issue 20)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
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
from tests.support.broker import free_port
from tests.web.test_console import PASSWORD, PASSWORD_HASH, SHOTS, Daemon, _browser, _login, _wait


@pytest.fixture
async def daemon(tmp_path: Path, clock: PinnedClock) -> AsyncIterator[Daemon]:
    """The console's daemon, replaying the demo trace without Alice's taps at the counter
    (she would redeem her code there, closing the task before staff could)."""
    port = free_port()
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n"
        "[sinks]\nstdout = false\n[offers.limits]\nquiet_hours = []\n"
        f"[service]\ncontrol_listen = '127.0.0.1:{port}'\n"
        f"[console]\npassword_hash = '{PASSWORD_HASH}'\n"
    )
    seeding = Gateway(load_config(str(config_file)), quiet_sink=True, clock=clock)
    seeding.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    seeding.close()
    trace = tmp_path / "no-taps.jsonl"
    lines = data_file("demo-trace.jsonl").read_text().splitlines()
    trace.write_text("\n".join(line for line in lines if '"kind":"nfc"' not in line) + "\n")
    go = asyncio.Event()

    async def scripted(inlet: Inlet) -> None:
        await go.wait()
        await replay(trace, 25.0, inlet.put, lambda error: None, clock, Rebase.to(clock.wall()))

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
        yield Daemon(url, service, go, tmp_path / "state", asyncio.Event())
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


async def test_staff_see_and_close_a_pickup_task_in_the_browser(daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{daemon.url}/api/pickup")).status_code == 401
        assert (await client.get(f"{daemon.url}/pickup")).status_code == 401
        await _login(client, daemon.url)
        csrf = (await client.get(f"{daemon.url}/api/session")).json()["csrf"]
        forged = await client.post(
            f"{daemon.url}/api/pickup/tk-nope", json={"action": "ready"}
        )  # no CSRF token
        assert forged.status_code == 403
        unknown = await client.post(
            f"{daemon.url}/api/pickup/tk-nope",
            json={"action": "ready"},
            headers={"X-CSRF-Token": csrf},
        )
        assert unknown.status_code == 404
    driver = await asyncio.to_thread(_browser)
    try:

        def log_in() -> None:
            driver.get(f"{daemon.url}/")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "login").click()
            _wait(driver, lambda d: d.find_elements(By.ID, "zone-pickup-counter"))
            driver.get(f"{daemon.url}/pickup")
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks tr.empty"))
            driver.find_element(By.ID, "staff").send_keys("Mia")

        await asyncio.to_thread(log_in)
        daemon.go.set()  # the demo trace: Alice walks in and is offered her saved book

        def task_appears() -> str:
            row = _wait(
                driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks tr[data-task]"), 60
            )[0]
            driver.save_screenshot(str(SHOTS / "pickup.png"))
            return str(row.text)

        text = await asyncio.to_thread(task_appears)
        assert "The Left Hand of Darkness" in text and "aisle-scifi" in text and "…" in text
        assert "p-alice" not in text and "dev-" not in text  # no shopper, no device

        def act(action: str, until: Callable[[Any], Any]) -> None:
            row = driver.find_element(By.CSS_SELECTOR, "#tasks tr[data-task]")
            row.find_element(By.CSS_SELECTOR, f"button[data-action={action}]").click()
            _wait(driver, until, 30)

        await asyncio.to_thread(
            act,
            "ready",
            lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks tr[data-status=ready]"),
        )
        await asyncio.to_thread(
            act, "collected", lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks tr.empty")
        )
    finally:
        await asyncio.to_thread(driver.quit)
    conn = daemon.service.gateway.conn if daemon.service.gateway else None
    assert conn is not None
    bodies = [json.loads(r[0]) for r in conn.execute("SELECT body FROM outbox")]
    by_type = {b["type"].removeprefix("com.storegate."): b for b in bodies}
    assert by_type["task.ready"]["data"]["by"] == "Mia"
    assert by_type["task.collected"]["data"]["by"] == "Mia"
    assert by_type["hold.released"]["data"]["reason"] == "redeemed"
    assert by_type["redemption.redeemed"]["data"]["reader"] == "pickup"
