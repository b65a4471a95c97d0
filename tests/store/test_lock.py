"""One daemon per state directory: the lock `gateway run` takes, and the test doctor uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store.lock import StateLocked, lock_state, state_lock_holder


def test_the_lock_is_exclusive_names_its_holder_and_is_dropped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert state_lock_holder(state) is None  # no lock file yet
    with lock_state(state):
        assert state_lock_holder(state) == os.getpid()
        with pytest.raises(StateLocked) as caught:
            lock_state(state)
        assert caught.value.pid == os.getpid()
        assert f"process {os.getpid()}" in str(caught.value)
        assert state_lock_holder(state) == os.getpid()  # testing did not take it
    assert state_lock_holder(state) is None
    lock_state(state).release()  # free again


def test_a_second_daemon_on_the_same_state_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        "[gateway]\nstate_dir = 'st'\n[sinks]\nstdout = false\n[service]\ncontrol_listen = ''\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait for it to hold the lock: its own log line says it is ready.
        assert first.stderr is not None
        for line in first.stderr:
            if "ready" in line:
                break
        assert state_lock_holder(tmp_path / "st") == first.pid
        second = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert f"is in use by another gateway (process {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert state_lock_holder(tmp_path / "st") is None  # gone with its process


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can own files for another user")
def test_root_does_not_run_a_daemon_in_the_services_state(tmp_path: Path) -> None:
    """`sudo gateway run` on an installed box would leave root's lock, token and console
    key in the service's state directory, and the service could never start again."""
    state = tmp_path / "st"
    state.mkdir()
    os.chown(state, 4242, 4242)
    config = tmp_path / "gw.toml"
    config.write_text(
        "[gateway]\nstate_dir = 'st'\n[sinks]\nstdout = false\n[service]\ncontrol_listen = ''\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "sudo -u proximity-gateway" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in state.iterdir()) == []  # nothing of root's left there
