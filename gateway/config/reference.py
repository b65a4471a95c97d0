"""The configuration for people: a commented template for a fresh install (`gateway
config-template`, written once by scripts/install). The reference table in docs/config.md comes
from `gateway.config.schema.describe`."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from gateway.config.sections import Config


def _toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        values = [_toml_value(v) for v in value]
        return "[" + ", ".join(v for v in values if v is not None) + "]"
    if isinstance(value, dict):
        pairs = [f"{k} = {_toml_value(v)}" for k, v in value.items() if _toml_value(v)]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    if dataclasses.is_dataclass(value):
        return None  # a table: written as its own section
    return None


def config_template(state_dir: str, secrets: dict[str, str]) -> str:
    """A commented config for a fresh install: every key present, commented out at its
    default, with its documentation above it. Only the state directory and the given
    secrets (`"gateway.pseudonym_key"`, `"nfc.loyalty_key"`, …) are set."""
    import textwrap

    active = {"gateway.state_dir": state_dir, **secrets}
    out = [
        "# proximity-gateway configuration (written once by scripts/install; never overwritten).",
        "# Every key is optional; commented lines show the defaults. Reference: docs/config.md.",
        "# Check a change with `gateway doctor`, apply it with",
        "# `systemctl reload proximity-gateway` (SIGHUP).",
        "",
    ]

    def section(cls: type[Any], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        tables: list[tuple[str, type[Any], str]] = []
        out.append(f"[{prefix}]")
        instance = cls()
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            key = f"{prefix}.{f.name}"
            tp = hints[f.name]
            text = f.metadata.get("doc", "")
            if dataclasses.is_dataclass(tp):
                tables.append((key, typing.cast(type[Any], tp), text))
                continue
            for line in textwrap.wrap(text, 88):
                out.append(f"# {line}")
            if key in active:
                out.append(f"{f.name} = {_toml_value(active[key])}")
            else:
                value = _toml_value(getattr(instance, f.name))
                out.append(f"# {f.name} = {value}" if value is not None else f"# {f.name} =")
        out.append("")
        for key, tp, text in tables:
            for line in textwrap.wrap(text, 88):
                out.append(f"# {line}")
            section(tp, key)

    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        for line in textwrap.wrap(f.metadata.get("doc", ""), 88):
            out.append(f"# {line}")
        section(typing.cast(type[Any], hints[f.name]), f.name)
    return "\n".join(out) + "\n"
