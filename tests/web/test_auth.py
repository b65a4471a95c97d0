"""The console's access rules without a server: password hashes and their upgrade, the login
limiter (per address, per /64, global, device cookies; bounded), trusted proxies, device
cookies, and the rate-limited accept-error log."""

from __future__ import annotations

import hmac
import json
import logging
import stat
from pathlib import Path

import pytest

from gateway.web import auth
from gateway.web.auth import (
    SCRYPT,
    DeviceCookies,
    LoginLimiter,
    PasswordStore,
    Proxies,
    ScryptParams,
    client_key,
    hash_password,
    verify_password,
)
from gateway.web.server import EveryFewSeconds, connection_cap

OLD = ScryptParams(2**14, 8, 1)  # what `gateway console-password` made before issue 16


def test_hashes_at_the_current_parameters_and_old_ones_are_flagged() -> None:
    new = hash_password("shop-floor-2026")
    assert new.startswith(f"scrypt${SCRYPT.n}${SCRYPT.r}${SCRYPT.p}$")
    assert verify_password(new, "shop-floor-2026") == (True, False)
    assert verify_password(new, "shop-floor-2025") == (False, False)
    old = hash_password("shop-floor-2026", params=OLD)
    assert verify_password(old, "shop-floor-2026") == (True, True)  # right, but re-hash it
    assert verify_password(old, "wrong") == (False, False)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt$16384$8$1$zz$00",
        "bcrypt$16384$8$1$00$00",
        "scrypt$0$8$1$00112233$" + "00" * 32,
        # 2^24 × 8 × 128 = 16 GiB: refused, not attempted
        "scrypt$16777216$8$1$00112233$" + "00" * 32,
        "scrypt$16384$8$1000$00112233$" + "00" * 32,
    ],
)
def test_malformed_or_absurd_hashes_never_match(stored: str) -> None:
    assert verify_password(stored, "anything") == (False, False)


def test_an_upgrade_is_kept_in_the_state_directory_for_its_config_hash(tmp_path: Path) -> None:
    configured = hash_password("shop-floor-2026", params=OLD)
    path = tmp_path / "console-password.json"
    store = PasswordStore(configured, path)
    assert store.current == configured
    store.upgrade("shop-floor-2026")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify_password(store.current, "shop-floor-2026") == (True, False)
    # the next start uses the upgrade ...
    assert PasswordStore(configured, path).current == store.current
    # ... unless the config now holds another hash: the config wins
    other = hash_password("new-password-2027")
    assert PasswordStore(other, path).current == other
    path.write_text("{not json")
    assert PasswordStore(configured, path).current == configured
    path.write_text(json.dumps({"replaces": "x", "hash": 3}))
    assert PasswordStore(configured, path).current == configured


def test_each_address_has_a_budget_that_refills_a_delay_not_a_lockout() -> None:
    limiter = LoginLimiter(per_minute=5, global_per_minute=30)
    keys = limiter.keys("192.0.2.7", None)
    assert [limiter.take(keys, 0.0) for _ in range(5)] == [0.0] * 5
    wait = limiter.take(keys, 0.0)
    assert wait == pytest.approx(12.0)  # one token per 60/5 s
    assert limiter.take(keys, 6.0) == pytest.approx(6.0)
    assert limiter.take(keys, 12.0) == 0.0  # after the wait: checked again
    # a good login gives its token back
    limiter.give_back(keys, 12.0)
    assert limiter.take(keys, 12.0) == 0.0


def test_rotating_addresses_meets_the_global_budget() -> None:
    limiter = LoginLimiter(per_minute=5, global_per_minute=30)
    allowed = 0
    for n in range(1000):  # 1000 addresses, 1 guess each, within the same second
        if limiter.take(limiter.keys(f"10.0.{n // 250}.{n % 250}", None), 0.5) == 0.0:
            allowed += 1
    assert allowed == 30
    # over a minute of rotating (one attempt every 0.1 s) the global rate holds
    allowed = sum(
        limiter.take(limiter.keys(f"10.1.{n // 250}.{n % 250}", None), 1.0 + n * 0.1) == 0.0
        for n in range(600)
    )
    assert allowed <= 31


