"""`gateway doctor`: check this box before (or instead of) calling for help."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from gateway.cli._common import CONFIG
from gateway.clock import SystemClock

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers


def _cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.ops.checks import FAIL
    from gateway.ops.doctor import run_checks

    checks = run_checks(args.config, SystemClock(), timeout_s=args.timeout)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=1))
    else:
        for check in checks:
            print(check.line())
    failed = [c.name for c in checks if c.status == FAIL]
    if not args.json:
        print(f"\n{len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_doctor(sub: Subparsers) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[CONFIG],
        help="check this box: config, storage, radios, broker, clock",
    )
    p.add_argument("--json", action="store_true", help="machine-readable results")
    p.add_argument("--timeout", type=float, default=5.0, help="per network check, seconds")
    # A missing config is a failed check in the report (--json included), not an abort.
    p.set_defaults(func=_cmd_doctor, config_mode="report")
