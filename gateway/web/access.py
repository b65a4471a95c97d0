"""Access to the control endpoint: the guard every request passes, logins and logouts.

How it decides is `gateway.web.auth` (passwords, sessions, the limiter, device cookies,
trusted proxies); this module applies it to aiohttp requests.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.web import auth as consoleauth

log = logging.getLogger(__name__)

COOKIE = "gw_session"
DEVICE_COOKIE = "gw_device"  # "this browser logged in here before" (consoleauth.DeviceCookies)
DEVICE_COOKIE_AGE = 400 * 86400  # the longest a browser keeps a cookie
RELAYED = "relayed_by_trusted_proxy"
MAX_PASSWORD = 1024
OPEN_PATHS = ("/healthz", "/login", "/static/")


@dataclass(slots=True)
class Access:
    """Sessions, logins and the checks every request passes (`guard`, a middleware)."""

    gateway: Gateway
    sessions: consoleauth.Sessions
    limiter: consoleauth.LoginLimiter
    passwords: consoleauth.PasswordStore
    token: str | None
    devices: consoleauth.DeviceCookies = field(
        default_factory=lambda: consoleauth.DeviceCookies.load(None)
    )
    proxies: consoleauth.Proxies = field(default_factory=consoleauth.Proxies)
    origins: tuple[str, ...] = ()
    # One scrypt at a time: each takes 16 MiB and a core for ~0.2 s. Browsers that logged in
    # here before have a lane of their own, so staff never queue behind a guesser's hashes
    # (scripts/attacklab.py: 14-22 s on a loaded box); at most two hashes, 32 MiB, at once.
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    known_hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    # --- access -------------------------------------------------------------------------

    def session(self, request: web.Request) -> consoleauth.Session | None:
        return self.sessions.get(request.cookies.get(COOKIE), self.gateway.clock.wall())

    def bearer_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return bool(self.token) and consoleauth.token_matches(header, f"Bearer {self.token}")

    def behind_proxy(self, request: web.Request) -> web.Request:
        """The request as the client made it, when a trusted proxy relayed it: the client's
        address, the scheme (https) and host it used. Anyone else's X-Forwarded-* headers
        are ignored."""
        if not self.proxies.trusts(request.remote):
            return request
        headers = request.headers
        changes: dict[str, Any] = {
            "remote": self.proxies.client(request.remote, headers.getall("X-Forwarded-For", []))
        }
        proto = _last(headers.getall("X-Forwarded-Proto", []))
        if proto in ("http", "https"):
            changes["scheme"] = proto
        host = _last(headers.getall("X-Forwarded-Host", []))
        if host and _HOST.fullmatch(host):
            changes["host"] = host
        relayed = request.clone(**changes)
        relayed[RELAYED] = True
        return relayed

    def origin_ok(self, request: web.Request) -> bool:
        """A browser's Origin, when it sends one, must be the console's: a configured
        origin, or the scheme and host of this very request when that host is an address
        (a name in Host could be an attacker's, rebound to this box) or came through a
        trusted proxy."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site request; the CSRF token still decides
        if origin in self.origins:
            return True
        if origin != f"{request.scheme}://{request.host}":
            return False
        return bool(request.get(RELAYED)) or _is_address(urlsplit(origin).hostname)

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request = self.behind_proxy(request)
        if request.path.startswith(OPEN_PATHS):
            return await handler(request)
        if self.bearer_ok(request):
            return await handler(request)  # local tools: no cookie, so no CSRF to fear
        session = self.session(request)
        if session is None:
            if request.path == "/" and request.method == "GET":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(
                text='{"error": "log in first"}', content_type="application/json"
            )
        if request.method not in ("GET", "HEAD"):
            if not self.origin_ok(request):
                raise web.HTTPForbidden(
                    text='{"error": "cross-origin request"}', content_type="application/json"
                )
            if not consoleauth.token_matches(request.headers.get("X-CSRF-Token", ""), session.csrf):
                raise web.HTTPForbidden(
                    text='{"error": "missing or wrong CSRF token"}', content_type="application/json"
                )
        return await handler(request)

    # --- pages --------------------------------------------------------------------------

    async def login_page(
        self,
        request: web.Request,
        message: str = "",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if not self.passwords.current:
            message = (
                "The console is not set up on this gateway: put a password hash in "
                "[console] password_hash (gateway console-password)."
            )
        body = fill(
            data_file("console/login.html").read_text(encoding="utf-8"),
            message=escape(message),
            store=escape(self.gateway.store_map.name),
        )
        return web.Response(text=body, content_type="text/html", status=status, headers=headers)

    async def login(self, request: web.Request) -> web.Response:
        clock = self.gateway.clock
        if request.headers.get("Origin") is not None and not self.origin_ok(request):
            return await self.login_page(request, "Log in from the console's own page.", 403)
        device = self.devices.verify(request.cookies.get(DEVICE_COOKIE))
        keys = self.limiter.keys(request.remote, device)
        wait = self.limiter.take(keys, clock.monotonic())
        if wait > 0:
            seconds = math.ceil(wait)
            return await self.login_page(
                request,
                f"Too many attempts; try again in {seconds} s.",
                429,
                {"Retry-After": str(seconds)},
            )
        form = await request.post()
        password = str(form.get("password", ""))[:MAX_PASSWORD]
        stored = self.passwords.current
        verdict = consoleauth.Verdict(False, False)
        lane = self.hashing if device is None else self.known_hashing
        if stored:
            async with lane:
                # blocking and slow by design: in a worker thread, never on the event loop
                verdict = await asyncio.to_thread(consoleauth.verify_password, stored, password)
        if not verdict.ok:
            return await self.login_page(request, "Wrong password.", 401)
        self.limiter.give_back(keys, clock.monotonic())
        if verdict.outdated:
            async with lane:
                try:
                    where = await asyncio.to_thread(self.passwords.upgrade, password)
                except OSError as exc:  # kept in memory; the next start upgrades again
                    where = f"memory only, not saved ({exc})"
            log.warning(
                "console password hash upgraded to scrypt N=%d r=%d p=%d in %s; replace "
                "[console] password_hash with a new `gateway console-password` line",
                *consoleauth.SCRYPT,
                where or "memory only",
            )
        sid, _session = self.sessions.create(clock.wall())
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,
            max_age=int(self.sessions.ttl_s),
        )
        if device is None:
            response.set_cookie(
                DEVICE_COOKIE,
                self.devices.issue(),
                httponly=True,
                samesite="Strict",
                path="/login",
                secure=request.secure,
                max_age=DEVICE_COOKIE_AGE,
            )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.drop(request.cookies.get(COOKIE))
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response


def escape(text: str) -> str:
    """Text for HTML content and quoted attribute values alike."""
    return html.escape(text, quote=True)


def fill(template: str, **values: str) -> str:
    """Fill `{{name}}` slots in one pass with already-encoded values: a value that happens
    to contain `{{...}}` stays text, it is never filled in turn."""
    return _SLOT.sub(lambda m: values[m.group(1)], template)


_SLOT = re.compile(r"\{\{(\w+)\}\}")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def _last(values: list[str]) -> str:
    """The last comma-separated entry over repeated headers: what the nearest hop wrote."""
    entries = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return entries[-1] if entries else ""


def _is_address(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
