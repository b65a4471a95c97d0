"""The staff console: the shop as the gateway sees it, on the daemon's control endpoint.

Server-rendered pages (login, console shell with the floor plan as inline SVG) and a small
plain-JavaScript client (`data/console/app.js`) fed by JSON endpoints and one Server-Sent
Events stream. Every page and API needs a login or the local bearer token, except
`/healthz`; state-changing requests also need the session's CSRF token
(`access`). Only pseudonymous ids appear: devices as their keyed pseudonyms, shoppers as
profile ids, never a MAC address or an NFC UID.

JSON endpoints (all GET unless noted; documented in docs/console.md):
  /insights?days=N          the insights page (server-rendered SVG, gateway.web.insights)
  /api/session              {"csrf"}
  /api/plan                 {"svg", "projection", "zones", "beacons", "gateways"}
  /api/state                positions, occupancy, beacons, sources, outbox, MQTT, clock
  /api/events?kind=K&limit= recent events (CloudEvents, as sent upstream), newest last
  /api/events/stream        SSE: "event" per pipeline event, "state" every second
  /api/health               the doctor's checks
  /api/calibration          GET progress; POST {"beacon","distance","seconds"} starts;
  /api/calibration/save     POST: save the finished measurement
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.clock import Clock
from gateway.decode import ble as decode
from gateway.model import Advert
from gateway.presence import calibration
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import Runtime
from gateway.runtime.status import StatusView
from gateway.site.render import plan_scene, to_svg
from gateway.store import calibration as calibration_file
from gateway.web.access import Access, escape, fill

MAX_EVENTS = 500


@dataclass(slots=True)
class Hub:
    """Recent events and the live subscribers of the event stream."""

    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    subscribers: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)

    def publish(self, body: dict[str, Any]) -> None:
        self.events.append(body)
        for queue in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(body)  # a slow browser misses events, never blocks us


@dataclass(slots=True)
class CalibrationRun:
    calibrator: calibration.Calibrator
    identity: str
    clock: Clock
    started: float  # monotonic: the run's length is a duration
    seconds: float
    series: deque[tuple[float, str, int]] = field(default_factory=lambda: deque(maxlen=600))
    saved: str = ""

    @property
    def done(self) -> bool:
        return self.elapsed() >= self.seconds

    def elapsed(self) -> float:
        return self.clock.monotonic() - self.started


@dataclass(slots=True)
class Console:
    gateway: Gateway
    runtime: Runtime
    hub: Hub
    access: Access
    run: CalibrationRun | None = None
    view: StatusView = field(init=False)

    def __post_init__(self) -> None:
        self.view = StatusView(self.gateway, self.runtime)

    # --- pages --------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        session = self.access.session(request)
        assert session is not None or self.access.bearer_ok(request)
        scene = plan_scene(self.gateway.store_map)
        body = fill(
            data_file("console/index.html").read_text(encoding="utf-8"),
            csrf=escape(session.csrf if session else ""),
            store=escape(self.gateway.store_map.name),
            gateway=escape(self.gateway.config.gateway.id),
            plan=to_svg(scene),  # encoded as it is built (site.render)
            projection=escape(json.dumps(scene.projection)),
        )
        return web.Response(
            text=body, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def insights(self, request: web.Request) -> web.Response:
        """Funnel, heat map, occupancy and campaign results (issue 21), server-rendered."""
        from gateway.web.insights import insights_page

        return insights_page(self.gateway, request)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ("app.js", "style.css"):
            raise web.HTTPNotFound()
        kind = "application/javascript" if name.endswith(".js") else "text/css"
        return web.Response(
            text=data_file(f"console/{name}").read_text(encoding="utf-8"), content_type=kind
        )

    # --- data ---------------------------------------------------------------------------

    async def api_session(self, request: web.Request) -> web.Response:
        session = self.access.session(request)
        return web.json_response({"csrf": session.csrf if session else None})

    async def api_plan(self, request: web.Request) -> web.Response:
        store = self.gateway.store_map
        scene = plan_scene(store)
        return web.json_response(
            {
                "svg": to_svg(scene),
                "projection": scene.projection,
                "zones": [
                    {"id": z.id, "name": z.name, "category": z.category, "level": z.level}
                    for z in store.zones
                ],
                "beacons": [
                    {"id": a.id, "x": a.x, "y": a.y, "level": a.level} for a in store.anchors
                ],
                "gateways": [{"id": r, "x": x, "y": y} for r, (x, y) in store.receivers.items()],
                # times on the page are the shop's, whatever zone the browser is in
                "timezone": self.gateway.config.gateway.timezone,
            }
        )

    def state(self) -> dict[str, Any]:
        view = self.view
        return {
            "t": view.wall,
            "timezone": self.gateway.config.gateway.timezone,
            "trace_t": view.trace_time(),
            "devices": view.devices(),
            "occupancy": view.occupancy(),
            "beacons": view.beacons(),
            "sources": view.sources(),
            "outbox": view.outbox(),
            "mqtt": view.mqtt(),
            "loop_lag_ms": round(self.runtime.loop_lag_s * 1000, 2),
        }

    async def api_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def api_events(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind", "")
        try:
            limit = max(1, min(MAX_EVENTS, int(request.query.get("limit", "100"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit: expected a number") from None
        events = [e for e in self.hub.events if not kind or e["type"].startswith(_prefix(kind))]
        return web.json_response(events[-limit:])

    async def api_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.hub.subscribers.add(queue)
        try:
            async for name, body in self._stream_items(queue):
                await response.write(f"event: {name}\ndata: {json.dumps(body)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.subscribers.discard(queue)
        return response

    async def _stream_items(
        self, queue: asyncio.Queue[dict[str, Any]]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        yield "state", self.state()
        clock = self.gateway.clock
        next_state = clock.monotonic() + 1.0
        while True:
            timeout = max(0.0, next_state - clock.monotonic())
            try:
                body = await asyncio.wait_for(queue.get(), timeout)
                yield "event", body
            except TimeoutError:
                next_state = clock.monotonic() + 1.0
                yield "state", self.state()

    async def api_health(self, request: web.Request) -> web.Response:
        from gateway.ops.doctor import run_checks

        config_file = str(self.runtime.config_file)
        checks = await asyncio.to_thread(run_checks, config_file, self.gateway.clock, 3.0)
        return web.json_response([c.as_dict() for c in checks if c.name != "daemon"])

    # --- calibration --------------------------------------------------------------------

    def on_advert(self, advert: Advert) -> None:
        run = self.run
        if run is None or run.done:
            return
        frame, _reason = decode.decode_advert(advert)
        if frame is not None and frame.identity == run.identity:
            run.calibrator.add(advert.receiver, advert.rssi)
            run.series.append((round(run.elapsed(), 2), advert.receiver, advert.rssi))

    async def calibration_status(self, request: web.Request) -> web.Response:
        run = self.run
        if run is None:
            return web.json_response({"running": False})
        result = run.calibrator.result()
        return web.json_response(
            {
                "running": not run.done,
                "beacon": run.calibrator.beacon,
                "elapsed_s": round(min(run.elapsed(), run.seconds), 1),
                "seconds": run.seconds,
                "readings": run.calibrator.count(),
                "series": list(run.series)[-300:],
                "result": None
                if result is None
                else {
                    "receiver": result.receiver,
                    "samples": result.samples,
                    "median_dbm": result.median_dbm,
                    "spread_db": result.spread_db,
                    "measured_power_dbm": result.measured_power_dbm,
                    "offset_db": result.offset_db,
                    "problems": result.problems(),
                },
                "saved": run.saved,
            }
        )

    async def calibration_start(self, request: web.Request) -> web.Response:
        from gateway.site.hardware import load_beacon_profile

        try:
            body = await request.json()
            beacon, distance = str(body["beacon"]), float(body.get("distance", 1.0))
            seconds = float(body.get("seconds", 30.0))
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(
                text='{"error": "expected beacon, distance, seconds"}',
                content_type="application/json",
            ) from None
        anchor = next((a for a in self.gateway.store_map.anchors if a.id == beacon), None)
        if anchor is None or not 0 < distance <= 20 or not 5 <= seconds <= 300:
            raise web.HTTPBadRequest(
                text='{"error": "unknown beacon or out-of-range values"}',
                content_type="application/json",
            )
        profile = load_beacon_profile(anchor.profile)
        self.run = CalibrationRun(
            calibration.Calibrator(
                anchor.id, distance, profile.measured_power_dbm, profile.path_loss_exponent
            ),
            anchor.identity,
            self.gateway.clock,
            self.gateway.clock.monotonic(),
            seconds,
        )
        return web.json_response({"started": True, "beacon": anchor.id})

    async def calibration_save(self, request: web.Request) -> web.Response:
        run = self.run
        result = None if run is None else run.calibrator.result()
        if run is None or not run.done or result is None:
            raise web.HTTPConflict(
                text='{"error": "no finished measurement to save"}', content_type="application/json"
            )
        if result.problems():
            raise web.HTTPConflict(
                text=json.dumps({"error": "; ".join(result.problems())}),
                content_type="application/json",
            )
        path = calibration_file.save(
            self.gateway.config.state_path, result, self.gateway.clock.wall()
        )
        run.saved = str(path)
        return web.json_response({"saved": str(path), "offset_db": result.offset_db})


def _prefix(kind: str) -> str:
    return f"com.storegate.{kind}"


def add_console(app: web.Application, console: Console) -> None:
    access = console.access
    app.middlewares.append(access.guard)
    r = app.router
    r.add_get("/login", access.login_page)
    r.add_post("/login", access.login)
    r.add_post("/logout", access.logout)
    r.add_get("/", console.index)
    r.add_get("/static/{name}", console.static)
    r.add_get("/insights", console.insights)
    r.add_get("/api/session", console.api_session)
    r.add_get("/api/plan", console.api_plan)
    r.add_get("/api/state", console.api_state)
    r.add_get("/api/events", console.api_events)
    r.add_get("/api/events/stream", console.api_stream)
    r.add_get("/api/health", console.api_health)
    r.add_get("/api/calibration", console.calibration_status)
    r.add_post("/api/calibration", console.calibration_start)
    r.add_post("/api/calibration/save", console.calibration_save)
