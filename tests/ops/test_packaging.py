"""The sdist is the whole project and the wheel carries the contract: built with the real
build backend, the wheel installed into a fresh environment, `gateway contract` run there."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.registry  # the isolated build environment installs setuptools from the registry
def test_sdist_is_complete_and_the_wheel_ships_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")

    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for wanted in (
        "docs/asyncapi.yaml",
        "docs/grafana-dashboard.json",
        "docs/prometheus-alerts.yml",
        "docs/operations.md",
        "systemd/proximity-gateway.service",
        "scripts/install",
        "scripts/setup",
        "scripts/test",
        "geofences/demo-bookstore.geojson",
        "tests/conftest.py",
        "MANIFEST.in",
    ):
        assert wanted in names, f"the sdist lacks {wanted}"
    assert not any("__pycache__" in n or n.startswith(".venv") for n in names)

    with zipfile.ZipFile(wheel) as whl:
        data = [n for n in whl.namelist() if ".data/data/share/proximity-gateway/docs/" in n]
    assert {n.rsplit("/", 1)[1] for n in data} == {
        "asyncapi.yaml",
        "grafana-dashboard.json",
        "prometheus-alerts.yml",
    }

    # A fresh environment with only the wheel (the contract command needs no dependency),
    # installed by its own pip: pip's --prefix from this one would uninstall the checkout.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    printed = subprocess.run(
        [str(python), "-c", "from gateway.cli import main; raise SystemExit(main(['contract']))"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout: the installed copy must be found
        env={"PATH": "/usr/bin:/bin"},
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == (REPO / "docs" / "asyncapi.yaml").read_text()


def test_the_installer_refuses_32_bit_arm_with_the_way_out(tmp_path: Path) -> None:
    """On armv7l PyPI has no numpy/shapely/Pillow wheels: a clear refusal, nothing installed."""
    fake = tmp_path / "bin"
    fake.mkdir()
    uname = fake / "uname"
    uname.write_text('#!/bin/sh\n[ "$1" = -m ] && echo armv7l || /bin/uname "$@"\n')
    uname.chmod(0o755)
    root = tmp_path / "root"
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install"), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{fake}:/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "32-bit ARM (armv7l)" in result.stderr
    assert "64-bit Raspberry Pi OS" in result.stderr and "--allow-32bit" in result.stderr
    assert not (root / "opt").exists()  # refused before touching anything
