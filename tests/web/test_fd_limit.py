"""Issue 16's connection flood re-run against the real daemon process: at an open-file limit
of 200, 300 idle connections neither stop `/healthz` nor fill the log, and the server closes
them by itself."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.broker import free_port

FILES = 200


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


def test_three_hundred_idle_connections_at_a_200_file_limit(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
        f"[service]\ncontrol_listen = '127.0.0.1:{port}'\nhttp_idle_timeout_s = 2.0\n"
        "http_max_connections = 10000\n"  # lowered by the daemon to fit its file limit
    )
    log = tmp_path / "daemon.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_files,
        )
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(300):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        # the probe still answers while they are held
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        # and the server closes every idle one by itself: EOF, or reset when evicted early
        for sock in held:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    finally:
        for sock in held:
            sock.close()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    text = log.read_text()
    assert "at most 136 connections" in text  # 200 files less the 64 kept for the rest
    assert text.count("Too many open files") == 0, text[-2000:]
    assert len(text.splitlines()) < 50, text[-2000:]