def test_an_ipv6_host_cannot_rotate_through_its_64() -> None:
    limiter = LoginLimiter(per_minute=5, global_per_minute=1000)
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1") == "addr:192.0.2.1"
    tries = [
        limiter.take(limiter.keys(f"2001:db8:1:2::{n:x}", None), 0.0) == 0.0 for n in range(50)
    ]
    assert sum(tries) == 5
    assert limiter.take(limiter.keys("2001:db8:1:3::1", None), 0.0) == 0.0  # the next /64


def test_a_browser_that_logged_in_before_is_not_locked_out_by_an_attack() -> None:
    limiter = LoginLimiter(per_minute=5, global_per_minute=30)
    devices = DeviceCookies.load(None)
    staff = devices.verify(devices.issue())
    assert staff is not None
    # an attack from many addresses drains the global budget, and staff share the address
    for n in range(500):
        limiter.take(limiter.keys(f"10.0.{n // 250}.{n % 250}", None), 0.0)
    assert limiter.take(limiter.keys("10.0.0.1", None), 0.0) > 0
    assert limiter.take(limiter.keys("10.0.0.1", staff), 0.0) == 0.0
    # forged or tampered cookies are no device
    cookie = devices.issue()
    assert devices.verify(cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert devices.verify("x." + "0" * 32) is None
    assert DeviceCookies.load(None).verify(cookie) is None  # another key


def test_device_key_is_owner_only_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "console-device.key"
    first = DeviceCookies.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cookie = first.issue()
    assert DeviceCookies.load(path).verify(cookie) is not None


def test_the_limiter_table_stays_bounded() -> None:
    limiter = LoginLimiter(per_minute=5, global_per_minute=1000, max_clients=256)
    for n in range(20_000):
        limiter.take(limiter.keys(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", None), n * 0.01)
    assert len(limiter.buckets) <= 257  # the clients and the global bucket


def test_forwarded_headers_count_only_from_trusted_proxies() -> None:
    proxies = Proxies.parse(["127.0.0.1", "10.0.0.0/24"])
    # not a proxy: its X-Forwarded-For is the client's own claim, ignored
    assert proxies.client("192.0.2.9", ["1.2.3.4"]) == "192.0.2.9"
    # through the proxy: the right-most entry that is not a trusted proxy
    assert proxies.client("127.0.0.1", ["6.6.6.6, 192.0.2.9"]) == "192.0.2.9"
    assert proxies.client("127.0.0.1", ["6.6.6.6", "192.0.2.9, 10.0.0.3"]) == "192.0.2.9"
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"
    assert proxies.client("127.0.0.1", ["not-an-address"]) == "127.0.0.1"
    assert Proxies().client("127.0.0.1", ["192.0.2.9"]) == "127.0.0.1"


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what auth calls
    assert auth.token_matches("Bearer abc", "Bearer abc")
    assert not auth.token_matches("Bearer abd", "Bearer abc")
    assert not auth.token_matches("", None)
    assert seen == [(b"Bearer abc", b"Bearer abc"), (b"Bearer abd", b"Bearer abc")]


def test_accept_errors_are_logged_once_per_interval() -> None:
    limit = EveryFewSeconds(("socket.accept() out of system resource",), every_s=10.0)

    def record(t: float, msg: str) -> logging.LogRecord:
        r = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)
        r.created = t
        return r

    flood = [
        record(1000.0 + i * 0.001, "socket.accept() out of system resource") for i in range(5000)
    ]
    passed = [r for r in flood if limit.filter(r)]
    assert len(passed) == 1
    later = record(1011.0, "socket.accept() out of system resource")
    assert limit.filter(later) and "4999 more like it held back" in str(later.msg)
    assert limit.filter(record(1011.5, "something else"))


def test_the_connection_cap_stays_under_the_open_file_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        assert connection_cap(10_000) == 136
        assert connection_cap(100) == 100
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
