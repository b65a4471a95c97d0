"""What the command groups share: the `--config` option, bad-input replies, the progress bar.

Everything here is imported on every start-up (`gateway --help` included), so it stays
standard-library only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

# Where commands find the config when --config is not given: $GATEWAY_CONFIG, else the file
# scripts/install writes. So `gateway doctor` on an installed box needs no arguments.
CONFIG_ENV = "GATEWAY_CONFIG"
INSTALLED_CONFIG = "/etc/proximity-gateway/config.toml"
CONFIG_HELP = (
    f"the TOML config file (docs/config.md); default: ${CONFIG_ENV}, else {INSTALLED_CONFIG}"
)

# The parent of every command that cannot work without a config file. The few that fall back
# to the built-in defaults (locate, fences render, nfc write --uri) declare their own optional
# --config (`config_mode="optional"`), whose help says what the file is for there.
CONFIG = argparse.ArgumentParser(add_help=False)
CONFIG.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)


def add_optional_config(parser: argparse.ArgumentParser, what: str) -> None:
    """`--config` for a command that falls back to the built-in defaults without one;
    `what` says what the file is for there (e.g. "the presence settings")."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"config for {what}; default: ${CONFIG_ENV}, else {INSTALLED_CONFIG} if present, "
        "else the built-in defaults",
    )


class NoConfig(Exception):
    """No --config, no $GATEWAY_CONFIG, no installed config: bad input (exit 2)."""


def resolve_config(given: str | None, mode: str = "required") -> str | None:
    """The config file a command uses: `given` (--config), else $GATEWAY_CONFIG, else the
    installed one if it exists. `mode`: "required" raises NoConfig when there is none;
    "optional" returns None (the command runs on the built-in defaults); "report" returns
    the path it looked for even if missing (`doctor` reports that as a failed check)."""
    if given:
        return given
    env = os.environ.get(CONFIG_ENV, "")
    if env:
        return env
    if Path(INSTALLED_CONFIG).is_file() or mode == "report":
        return INSTALLED_CONFIG
    if mode == "optional":
        return None
    raise NoConfig(
        f"no config file: pass --config FILE, set {CONFIG_ENV}=FILE, or install one at "
        f"{INSTALLED_CONFIG} (sudo scripts/install; docs/operations.md)"
    )


BAR_WIDTH = 30


def bad_input(message: str) -> int:
    """Report a bad argument or file on stderr; the exit code for bad input."""
    print(f"gateway: {message}", file=sys.stderr)
    return 2


def bar(filled: int, empty: str) -> str:
    """A progress bar of BAR_WIDTH cells, `filled` of them done."""
    return "#" * filled + empty * (BAR_WIDTH - filled)
