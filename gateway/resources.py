"""Where shipped data lives: store maps, hardware profiles and the demo scenario.

The top-level `geofences/` and `firmware_profiles/` folders are the source of truth. In a
source checkout (editable install) they sit next to the package; a wheel installs them under
`<prefix>/share/proximity-gateway/`; `GATEWAY_SHARE` overrides both (used by the installer).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"


def share_dirs() -> list[Path]:
    dirs: list[Path] = []
    if env := os.environ.get("GATEWAY_SHARE"):
        dirs.append(Path(env))
    dirs.append(PACKAGE_DIR.parent)
    dirs.append(Path(sys.prefix) / "share" / "proximity-gateway")
    return dirs


def shared_path(relative: str) -> Path | None:
    """The first existing shipped file or folder at `relative`, or None."""
    for base in share_dirs():
        candidate = base / relative
        if candidate.exists():
            return candidate
    return None


def data_file(name: str) -> Path:
    """A file embedded in the package (demo trace, demo profiles)."""
    return DATA_DIR / name
