"""The package's shape stays readable: the layers (import-linter), few loose modules, no
sprawling files, and one read-only way into a running gateway."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"
MAX_LINES = 500
MAX_LOOSE_MODULES = 8


def test_the_import_contract_holds() -> None:
    """Layers top to bottom and pure stages, as declared in pyproject.toml."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is a dev dependency (scripts/setup --dev)"
    result = subprocess.run(
        [lint_imports, "--no-cache"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_few_modules_are_loose_at_the_top() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_is_longer_than_one_sitting(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines; split it"


# Attribute chains into the running pipeline, uplink or sources: only the status view (and
# the composition root and its shell) may follow them; the web and the metrics read the view.
CHAIN = re.compile(r"\bgateway\.(pipeline|uplink|ble_sources|nfc_sources|work|commands)\.")


@pytest.mark.parametrize(
    "module",
    sorted([*PACKAGE.glob("web/*.py"), PACKAGE / "runtime" / "metrics.py"]),
    ids=lambda p: p.stem,
)
def test_the_web_and_the_metrics_read_the_status_view(module: Path) -> None:
    found = [
        f"{module.name}:{n}: {line.strip()}"
        for n, line in enumerate(module.read_text(encoding="utf-8").splitlines(), start=1)
        if CHAIN.search(line)
    ]
    assert not found, found
