"""Who may use the staff console and the control API, and how that is checked.

* Staff log in with one password per gateway; the config holds only its scrypt hash
  (`gateway console-password` makes one). A session is a random id in a cookie that is
  `HttpOnly` and `SameSite=Strict`, kept in memory (a restart logs everybody out).
* Every state-changing request must carry the session's CSRF token in `X-CSRF-Token`, and
  come from the console's own origin.
* Logins are rate limited per client address (a sliding minute).
* Local tools (`gateway status`, `doctor`, Prometheus on the box) use a bearer token the
  daemon writes at start-up to `<state_dir>/control.token`, readable by the service user
  (and root) only.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field


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


@dataclass(slots=True)
class LoginLimiter:
    per_minute: int
    attempts: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, client: str, now: float) -> bool:
        window = self.attempts.setdefault(client, deque())
        while window and now - window[0] > 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        return True
