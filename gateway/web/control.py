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

from gateway.config.edges import host_port
from gateway.config.sections import Config
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import Runtime, exposition
from gateway.runtime.status import StatusView
from gateway.store.token import write_token
from gateway.web import auth as consoleauth
from gateway.web.console import Console, Hub, add_console

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def make_app(gateway: Gateway, runtime: Runtime, console: Console | None = None) -> web.Application:
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

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status_view)
    app.router.add_get("/metrics", metrics)
    if console is not None:
        add_console(app, console)
    return app


def make_console(gateway: Gateway, runtime: Runtime, hub: Hub, config: Config) -> Console:
    """The console and its access rules; writes the local bearer token."""
    token = write_token(config.state_path)
    console = Console(
        gateway,
        runtime,
        hub,
        consoleauth.Sessions(config.console.session_ttl_s),
        consoleauth.LoginLimiter(config.console.login_attempts_per_minute),
        config.console.password_hash,
        token,
    )
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
    console = make_console(gateway, runtime, hub, config)
    runner = web.AppRunner(make_app(gateway, runtime, console), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        try:
            await site.start()
        except OSError as exc:
            # The shop keeps running without its status page; doctor and the log say why.
            log.error("control endpoint %s not started: %s", config.service.control_listen, exc)
        else:
            log.info("control endpoint on http://%s/", config.service.control_listen)
        if listening is not None:
            listening.set()
        await asyncio.Event().wait()  # until cancelled with the daemon
    finally:
        await runner.cleanup()
