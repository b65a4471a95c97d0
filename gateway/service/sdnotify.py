"""The systemd notification protocol, without libsystemd: a datagram to `$NOTIFY_SOCKET`.

`READY=1` once the daemon really serves, `WATCHDOG=1` from the event loop (so a stalled loop
stops pinging and systemd restarts the service), `RELOADING=1` / `READY=1` around a SIGHUP
reload, `STOPPING=1` on the way out, `STATUS=...` for `systemctl status`. Outside systemd
(no `$NOTIFY_SOCKET`) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env: Mapping[str, str] = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace (a leading NUL byte on the wire).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = self._watchdog(env)

    @staticmethod
    def _watchdog(env: Mapping[str, str]) -> float | None:
        """The watchdog interval systemd expects pings within, if it is meant for us."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1e6 if value > 0 else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """One datagram of newline-separated KEY=VALUE fields; False if it could not go."""
        if not self.address:
            return False
        message = "\n".join(fields).encode()
        # Non-blocking: a datagram socket whose reader lags has a short queue, and a blocked
        # send would freeze the very event loop the watchdog is meant to vouch for.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                sock.sendto(message, self.address)
            except OSError:  # no listener, or its queue is full (EAGAIN): dropped, say so
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, monotonic_s: float) -> bool:
        """`monotonic_s`: CLOCK_MONOTONIC now (the service's clock). MONOTONIC_USEC lets
        Type=notify-reload units match the reload to this signal."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={int(monotonic_s * 1_000_000)}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
