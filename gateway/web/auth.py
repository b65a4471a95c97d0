"""Who may use the staff console and the control API, and how that is checked.

* Staff log in with one password per gateway; the config holds only its scrypt hash
  (`gateway console-password` makes one). Checking a password costs ~0.2 s of CPU and 16 MiB
  by design, so it runs in a worker thread, one at a time, never on the event loop. A hash
  made with weaker parameters than `SCRYPT` is upgraded at the next good login (kept in the
  state directory, see `PasswordStore`).
* A session is a random id in a cookie that is `HttpOnly` and `SameSite=Strict` (and
  `Secure` over HTTPS, also behind a trusted TLS proxy), kept in memory (a restart logs
  everybody out).
* Every state-changing request must carry the session's CSRF token in `X-CSRF-Token`, and
  come from one of the console's own origins.
* Logins are limited by token buckets (`LoginLimiter`): per IPv4 address or IPv6 /64, and
  for all of those together; a browser that logged in here before carries a signed device
  cookie and is limited on its own only, so nobody else's failures can lock it out. Over a
  limit a client waits for its bucket to refill (a delay, never a lock-out).
* Local tools (`gateway status`, `doctor`, Prometheus on the box) use a bearer token the
  daemon writes at start-up to `<state_dir>/control.token`, readable by the service user
  (and root) only; it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# --- passwords ---------------------------------------------------------------------------


class ScryptParams(NamedTuple):
    n: int
    r: int
    p: int

    @property
    def memory(self) -> int:
        return 128 * self.n * self.r


# OWASP's password storage guidance lists scrypt N=2^17 r=8 p=1 (128 MiB) and, as equal in
# cost, N=2^14 r=8 p=5 (16 MiB). The unit's MemoryMax is 200 MB on a 512 MB Pi, so the
# 16 MiB form: p=5 runs the 16 MiB mix five times over, sequentially (decisions §22).
SCRYPT = ScryptParams(2**14, 8, 5)
# A hash asking for more than this is refused rather than allowed to exhaust the box.
MAX_HASH_MEMORY = 64 * 2**20


def hash_password(password: str, salt: bytes | None = None, params: ScryptParams = SCRYPT) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        dklen=32,
        maxmem=params.memory + 2**20,
    )
    return f"scrypt${params.n}${params.r}${params.p}${salt.hex()}${digest.hex()}"


class Verdict(NamedTuple):
    ok: bool
    outdated: bool  # right password, hash weaker than SCRYPT: store an upgraded one


def verify_password(stored: str, password: str) -> Verdict:
    """Check `password` against a `scrypt$N$r$p$salt$digest` line (blocking: run it in a
    thread). Malformed or absurdly expensive hashes never match."""
    try:
        scheme, n_text, r_text, p_text, salt, digest = stored.split("$")
        params = ScryptParams(int(n_text), int(r_text), int(p_text))
        expected = bytes.fromhex(digest)
        if (
            scheme != "scrypt"
            or min(params) < 1
            or params.p > 64
            or params.memory > MAX_HASH_MEMORY
            or not 16 <= len(expected) <= 64
        ):
            return Verdict(False, False)
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=params.n,
            r=params.r,
            p=params.p,
            dklen=len(expected),
            maxmem=params.memory + 2**20,
        )
    except (ValueError, MemoryError):
        return Verdict(False, False)
    ok = hmac.compare_digest(got, expected)
    weaker = params.n * params.r * params.p < SCRYPT.n * SCRYPT.r * SCRYPT.p
    return Verdict(ok, ok and weaker)


@dataclass(slots=True)
class PasswordStore:
    """The staff password hash in force: the config's, or the upgrade of it a good login
    wrote to `<state_dir>/console-password.json` (the config file is read-only to the
    service). An upgrade names the config hash it replaces, so a new hash in the config
    always wins over an old upgrade."""

    configured: str
    path: Path | None
    current: str = ""

    def __post_init__(self) -> None:
        self.current = self.configured
        if self.path is None or not self.configured:
            return
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("replaces") == _fingerprint(self.configured) and isinstance(
                saved.get("hash"), str
            ):
                self.current = saved["hash"]
        except (OSError, ValueError, AttributeError):
            pass  # no upgrade yet, or an unreadable one: the config's hash stands

    def upgrade(self, password: str) -> str:
        """Re-hash at `SCRYPT` (blocking) and keep it; returns where it was written."""
        self.current = hash_password(password)
        if self.path is None:
            return ""
        body = json.dumps({"replaces": _fingerprint(self.configured), "hash": self.current})
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body + "\n")
        os.replace(tmp, self.path)
        return str(self.path)


def _fingerprint(stored: str) -> str:
    return hashlib.sha256(stored.encode()).hexdigest()


# --- sessions ----------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float


@dataclass(slots=True)
class Sessions:
    ttl_s: float
    sessions: dict[str, Session] = field(default_factory=dict)

    def create(self, now: float) -> tuple[str, Session]:
        self.sessions = {k: s for k, s in self.sessions.items() if s.expires > now}
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), now + self.ttl_s)
        self.sessions[sid] = session
        return sid, session

    def get(self, sid: str | None, now: float) -> Session | None:
        if not sid:
            return None
        session = self.sessions.get(sid)
        if session is None or session.expires <= now:
            self.sessions.pop(sid, None)
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)


def token_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


# --- clients behind proxies ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proxies:
    """The reverse proxies whose X-Forwarded-* headers are believed."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Proxies:
        return cls(tuple(ipaddress.ip_network(e, strict=False) for e in entries))

    def trusts(self, address: str | None) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address: the peer's, or when the peer is a trusted proxy, the
        right-most X-Forwarded-For entry that is not itself a trusted proxy (entries further
        left were written by the client and prove nothing)."""
        if not self.trusts(peer):
            return peer
        hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
        for hop in reversed(hops):
            if _ip(hop) is None:
                return peer  # garbage from the proxy chain: fall back to the proxy itself
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(address: str | None) -> str:
    """What a login limit counts per: the IPv4 address, or the IPv6 /64 (one host usually
    owns a whole /64 and can rotate through it)."""
    ip = _ip(address)
    if ip is None:
        return "addr:?"
    if isinstance(ip, ipaddress.IPv6Address):
        return f"net:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"addr:{ip}"


# --- the login limiter --------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


GLOBAL = "all"


@dataclass(slots=True)
class LoginLimiter:
    """Token buckets: a client's (address, /64 or device cookie) holds `per_minute` attempts
    and refills at that rate; all clients without a device cookie share one more bucket of
    `global_per_minute`. An attempt takes a token from each bucket it belongs to; a good
    login gives them back. The table holds at most `max_clients` client buckets, the least
    recently used forgotten first: a flood of new addresses can reset old ones that way,
    but never get past the global bucket.
    """

    per_minute: int
    global_per_minute: int
    max_clients: int = 4096
    buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def keys(self, address: str | None, device: str | None) -> tuple[str, ...]:
        return (f"dev:{device}",) if device else (client_key(address), GLOBAL)

    def _capacity(self, key: str) -> float:
        return float(self.global_per_minute if key == GLOBAL else self.per_minute)

    def _level(self, key: str, now: float) -> _Bucket:
        capacity = self._capacity(key)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(capacity, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(capacity, bucket.tokens + elapsed * capacity / 60.0)
            bucket.updated = now
            self.buckets.move_to_end(key)
        return bucket

    def take(self, keys: Sequence[str], now: float) -> float:
        """0.0 and one token taken from each bucket, or the seconds to wait (nothing taken)."""
        levels = [(key, self._level(key, now)) for key in keys]
        wait = max(
            ((1.0 - b.tokens) * 60.0 / self._capacity(k) for k, b in levels if b.tokens < 1.0),
            default=0.0,
        )
        if wait == 0.0:
            for _key, bucket in levels:
                bucket.tokens -= 1.0
        self._prune()
        return wait

    def give_back(self, keys: Sequence[str], now: float) -> None:
        for key in keys:
            bucket = self._level(key, now)
            bucket.tokens = min(self._capacity(key), bucket.tokens + 1.0)

    def _prune(self) -> None:
        while len(self.buckets) > self.max_clients + 1:
            key, bucket = self.buckets.popitem(last=False)  # the least recently used
            if key == GLOBAL:
                self.buckets[key] = bucket  # never forgotten (back at the end)


@dataclass(frozen=True, slots=True)
class DeviceCookies:
    """Signed ids for browsers that logged in here: `id.mac`, HMAC-SHA256 with a key kept in
    the state directory (so they survive restarts). Not a session: it only says "this
    browser knew the password once", which buys it a login budget of its own."""

    key: bytes

    @classmethod
    def load(cls, path: Path | None) -> DeviceCookies:
        if path is None:
            return cls(secrets.token_bytes(32))
        try:
            key = bytes.fromhex(path.read_text(encoding="utf-8").strip())
            if len(key) >= 32:
                return cls(key)
        except (OSError, ValueError):
            pass
        key = secrets.token_bytes(32)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(key.hex() + "\n")
        os.replace(tmp, path)
        return cls(key)

    def issue(self) -> str:
        ident = secrets.token_urlsafe(16)
        return f"{ident}.{self._mac(ident)}"

    def verify(self, cookie: str | None) -> str | None:
        """The device id of a genuine cookie, else None."""
        if not cookie or len(cookie) > 200:
            return None
        ident, _, mac = cookie.partition(".")
        return ident if ident and hmac.compare_digest(mac, self._mac(ident)) else None

    def _mac(self, ident: str) -> str:
        return hmac.new(self.key, ident.encode(), hashlib.sha256).hexdigest()[:32]
