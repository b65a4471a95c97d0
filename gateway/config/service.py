"""Settings of the service around the pipeline: its local control endpoint (status, metrics,
health) and the staff console (listen address, logins, proxies). Part of `Config`, assembled
by `gateway.config.sections`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.config.schema import doc
from gateway.config.secrets import valid_hash


@dataclass(frozen=True, slots=True)
class ServiceSection:
    control_listen: str = doc(
        "host:port of the local HTTP endpoint for `gateway status`, `/metrics` (Prometheus "
        "text) and `/healthz`. Loopback unless you mean the shop LAN to see it. Empty: off.",
        default="127.0.0.1:8787",
    )
    stop_drain_s: float = doc(
        "On SIGTERM: how long to keep delivering queued events before closing the store "
        "(they stay queued on disk either way).",
        default=5.0,
    )
    log_format: str = doc(
        "'kv' (key=value, one line per event; reads well in journalctl) or 'json'.",
        default="kv",
    )
    log_level: str = doc("debug, info, warning or error.", default="info")
    http_max_connections: int = doc(
        "Control endpoint: open HTTP connections at most. At the cap the longest idle one is "
        "closed for a new one (a request in progress is never cut); also kept below the "
        "process's open-file limit.",
        default=100,
    )
    http_idle_timeout_s: float = doc(
        "Control endpoint: a connection that has not sent a complete request head within "
        "this long (after connecting, or after its last answer) is closed. Live event streams "
        "are requests in progress and stay open.",
        default=15.0,
    )
    http_read_timeout_s: float = doc(
        "Control endpoint: a request's body must arrive within this long.", default=10.0
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not 4 <= self.http_max_connections <= 10_000:
            problems["http_max_connections"] = "must be 4-10000"
        if not 1 <= self.http_idle_timeout_s <= 3600:
            problems["http_idle_timeout_s"] = "must be 1-3600 s"
        if not 1 <= self.http_read_timeout_s <= 600:
            problems["http_read_timeout_s"] = "must be 1-600 s"
        if self.control_listen and not _host_port(self.control_listen):
            problems["control_listen"] = "expected host:port, e.g. '127.0.0.1:8787' or '[::1]:8787'"
        if not 0 <= self.stop_drain_s <= 25:
            problems["stop_drain_s"] = "must be 0-25 s (systemd's stop timeout is 30 s)"
        if self.log_format not in ("kv", "json"):
            problems["log_format"] = "use 'kv' or 'json'"
        if self.log_level not in ("debug", "info", "warning", "error"):
            problems["log_level"] = "use debug, info, warning or error"
        return problems


@dataclass(frozen=True, slots=True)
class ConsoleSection:
    password_hash: str = doc(
        "scrypt hash of the staff password (`gateway console-password` prints one). Empty: "
        "no logins; the control API then takes only the local bearer token.",
        default="",
    )
    session_ttl_s: float = doc("A console login lasts this long.", default=8 * 3600.0)
    login_attempts_per_minute: int = doc(
        "Login attempts per client per minute: per IPv4 address, per IPv6 /64, and per "
        "browser that has logged in here before (its device cookie). Over it a client waits "
        "(429 with Retry-After) until its budget refills: a delay, never a lock-out.",
        default=5,
    )
    login_attempts_global_per_minute: int = doc(
        "Login attempts per minute from all clients without a device cookie together: what "
        "an attacker rotating addresses gets at most. Browsers that logged in here before "
        "are not counted against it, so an attack cannot lock staff out.",
        default=30,
    )
    trusted_proxies: list[str] = doc(
        "Addresses or networks (e.g. '127.0.0.1', '10.0.0.0/24') of reverse proxies whose "
        "X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are believed: behind a TLS "
        "proxy the session cookie is then Secure and logins are limited per real client. "
        "From anyone else those headers are ignored.",
        default_factory=list,
    )
    origins: list[str] = doc(
        "Origins the console is opened from by a name, e.g. 'https://gateway-12.shop.example' "
        "or 'http://gateway.local:8787'. Addresses (http://192.168.1.20:8787) and requests "
        "through a trusted proxy need no entry; a POST from any other origin is refused.",
        default_factory=list,
    )

    def validate(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.password_hash and not valid_hash(self.password_hash):
            problems["password_hash"] = "not a hash from `gateway console-password`"
        if not 60 <= self.session_ttl_s <= 7 * 86400:
            problems["session_ttl_s"] = "must be between a minute and a week"
        if not 1 <= self.login_attempts_per_minute <= 100:
            problems["login_attempts_per_minute"] = "must be 1-100"
        if not 1 <= self.login_attempts_global_per_minute <= 1000:
            problems["login_attempts_global_per_minute"] = "must be 1-1000"
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                problems["trusted_proxies"] = (
                    f"{proxy!r} is not an address or network; give e.g. '127.0.0.1' or "
                    "'10.0.0.0/24' (names are not resolved)"
                )
        for origin in self.origins:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                problems["origins"] = (
                    f"{origin!r}: give scheme://host[:port], e.g. 'https://gw.shop.example', "
                    "without a path"
                )
        return problems


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def host_port(text: str) -> tuple[str, int]:
    """`control_listen` split (validated at load time)."""
    parsed = _host_port(text)
    if parsed is None:
        raise ValueError(f"not host:port: {text!r}")
    return parsed
