"""What a re-read config (SIGHUP) changes live, and what waits for a restart. Pure.

Identity, state directory, broker, sources, outbox bounds and the service section are
bound to open connections and running tasks: they keep their running value until the
next restart, and the operator is told which changed.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from gateway.config.sections import Config

RESTART_SECTIONS = ("mqtt", "sources", "outbox", "service")


class ReloadPlan(NamedTuple):
    applied: Config  # the new config with restart-only values kept at their running ones
    needs_restart: list[str]  # sections whose change waits for a restart


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    needs_restart = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
    identity = (old.gateway.id, old.gateway.store, old.gateway.state_dir)
    if identity != (new.gateway.id, new.gateway.store, new.gateway.state_dir):
        needs_restart.append("gateway")
    applied = dataclasses.replace(
        new,
        gateway=dataclasses.replace(
            new.gateway,
            id=old.gateway.id,
            store=old.gateway.store,
            state_dir=old.gateway.state_dir,
        ),
        mqtt=old.mqtt,
        sources=old.sources,
        outbox=old.outbox,
        service=old.service,
        base_dir=old.base_dir,
    )
    return ReloadPlan(applied, needs_restart)
