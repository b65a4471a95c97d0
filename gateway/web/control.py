"""The local control endpoint: `/healthz`, `/status` (JSON for `gateway status`) and
`/metrics` (Prometheus text), served by the daemon on `service.control_listen`.

aiohttp because the staff console (a later page on the same server) needs sessions and
Server-Sent Events too, and it ships aarch64 wheels; it is imported only when the endpoint
starts, after READY, so it costs nothing on the way to the first processed sighting.
Read-only and on loopback by default: nothing here changes state.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from gateway.config.sections import Config
from gateway.config.service import host_port
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import Runtime, exposition
from gateway.runtime.status import StatusView
from gateway.store.token import write_token
from gateway.web import auth as consoleauth
from gateway.web import server
from gateway.web.access import Access
from gateway.web.console import Console, Hub, add_console
from gateway.web.pickup import PickupBoard, add_pickup

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def make_app(
    gateway: Gateway,
    runtime: Runtime,
    console: Console | None = None,
    guard: server.ConnectionGuard | None = None,
) -> web.Application:
    view = StatusView(gateway, runtime)

    async def healthz(_request: web.Request) -> web.Response:
        code = 200 if runtime.ready else 503
        body = {"ready": runtime.ready, "gateway": gateway.config.gateway.id}
        return web.json_response(body, status=code)

    async def status_view(_request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(view.document(), indent=1),
            content_type="application/json",
        )

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(text=exposition(view))
        response.headers["Content-Type"] = f"{PROMETHEUS_TEXT}; charset=utf-8"
        return response

    app = web.Application(client_max_size=server.MAX_BODY)
    app.on_response_prepare.append(server.security_headers)
    if guard is not None:
        app.middlewares.append(guard.track)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status_view)
    app.router.add_get("/metrics", metrics)
    if console is not None:
        add_console(app, console)  # its guard first: a request it refuses is not even read
        add_pickup(app, PickupBoard(console.gateway, console.access, console.view))
    if guard is not None:
        app.middlewares.append(guard.read_body)
    return app


def make_console(gateway: Gateway, runtime: Runtime, hub: Hub, config: Config) -> Console:
    """The console and its access rules; writes the local bearer token."""
    token = write_token(config.state_path)
    settings = config.console
    access = Access(
        gateway,
        consoleauth.Sessions(settings.session_ttl_s),
        consoleauth.LoginLimiter(
            settings.login_attempts_per_minute, settings.login_attempts_global_per_minute
        ),
        consoleauth.PasswordStore(
            settings.password_hash, config.state_path / "console-password.json"
        ),
        token,
        consoleauth.DeviceCookies.load(config.state_path / "console-device.key"),
        consoleauth.Proxies.parse(settings.trusted_proxies),
        tuple(settings.origins),
    )
    console = Console(gateway, runtime, hub, access)
    gateway.watch_adverts(console.on_advert)
    return console


async def serve_control(
    gateway: Gateway,
    runtime: Runtime,
    config: Config,
    hub: Hub,
    listening: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled; `listening` is set once the socket listens or failed to."""
    host, port = host_port(config.service.control_listen)
    service = config.service
    console = make_console(gateway, runtime, hub, config)
    guard = server.ConnectionGuard(
        server.connection_cap(service.http_max_connections), service.http_read_timeout_s
    )
    runner = await server.setup(
        make_app(gateway, runtime, console, guard), guard, service.http_idle_timeout_s
    )
    logging.getLogger("asyncio").addFilter(server.ACCEPT_ERRORS)
    listener: asyncio.AbstractServer | None = None
    try:
        try:
            listener = await server.listen(guard, host, port)
        except OSError as exc:
            # The shop keeps running without its status page; doctor and the log say why.
            log.error("control endpoint %s not started: %s", config.service.control_listen, exc)
        else:
            log.info(
                "control endpoint on http://%s/ (at most %d connections)",
                config.service.control_listen,
                guard.cap,
            )
        if listening is not None:
            listening.set()
        await asyncio.Event().wait()  # until cancelled with the daemon
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
        logging.getLogger("asyncio").removeFilter(server.ACCEPT_ERRORS)
