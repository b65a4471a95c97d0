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
  /api/feed?kind=K&limit=   the same events as sentences in store time (`wording`)
  /api/events/stream        SSE: "event" per pipeline event, "state" every second;
                            with ?view=lines a "line" (a `wording.Line`) instead of "event"
  /api/health               the doctor's checks
  /api/calibration/...      the calibration helper (`calibrate`)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.model import Advert
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import Runtime
from gateway.runtime.status import StatusView
from gateway.site.render import plan_scene, to_svg
from gateway.web.access import Access, escape, fill
from gateway.web.calibrate import CalibrationHelper
from gateway.web.wording import Wording

MAX_EVENTS = 500
MAX_TITLES = 1000  # item titles remembered for the event list


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
class Console:
    gateway: Gateway
    runtime: Runtime
    hub: Hub
    access: Access
    view: StatusView = field(init=False)
    calibration: CalibrationHelper = field(init=False)
    wording: Wording = field(init=False)
    wording_basis: tuple[object, object] = field(init=False)
    titles: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.view = StatusView(self.gateway, self.runtime)
        self.calibration = CalibrationHelper(self.gateway, self.view)
        self.wording = self._wording()
        self.wording_basis = (self.gateway.store_map, self.gateway.config)

    def _wording(self) -> Wording:
        config = self.gateway.config
        return Wording(
            ZoneInfo(config.gateway.timezone),
            {z.id: z.name for z in self.gateway.store_map.zones},
            {r: t.zone for r, t in config.nfc.touchpoints.items()},
            self.title_of,
        )

    def words(self) -> Wording:
        """The store's wording, made again when a reload (SIGHUP) brought a new map or config."""
        basis = (self.gateway.store_map, self.gateway.config)
        if any(new is not old for new, old in zip(basis, self.wording_basis, strict=True)):
            self.wording, self.wording_basis = self._wording(), basis
            self.titles.clear()
        return self.wording

    def title_of(self, sku: str, profile_id: str | None) -> str | None:
        """An item's title as the offer used it: the shopper's cart, else the stock list.
        Titles found are remembered; an unknown item is looked up again next time (stock
        may arrive by downlink meanwhile)."""
        key = (sku, profile_id)
        if key in self.titles:
            return self.titles[key]
        identity = self.gateway.identity
        cart = identity.cart(profile_id) if profile_id else []
        title = next((i.title for i in cart if i.sku == sku and i.title), None)
        if title is None:
            stock = identity.stock(sku)
            title = stock.title if stock is not None and stock.title else None
        if title is not None:
            if len(self.titles) >= MAX_TITLES:
                self.titles.clear()
            self.titles[key] = title
        return title

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
        return web.json_response(self._recent(request))

    def _recent(self, request: web.Request) -> list[dict[str, Any]]:
        """The last `limit` events of `kind` (all kinds without one), oldest first."""
        kind = request.query.get("kind", "")
        try:
            limit = max(1, min(MAX_EVENTS, int(request.query.get("limit", "100"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit: expected a number") from None
        events = [e for e in self.hub.events if not kind or e["type"].startswith(_prefix(kind))]
        return events[-limit:]

    async def api_feed(self, request: web.Request) -> web.Response:
        """The recent events as the page lists them: sentences in store time."""
        words = self.words()
        return web.json_response([words.line(e).as_dict() for e in self._recent(request)])

    async def api_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        lines = request.query.get("view") == "lines"
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.hub.subscribers.add(queue)
        try:
            async for name, body in self._stream_items(queue):
                if lines and name == "event":
                    name, body = "line", self.words().line(body).as_dict()
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

    def on_advert(self, advert: Advert) -> None:
        self.calibration.on_advert(advert)


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
    r.add_get("/api/feed", console.api_feed)
    console.calibration.add_routes(app)
