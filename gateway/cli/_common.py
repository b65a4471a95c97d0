"""What the command groups share: the `--config` option, bad-input replies, the progress bar.

Everything here is imported on every start-up (`gateway --help` included), so it stays
standard-library only.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

# The parent of every command that cannot work without a config file. The few that fall back
# to the built-in defaults (locate, fences render, nfc write) declare their own optional
# --config, whose help says what the file is for there.
CONFIG = argparse.ArgumentParser(add_help=False)
CONFIG.add_argument("--config", required=True, help="TOML config file (docs/config.md)")

BAR_WIDTH = 30


def bad_input(message: str) -> int:
    """Report a bad argument or file on stderr; the exit code for bad input."""
    print(f"gateway: {message}", file=sys.stderr)
    return 2


def bar(filled: int, empty: str) -> str:
    """A progress bar of BAR_WIDTH cells, `filled` of them done."""
    return "#" * filled + empty * (BAR_WIDTH - filled)
