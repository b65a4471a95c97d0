"""`gateway contract`: print the MQTT topic contract (AsyncAPI 3) this version speaks.

The contract ships with the package: from a source checkout it is `docs/asyncapi.yaml`, from
a wheel `<prefix>/share/proximity-gateway/docs/asyncapi.yaml` (found like the store maps,
`gateway.resources`). `--dashboard` and `--alerts` print the Grafana dashboard and the
Prometheus alert rules that ship beside it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.cli._common import Subparsers

FILES = {
    "contract": "docs/asyncapi.yaml",
    "dashboard": "docs/grafana-dashboard.json",
    "alerts": "docs/prometheus-alerts.yml",
}


def _cmd_contract(args: argparse.Namespace) -> int:
    from gateway.resources import share_dirs, shared_path

    which = "dashboard" if args.dashboard else "alerts" if args.alerts else "contract"
    path = shared_path(FILES[which])
    if path is None:
        looked = ", ".join(str(d / FILES[which]) for d in share_dirs())
        print(
            f"gateway contract: {FILES[which]} is not installed (looked in {looked})",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def add_contract(sub: Subparsers) -> None:
    p = sub.add_parser(
        "contract", help="print the MQTT topic contract (AsyncAPI 3), or the dashboard/alerts"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--dashboard", action="store_true", help="the Grafana dashboard (JSON)")
    group.add_argument("--alerts", action="store_true", help="the Prometheus alert rules (YAML)")
    p.set_defaults(func=_cmd_contract)
