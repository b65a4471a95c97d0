"""`gateway status`: ask the running daemon, through its control endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from gateway.cli._common import CONFIG

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from gateway.cli._common import Subparsers


def _cmd_status(args: argparse.Namespace) -> int:
    """Ask the running daemon (its control endpoint) what it is doing."""
    from zoneinfo import ZoneInfo

    import httpx

    from gateway.config.schema import ConfigError
    from gateway.config.sections import load_config
    from gateway.config.service import host_port
    from gateway.store.token import read_token

    config = load_config(args.config)
    if not config.service.control_listen:
        raise ConfigError(args.config, "service.control_listen", "is off; set it to ask the daemon")
    host, port = host_port(config.service.control_listen)
    host = f"[{host}]" if ":" in host else host
    token = read_token(config.state_path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(f"http://{host}:{port}/status", timeout=5.0, headers=headers)
        reply.raise_for_status()
    except httpx.HTTPError as exc:
        print(
            f"gateway status: no daemon answering on {config.service.control_listen} ({exc}); "
            "is the service running? (systemctl status proximity-gateway)",
            file=sys.stderr,
        )
        return 1
    data = reply.json()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(_status_text(data, ZoneInfo(config.gateway.timezone)))
    return 0


def _status_text(data: dict[str, Any], tz: ZoneInfo) -> str:
    """The daemon's status for a person: store-local times, durations in words."""
    from gateway.humantime import duration, local_datetime

    ready = "ready" if data["ready"] else "STARTING"
    lines = [
        f"{data['gateway']} @ {data['store']}  v{data['version']}  {ready}  "
        f"up {duration(data['uptime_s'])} (since {local_datetime(data['started_at'], tz)})",
    ]
    src = data["sources"]
    rates = ", ".join(f"{r} {v:.1f}/s" for r, v in src["rates_per_s"].items()) or "no adverts yet"
    lines.append(f"  sources   {rates}")
    for name, state in {**src["ble_adapters"], **src["nfc_readers"]}.items():
        lines.append(f"            {name}: {state}")
    for receiver, o in src.get("receiver_offsets", {}).items():
        note = "applied" if o["applied"] else f"learning ({o['samples']} readings)"
        bound = "; AT THE BOUND: check this receiver" if o["at_bound"] else ""
        lines.append(
            f"  offset    {receiver} {o['offset_db']:+.1f} dB from fixed beacons, {note}{bound}"
        )
    zones = ", ".join(f"{z} {n}" for z, n in data["zones"].items()) or "nobody in a zone"
    lines.append(f"  devices   {data['tracked_devices']} tracked; {zones}")
    for offer in data["last_offers"][:5]:
        what = "ISSUED" if offer["issued"] else f"suppressed ({offer['reason']})"
        when = local_datetime(offer["t"], tz)
        lines.append(f"  offer     {when} {offer['profile'] or '-'} {offer['trigger']}: {what}")
    out = data["outbox"]
    depth = sum(out["depth"].values())
    oldest = f", oldest waiting {duration(out['oldest_age_s'])}" if depth else ""
    lines.append(f"  outbox    {depth} queued{oldest}")
    mqtt = data["mqtt"]
    if mqtt["enabled"]:
        state = "connected" if mqtt["connected"] else f"DISCONNECTED {mqtt['last_error']}"
        lines.append(f"  mqtt      {state}; {mqtt['delivered']} delivered")
    else:
        lines.append("  mqtt      off")
    lines.append(f"  loop lag  {data['loop_lag_ms']:.1f} ms")
    return "\n".join(lines)


def add_status(sub: Subparsers) -> None:
    p = sub.add_parser(
        "status",
        parents=[CONFIG],
        help="what the running daemon is doing (its control endpoint)",
    )
    p.add_argument("--json", action="store_true", help="the raw status document")
    p.set_defaults(func=_cmd_status)
