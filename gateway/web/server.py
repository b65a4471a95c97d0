"""The control endpoint's HTTP server, bounded: connection cap, timeouts, response headers.

* Idle connections close: aiohttp's keep-alive timer also runs from the moment a connection
  opens, and bytes that do not complete a request head do not reset it, so a connection
  that sends nothing, or drips a header a byte at a time, is closed `idle_timeout_s` after
  it opened or after its last answer. A request in progress (an event stream) is not idle.
* A request body must arrive within `read_timeout_s` (408 otherwise).
* At most `max_connections` are open; a new one closes the longest-idle one, so a crowd of
  idle sockets cannot keep `/healthz` out. When every connection is busy the new one is
  closed at once. The cap stays below the process's open-file limit with room for the
  database, the broker and the radios, so accept() does not meet EMFILE.
* Should EMFILE happen anyway (other descriptors), asyncio's accept error is logged at most
  once per `LOG_EVERY_S`, with a count of what was held back, not thousands of times.
* Every response, errors included, carries a strict Content-Security-Policy (scripts and
  styles only from the console's own files, no inline script, no framing) and the usual
  companions (`nosniff`, `DENY`, no referrer to other sites).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make form POSTs send "Origin: null"
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Descriptors kept free for everything but HTTP: SQLite (database, WAL, shm), the broker,
# D-Bus, NFC, log files, the event loop's own, a doctor run's subprocesses.
FD_RESERVE = 64
# asyncio accepts up to `backlog` connections per wake-up before any evicted one is closed,
# so the burst must fit in the reserve too (128, aiohttp's default, met EMFILE at 200 files).
ACCEPT_BURST = 16
MAX_BODY = 64 * 1024  # the largest body the console takes (a login form, a calibration)
LOG_EVERY_S = 10.0


async def security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def connection_cap(configured: int) -> int:
    """`configured`, lowered to fit under the soft open-file limit with `FD_RESERVE` spare."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(4, min(configured, soft - FD_RESERVE))


class _Refused(asyncio.Protocol):
    """What a connection over the cap gets when none can make room: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@dataclass(slots=True)
class ConnectionGuard:
    """Counts connections and requests in progress; makes room at the cap."""

    cap: int
    read_timeout_s: float
    server: web.Server | None = None  # the runner's, once set up
    busy: set[RequestHandler] = field(default_factory=set)
    evicted: int = 0
    refused: int = 0
    pending: list[RequestHandler] = field(default_factory=list)  # made, not yet connected

    def factory(self) -> asyncio.Protocol:
        assert self.server is not None, "set up the runner first"
        # asyncio accepts a burst of connections (up to the backlog) and makes their
        # protocols before any of them is connected or any evicted one is gone from the
        # server's list (it stays there without a transport until its task ends): count this
        # burst's, skip those closed already, so that each accept closes another idle one.
        open_now = [c for c in self.server.connections if c.transport is not None]
        if len(open_now) + len(self.pending) >= self.cap:
            idle = next((c for c in open_now if c not in self.busy), None)
            if idle is None:
                self.refused += 1
                return _Refused()
            idle.force_close()
            self.evicted += 1
        if not self.pending:  # connected by the next loop iteration, after this clears
            asyncio.get_running_loop().call_soon(self.pending.clear)
        handler = self.server()
        self.pending.append(handler)
        return handler

    @web.middleware
    async def track(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Outermost: a connection with a request in progress is not idle (never evicted)."""
        protocol = request.protocol
        self.busy.add(protocol)
        try:
            return await handler(request)
        finally:
            self.busy.discard(protocol)

    @web.middleware
    async def read_body(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Innermost, after the access checks: the body within `read_timeout_s`."""
        if request.body_exists:
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    await request.read()  # kept by aiohttp for post()/json()
            except TimeoutError:
                raise web.HTTPRequestTimeout(
                    text='{"error": "request body too slow"}', content_type="application/json"
                ) from None
        return await handler(request)


class EveryFewSeconds(logging.Filter):
    """Lets one record per message through every `every_s` seconds (by the record's own
    timestamp), and says how many were held back."""

    def __init__(self, messages: tuple[str, ...], every_s: float = LOG_EVERY_S) -> None:
        super().__init__()
        self.messages = messages
        self.every_s = every_s
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        key = next((m for m in self.messages if m in text), None)
        if key is None:
            return True
        if record.created - self.last.get(key, -1e18) < self.every_s:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        self.last[key] = record.created
        held = self.held.pop(key, 0)
        if held:
            record.msg = f"{text} ({held} more like it held back in the last {self.every_s:g} s)"
        return True


ACCEPT_ERRORS = EveryFewSeconds(("socket.accept() out of system resource",))


async def setup(
    app: web.Application, guard: ConnectionGuard, idle_timeout_s: float
) -> web.AppRunner:
    """The runner for `app`, set up, with `guard` watching its server."""
    kwargs: dict[str, Any] = {
        "access_log": None,
        "keepalive_timeout": idle_timeout_s,
        "max_line_size": 8190,
        "max_field_size": 8190,
    }
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    guard.server = runner.server
    return runner


async def listen(guard: ConnectionGuard, host: str, port: int) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        guard.factory, host, port, reuse_address=True, backlog=ACCEPT_BURST
    )
