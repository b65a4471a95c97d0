"""scripts/install into a throw-away root: user, venv, config, unit; again; uninstall; purge."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config.sections import Config, load_config
from tests.conftest import REPO

NAME = "proximity-gateway"
HARDENING = {
    "Type": "notify",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "Restart": "on-failure",
    "StateDirectory": NAME,
    "ConfigurationDirectory": NAME,
    "LogsDirectory": NAME,
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_BLUETOOTH AF_NETLINK",
}


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "install"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_is_hardened_and_its_exposure_is_at_most_2() -> None:
    unit = REPO / "systemd" / f"{NAME}.service"
    settings = _unit_settings(unit.read_text())
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], key
    assert settings["WatchdogSec"] and settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    analysis = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", analysis.stdout)
    assert found, analysis.stdout + analysis.stderr
    assert float(found.group(1)) <= 2.0


@pytest.mark.registry  # pip installs the dependencies from the package registry
def test_install_again_uninstall_and_purge(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = _install(root)
    assert first.returncode == 0, first.stdout + first.stderr
    venv = root / "opt" / NAME / "venv"
    version = subprocess.run(
        [str(venv / "bin" / "gateway"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("gateway ")
    # the system user and its groups, inside the root only
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(rf"^{NAME}:x:\d+:\d+:.*:/var/lib/{NAME}:/usr/sbin/nologin$", passwd, re.M)
    group = (root / "etc" / "group").read_text()
    assert re.search(rf"^bluetooth:x:\d+:{NAME}$", group, re.M)
    # the config: a valid, commented template with fresh secrets, not the demo's
    config_file = root / "etc" / NAME / "config.toml"
    config = load_config(str(config_file))
    assert config.gateway.state_dir == f"/var/lib/{NAME}"
    assert config.gateway.pseudonym_key != Config().gateway.pseudonym_key
    assert config.nfc.loyalty_key != Config().nfc.loyalty_key
    assert config_file.stat().st_mode & 0o777 == 0o640

    def pruned(table: dict[str, Any]) -> dict[str, Any]:
        out = {k: pruned(v) if isinstance(v, dict) else v for k, v in table.items()}
        return {k: v for k, v in out.items() if v != {}}

    # only these are set; everything else stays at its default
    assert pruned(tomllib.loads(config_file.read_text())) == {
        "gateway": {
            "state_dir": f"/var/lib/{NAME}",
            "pseudonym_key": config.gateway.pseudonym_key,
        },
        "nfc": {"loyalty_key": config.nfc.loyalty_key},
    }
    assert '# control_listen = "127.0.0.1:8787"' in config_file.read_text()
    # the unit, enabled without a running systemd
    unit = root / "etc" / "systemd" / "system" / f"{NAME}.service"
    settings = _unit_settings(unit.read_text())
    assert settings["ExecStart"] == [
        f"/opt/{NAME}/venv/bin/gateway run --config /etc/{NAME}/config.toml"
    ]
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / f"{NAME}.service"
    assert wants.is_symlink() and str(wants.readlink()) == f"/etc/systemd/system/{NAME}.service"
    assert (root / "var" / "lib" / NAME).is_dir() and (root / "var" / "log" / NAME).is_dir()
    assert (root / "usr" / "lib" / "sysusers.d" / f"{NAME}.conf").exists()
    # `gateway` on the PATH, as the docs use it
    on_path = root / "usr" / "local" / "bin" / "gateway"
    assert str(on_path.readlink()) == f"/opt/{NAME}/venv/bin/gateway"
    _relocatable_image(root, tmp_path)
    _owned_for_the_service(root)

    # again: code and unit updated, the operator's config untouched
    edited = config_file.read_text() + "\n# edited by the shop\n"
    config_file.write_text(edited)
    (root / "var" / "lib" / NAME / "gateway.db").write_text("state")
    again = _install(root)
    assert again.returncode == 0, again.stderr
    assert "keeping" in again.stdout
    assert config_file.read_text() == edited
    assert passwd == (root / "etc" / "passwd").read_text()  # no second user

    removed = _install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt" / NAME).exists() and not unit.exists() and not wants.is_symlink()
    assert not (root / "etc" / NAME).exists() and not on_path.is_symlink()
    state = root / "var" / "lib" / NAME
    assert (state / "gateway.db").read_text() == "state"
    assert (state / "config.toml.uninstalled").read_text() == edited

    purged = _install(root, "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not state.exists()
    assert f"{NAME}:" not in (root / "etc" / "passwd").read_text()


def _service_ids(root: Path) -> tuple[int, int]:
    line = next(
        x for x in (root / "etc" / "passwd").read_text().splitlines() if x.startswith(f"{NAME}:")
    )
    fields = line.split(":")
    return int(fields[2]), int(fields[3])


def _relocatable_image(root: Path, tmp_path: Path) -> None:
    """The tree works where the image is mounted, not only where it was built."""
    venv = root / "opt" / NAME / "venv"
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        head = script.read_bytes()[:200]
        assert str(root).encode() not in head, script  # no build path in any shebang
    assert (venv / "bin" / "gateway").read_text().startswith("#!/bin/sh\n")
    # The interpreter is the system's (what the target has, and the service user may run),
    # not the one first on the builder's PATH (here pyenv's, under /root).
    system = subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            "import sys, venv, ensurepip; print(sys.version_info >= (3, 11))",
        ],
        capture_output=True,
        text=True,
    )
    if system.stdout.strip() == "True":
        assert os.path.realpath(venv / "bin" / "python") == os.path.realpath("/usr/bin/python3")
    assert str(root) not in (venv / "pyvenv.cfg").read_text()
    moved = tmp_path / "mounted-elsewhere"
    root.rename(moved)
    try:
        version = subprocess.run(
            [str(moved / "opt" / NAME / "venv" / "bin" / "gateway"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert version.returncode == 0 and version.stdout.startswith("gateway "), version.stderr
    finally:
        moved.rename(root)


def _owned_for_the_service(root: Path) -> None:
    """The config is readable by the service user and nobody else; its state dir is its own."""
    uid, gid = _service_ids(root)
    config_file = root / "etc" / NAME / "config.toml"
    state = root / "var" / "lib" / NAME
    tmpfiles = (root / "usr" / "lib" / "tmpfiles.d" / f"{NAME}.conf").read_text()
    assert f"z /etc/{NAME}/config.toml 0640 root {NAME} -" in tmpfiles  # applied at boot too
    assert f"d /var/lib/{NAME} 0750 {NAME} {NAME} -" in tmpfiles
    if os.getuid() != 0:
        return  # only root can hand files to another user at build time
    assert (config_file.stat().st_gid, config_file.stat().st_mode & 0o777) == (gid, 0o640)
    assert (state.stat().st_uid, state.stat().st_gid) == (uid, gid)
    etc = config_file.parent
    assert (etc.stat().st_uid, etc.stat().st_gid, etc.stat().st_mode & 0o777) == (0, gid, 0o750)
    # Owner root, group the service's: the service reads it (group r), nobody else can (no
    # "other" bits: it holds the box's secrets).
    assert config_file.stat().st_uid == 0


def test_a_pip_failure_stops_the_install_and_shows_pip_s_error(tmp_path: Path) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {
        "PIP_CONFIG_FILE": os.devnull,  # no index, no wheel cache: pip cannot succeed
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(empty),
        "PIP_NO_CACHE_DIR": "1",
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install"), "--root", str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 1
    assert "install: pip failed (exit 1); its last lines:" in result.stderr
    assert "No matching distribution found for setuptools" in result.stderr  # pip, verbatim
    log = re.search(r"install: the whole pip log: (\S+)", result.stderr)
    assert log and Path(log.group(1)).exists()
    assert not (tmp_path / "root" / "etc" / NAME / "config.toml").exists()  # stopped there
