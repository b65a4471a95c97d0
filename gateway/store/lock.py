"""One daemon per state directory: an exclusive `flock` on `<state_dir>/gateway.lock`.

Two daemons on one state directory would both run the pipeline over the same outbox, each
sending what the other sends and deleting what the other has not confirmed. `gateway run`
(and `gateway replay`) take the lock for as long as they run; the kernel drops it when the
process ends, however it ends, so a crash never leaves a stale lock behind. The file holds
the holder's process id for the error message and for `gateway doctor`
(`state_lock_holder`), which only tests the lock and never takes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "gateway.lock"


class StateLocked(Exception):
    """The state directory is held by another process (`pid`; 0 when it could not be read)."""

    def __init__(self, state_dir: Path, pid: int) -> None:
        self.state_dir, self.pid = state_dir, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"{state_dir} is in use by another gateway ({who}): two daemons on one state "
            "directory would send and delete each other's events. Stop that one first "
            "(systemctl stop proximity-gateway), or give this one its own gateway.state_dir"
        )


class StateOwnedByOther(StateLocked):
    """Root was about to run a daemon in a state directory that belongs to the service."""

    def __init__(self, state_dir: Path, uid: int) -> None:
        Exception.__init__(
            self,
            f"{state_dir} belongs to uid {uid} (the service), and this is root: a daemon run "
            "as root would leave files there (the lock, the control token, the console key) "
            "the service could then not open. Start the service (sudo systemctl start "
            "proximity-gateway) or run as its user: sudo -u proximity-gateway gateway …",
        )
        self.state_dir, self.pid = state_dir, 0


class StateLock:
    """The held lock; `release()` (or the end of the process) gives it up."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_in(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def lock_state(state_dir: Path) -> StateLock:
    """Take the state directory's lock, or raise StateLocked naming the holder (or
    StateOwnedByOther when root would run a daemon in the service's state directory)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    owner = state_dir.stat().st_uid
    if os.geteuid() == 0 and owner != 0:
        raise StateOwnedByOther(state_dir, owner)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = _pid_in(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StateLocked(state_dir, pid) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(fd, path)


def state_lock_holder(state_dir: Path) -> int | None:
    """Is a gateway running on this state directory? None: no; else the holder's process
    id (0 if it could not be read). Tests the lock without taking it (a shared lock,
    dropped at once), so it is safe to call while the daemon runs. Raises OSError when the
    lock file exists but cannot be opened (permissions)."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _pid_in(fd)
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
