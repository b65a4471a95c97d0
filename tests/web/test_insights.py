"""The insights page in real headless Chromium: after the demo shopper's visit it shows the
funnel, the dwell heat map on the floor plan, occupancy per zone and the campaign's result,
all from aggregates (screenshots docs/console/insights.png, insights-heat.png)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.web.test_console import SHOTS, Daemon, _browser, _login, _wait, daemon

__all__ = ["daemon"]  # the fixture, shared with the console tests


async def _visit_done(daemon: Daemon) -> None:
    async with httpx.AsyncClient() as client:
        await _login(client, daemon.url)
        assert (await client.get(f"{daemon.url}/insights?days=0")).status_code == 400
        assert (await client.get(f"{daemon.url}/insights?days=x")).status_code == 400
        daemon.go.set()
        for _ in range(600):
            events = (await client.get(f"{daemon.url}/api/events?kind=redemption")).json()
            if events:
                break
            await asyncio.sleep(0.1)
        assert events, "the demo shopper never redeemed"
        await asyncio.sleep(3)  # she walks on: more positions for the heat map
        page = await client.get(f"{daemon.url}/insights?days=1")
        assert page.status_code == 200
        assert "p-alice" not in page.text and "dev-" not in page.text  # aggregates only
    async with httpx.AsyncClient() as anonymous:
        reply = await anonymous.get(f"{daemon.url}/insights", follow_redirects=False)
        assert reply.status_code in (303, 401)


async def test_insights_in_the_browser(daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    await _visit_done(daemon)
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = await asyncio.to_thread(_browser)
    try:

        def look() -> dict[str, Any]:
            driver.get(f"{daemon.url}/")
            driver.find_element(By.ID, "password").send_keys("shop-floor-2026")
            driver.find_element(By.ID, "login").click()
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "a.insights-link"))
            driver.find_element(By.CSS_SELECTOR, "a.insights-link[href='/insights']").click()
            _wait(driver, lambda d: d.find_elements(By.ID, "funnel-entered"))
            driver.get(f"{daemon.url}/insights?days=1")
            _wait(driver, lambda d: d.find_elements(By.ID, "funnel-entered"))
            driver.save_screenshot(str(SHOTS / "insights.png"))
            heat_map = driver.find_element(By.ID, "heat")
            driver.execute_script("arguments[0].scrollIntoView()", heat_map)
            heat_map.screenshot(str(SHOTS / "insights-heat.png"))
            heat = driver.find_elements(By.CSS_SELECTOR, "#heat rect[id^=heat-]")
            occupied = driver.find_elements(By.CSS_SELECTOR, "#occupancy-chart rect[id^=occ-]")
            bar = driver.find_element(By.ID, "rate-exposed-pickup-discount")
            return {
                "funnel": {
                    key: int(driver.find_element(By.ID, f"funnel-{key}").text)
                    for key in ("entered", "dwelled_at_item_zone", "offered", "redeemed")
                },
                "heat": len(heat),
                "heat_shown": bool(heat) and heat[0].is_displayed(),
                "occupied": [r.get_attribute("fill") for r in occupied],
                "bar_width": float(bar.get_attribute("width") or 0),
                "campaigns": driver.find_element(By.ID, "campaigns").text,
                "zones": len(driver.find_elements(By.CSS_SELECTOR, "#heat [id^=zone-]")),
            }

        seen = await asyncio.to_thread(look)
    finally:
        await asyncio.to_thread(driver.quit)
    assert seen["funnel"]["entered"] >= 1 and seen["funnel"]["offered"] == 1
    assert seen["funnel"]["redeemed"] == 1 and seen["funnel"]["dwelled_at_item_zone"] >= 1
    assert seen["heat"] >= 5 and seen["heat_shown"]  # she walked through several m²
    assert seen["zones"] >= 3  # drawn on the floor plan
    assert any(fill != "#f4f4f4" for fill in seen["occupied"])
    assert seen["bar_width"] > 100  # 1 of 1 came to the counter
    assert "pickup-discount" in seen["campaigns"] and "got the offer (1)" in seen["campaigns"]
