"""The `gateway` command line.

Exit codes: 0 success, 1 a runtime failure, 2 bad input (config, map, arguments) with one
line on stderr naming the file, key and fix.

Each command group lives in its own module and imports what it works with inside its
handlers: building the parser (`gateway --help`, every start-up) must stay cheap on a
Raspberry Pi, so nothing here or in the group modules pulls in numpy, shapely or aiohttp.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import (
    calibrate,
    contract,
    doctor,
    downlink,
    fences,
    nfc,
    offers,
    profiles,
    report,
    run,
    status,
    stock,
    survey,
    tools,
)
from gateway.cli._common import resolve_config

# The errors a handler may raise for bad input, by module: looked up only once loaded (an
# exception can only have been raised by then), since importing them up front would load
# the config schema and shapely on every start-up.
_BAD_INPUT_ERRORS = (
    ("gateway.config.schema", "ConfigError"),
    ("gateway.site.storemap", "MapError"),
    ("gateway.cli._common", "NoConfig"),
    ("gateway.store.lock", "StateLocked"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="In-store proximity gateway (BLE/NFC presence and offers)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # In the order `gateway --help` lists them.
    for add in (
        run.add_demo,
        calibrate.add_calibrate,
        tools.add_console_password,
        doctor.add_doctor,
        status.add_status,
        run.add_run,
        run.add_replay,
        run.add_sim,
        tools.add_eid,
        tools.add_rpa,
        tools.add_config_doc,
        tools.add_config_template,
        contract.add_contract,
        tools.add_locate,
        survey.add_survey,
        tools.add_decode,
        nfc.add_nfc,
        fences.add_fences,
        profiles.add_profiles,
        profiles.add_stock,
        stock.add_holds,
        stock.add_tasks,
        offers.add_offers,
        report.add_report,
        downlink.add_downlink,
        downlink.add_secret,
    ):
        add(sub)
    _describe(sub)
    return parser


def _describe(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`gateway X --help` opens with the line `gateway --help` lists for X, when X has no
    description of its own (and so on for sub-commands). argparse keeps those lines only in
    its private `_choices_actions`."""
    for action in sub._choices_actions:
        command = sub.choices.get(action.dest)
        if command is None:
            continue
        if not command.description and action.help:
            command.description = action.help[0].upper() + action.help[1:] + "."
        for inner in command._actions:
            if isinstance(inner, argparse._SubParsersAction):
                _describe(inner)


def _is_bad_input(exc: Exception) -> bool:
    for module_name, class_name in _BAD_INPUT_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "config"):
            args.config = resolve_config(args.config, getattr(args, "config_mode", "required"))
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`gateway sim | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed
    except Exception as exc:
        if not _is_bad_input(exc):
            raise
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
