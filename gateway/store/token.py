"""The control endpoint's bearer token, `<state_dir>/control.token`: written by the daemon at
start-up (owner-only), read by the local tools (`gateway status`, `doctor`, Prometheus on the
box). A file in the state directory, so the tools need not import the web side to find it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "control.token"


def write_token(state_dir: Path) -> str:
    """A fresh bearer token for local tools, readable by the owner only."""
    token = secrets.token_urlsafe(32)
    path = state_dir / TOKEN_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    tmp.replace(path)
    return token


def read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
