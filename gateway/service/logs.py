"""Structured logs that read well in `journalctl`: one line per event.

`kv`:   level=warning logger=gateway.sync.uplink msg="mqtt broker:8883: refused; reconnecting"
`json`: {"level": "warning", "logger": "gateway.sync.uplink", "msg": "..."}

Under systemd (`$JOURNAL_STREAM` set) no timestamp is written: the journal adds its own, and
the syslog-style `<N>` prefix gives each line its priority, so `journalctl -p warning` works.
Extra fields passed as `log.info("...", extra={"fields": {...}})` become keys of their own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def _kv_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\\') or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


class StructuredFormatter(logging.Formatter):
    def __init__(self, style: str, journal: bool) -> None:
        super().__init__()
        self.style_name = style
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {}
        if not self.journal:
            # For machines (log files, collectors): UTC, RFC 3339. The moment is the one the
            # logging module stamped on the record.
            fields["time"] = (
                datetime.fromtimestamp(record.created, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
            )
        fields["level"] = record.levelname.lower()
        fields["logger"] = record.name
        fields["msg"] = record.getMessage()
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            fields.update(extra)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.style_name == "json":
            line = json.dumps(fields, ensure_ascii=False, default=str)
        else:
            line = " ".join(f"{k}={_kv_value(v)}" for k, v in fields.items())
        if self.journal:
            line = f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


def configure(style: str = "kv", level: str = "info") -> None:
    """Route the package's logs to stderr in the chosen style (idempotent)."""
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(style, journal))
    root = logging.getLogger("gateway")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
