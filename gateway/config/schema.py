"""The configuration schema engine: dataclasses whose fields carry their documentation.

A section is a frozen dataclass; each field is declared with `doc()`, which attaches the text
that `docs/config.md` and the config template show. `build_section` walks a TOML table against
such a class and rejects unknown keys, wrong types and out-of-range values (the class's
`validate()`) with one line naming the file, the key and the fix. The engine knows no section:
the stages declare their own settings with it, and `gateway.config.sections` assembles them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, TypeVar


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its documentation attached."""
    return field(metadata={"doc": text}, **kwargs)


T = TypeVar("T")

# Bounds every value meets whatever its key, before the section's own `validate()`: NaN and
# infinities pass every comparison-based range check silently (`cooldown_s = nan` turned the
# cooldown off), and no setting of a shop gateway needs numbers or strings beyond these.
MAX_NUMBER = 1e9
MAX_STRING = 4096


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        item = typing.get_args(tp)[0]
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a list of {plural.get(item, 'tables')}"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, file: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, args[0], file, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table [{key}], got {value!r}")
        return build_section(typing.cast(type[Any], tp), value, file, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table [{key}], got {value!r}")
        item_type = typing.get_args(tp)[1]
        return {k: _convert(v, item_type, file, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        return [_convert(v, item_type, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(file, key, f"expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(file, key, f"expected a finite number, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        raise ConfigError(file, key, f"{value!r} is out of any sensible range (|x| ≤ 1e9)")
    if isinstance(value, str):
        if "\x00" in value:
            raise ConfigError(file, key, "contains a NUL character; remove it")
        if len(value) > MAX_STRING:
            raise ConfigError(file, key, f"{len(value)} characters; at most {MAX_STRING}")
    return value


def build_section(cls: type[T], data: dict[str, Any], file: str, prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, key, f"unknown key; known keys here: {known}")
        kwargs[name] = _convert(value, hints[name], file, key)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(file, key, f"missing; set it to {_type_name(hints[name])}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for name, problem in validate().items():
            raise ConfigError(file, f"{prefix}.{name}" if prefix else name, problem)
    return obj


def describe(cls: type[Any], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for every key, depth first: the config reference."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((f"[{key}]", "table", "", f.metadata.get("doc", "")))
            rows.extend(describe(typing.cast(type[Any], tp), key))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
        if typing.get_origin(tp) is dict:
            item = typing.get_args(tp)[1]
            if dataclasses.is_dataclass(item):
                rows.extend(describe(typing.cast(type[Any], item), f"{key}.<id>"))
    return rows


def topic_level_problem(text: str) -> str:
    """'' if `text` can be one MQTT topic level of a topic we publish to, else what is wrong:
    wildcards would make the broker refuse every publish (and the will topic) silently."""
    if not text:
        return "empty"
    for char, name in (("+", "'+' (an MQTT wildcard)"), ("#", "'#' (an MQTT wildcard)")):
        if char in text:
            return f"contains {name}"
    if "/" in text:
        return "contains '/' (a topic level separator)"
    if any(ord(c) < 32 for c in text):
        return "contains a control character"
    return ""
