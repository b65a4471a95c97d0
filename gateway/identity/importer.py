"""Bulk import of shopper profiles: JSON lines or CSV, validated line by line.

A bad line is reported (line number, field, reason) and skipped; it never aborts the good
ones. Good lines are written in batches of `BATCH` per transaction (fast, and a crash loses
at most the batch being written, which a re-import repeats idempotently: rows are upserts).

JSON lines: one profile per line, as in the downlink/seed format:
  {"profile_id": "p-1", "consent": {"proximity_offers": true, "at": "...", "source": "app"},
   "language": "en", "opted_out": false,
   "identifiers": [{"kind": "ibeacon", "value": "uuid:major:minor"}, ...],
   "cart": [{"sku": "...", "title": "...", "price": 9.9, "added_at": "..."}]}
CSV: a header with profile_id, proximity_offers, consent_at, consent_source, language,
opted_out, and optional identifier columns ibeacon, eddystone_uid, nfc_uid, eid_key, irk.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.identity.rotating import EidKey
from gateway.store.db import transaction

BATCH = 5000
IDENTIFIER_KINDS = ("ibeacon", "eddystone_uid", "altbeacon", "nfc_uid", "eid_key", "irk")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class LineError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(slots=True)
class Rows:
    profiles: list[tuple[Any, ...]] = field(default_factory=list)
    identifiers: list[tuple[Any, ...]] = field(default_factory=list)
    carts: list[tuple[Any, ...]] = field(default_factory=list)
    replaced: list[tuple[str]] = field(default_factory=list)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def normalise_identifier(kind: str, value: Any) -> str:
    """The identifier as the pipeline spells it, or LineError."""
    if kind not in IDENTIFIER_KINDS:
        raise LineError(
            "identifiers.kind", f"unknown kind {kind!r}; one of {', '.join(IDENTIFIER_KINDS)}"
        )
    if not isinstance(value, str) or not value:
        raise LineError(f"identifiers.{kind}", "expected a non-empty string")
    v = value.strip().lower()
    if kind == "ibeacon":
        parts = v.split(":")
        ok = (
            len(parts) == 3
            and bool(_UUID.match(parts[0]))
            and parts[1].isdigit()
            and parts[2].isdigit()
        )
        if not ok or int(parts[1]) > 65535 or int(parts[2]) > 65535:
            raise LineError("identifiers.ibeacon", "expected uuid:major:minor (0-65535)")
        return f"{parts[0]}:{int(parts[1])}:{int(parts[2])}"
    if kind == "eddystone_uid":
        parts = v.split(":")
        if len(parts) != 2 or not _is_hex(parts[0], 20) or not _is_hex(parts[1], 12):
            raise LineError(
                "identifiers.eddystone_uid", "expected namespace:instance (20 and 12 hex digits)"
            )
        return v
    if kind == "altbeacon":
        if not _is_hex(v, 40):
            raise LineError("identifiers.altbeacon", "expected 40 hex digits")
        return v
    if kind == "nfc_uid":
        if len(v) not in (8, 14, 20) or not _is_hex(v, len(v)):
            raise LineError("identifiers.nfc_uid", "expected 4, 7 or 10 bytes of hex")
        return v
    if kind == "irk":
        if not _is_hex(v, 32):
            raise LineError("identifiers.irk", "expected 32 hex digits")
        return v
    try:
        EidKey.parse("-", v)
    except ValueError as exc:
        raise LineError("identifiers.eid_key", f"{exc} (format IKHEX:K[:OFFSET])") from None
    return v


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "1",
        "yes",
        "false",
        "0",
        "no",
        "",
    ):
        return value.strip().lower() in ("true", "1", "yes")
    raise LineError(name, "expected true or false")


def _json_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise LineError(name, "expected true or false")
    return value


def cart_rows(profile_id: str, items: Any, prefix: str = "cart") -> list[tuple[Any, ...]]:
    """Validated cart item rows (profile_id, sku, title, price, added_at)."""
    if not isinstance(items, list):
        raise LineError(prefix, "expected a list of items")
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("sku"), str) or not item["sku"]:
            raise LineError(f"{prefix}[{i}].sku", "expected a non-empty string")
        price = item.get("price", 0)
        if (
            isinstance(price, bool)
            or not isinstance(price, (int, float))
            or not math.isfinite(price)
            or price < 0
        ):
            raise LineError(f"{prefix}[{i}].price", "expected a non-negative number")
        title, added_at = str(item.get("title", "")), str(item.get("added_at", ""))
        rows.append((profile_id, item["sku"], title, float(price), added_at))
    return rows


def profile_rows(obj: Any, rows: Rows) -> None:
    """Validate one profile document completely, then append its rows. The one validator
    for profile documents: imports and downlink updates both use it."""
    if not isinstance(obj, dict):
        raise LineError("", "expected a JSON object")
    pid = obj.get("profile_id")
    if not isinstance(pid, str) or not pid.strip():
        raise LineError("profile_id", "expected a non-empty string")
    consent = obj.get("consent", {})
    if not isinstance(consent, dict):
        raise LineError("consent", "expected an object")
    offers = _json_bool(consent.get("proximity_offers", False), "consent.proximity_offers")
    opted_out = _json_bool(obj.get("opted_out", False), "opted_out")
    language = obj.get("language", "en")
    if not isinstance(language, str) or not 2 <= len(language) <= 8:
        raise LineError("language", "expected a language tag like 'en' or 'de-AT'")
    identifiers = []
    for ident in obj.get("identifiers", []):
        if not isinstance(ident, dict):
            raise LineError("identifiers", "expected objects {kind, value}")
        kind = str(ident.get("kind"))
        identifiers.append((kind, normalise_identifier(kind, ident.get("value")), pid))
    carts = cart_rows(pid, obj.get("cart", []))
    segments = _string_list(obj.get("segments", []), "segments")
    declined = _string_list(obj.get("declined_skus", []), "declined_skus")
    preferences = _preferences(obj.get("preferences", {}))
    rows.profiles.append(
        (
            pid,
            int(offers),
            consent.get("at"),
            consent.get("source"),
            language,
            int(opted_out),
            json.dumps(sorted(set(segments))),
            json.dumps(preferences, sort_keys=True),
            json.dumps(sorted(set(declined))),
        )
    )
    rows.identifiers.extend(identifiers)
    rows.carts.extend(carts)
    rows.replaced.append((pid,))


def _string_list(value: Any, field: str, limit: int = 200) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= 64 for v in value
    ):
        raise LineError(field, "expected a list of short non-empty strings")
    if len(value) > limit:
        raise LineError(field, f"at most {limit} entries")
    return value


PREFERENCE_KEYS = ("max_offers_per_day", "muted_campaigns")


def _preferences(value: Any) -> dict[str, Any]:
    """The shopper's own settings; unknown keys are refused, not silently dropped."""
    if not isinstance(value, dict):
        raise LineError("preferences", "expected an object")
    unknown = sorted(set(value) - set(PREFERENCE_KEYS))
    if unknown:
        raise LineError(
            f"preferences.{unknown[0]}", f"unknown preference; known: {', '.join(PREFERENCE_KEYS)}"
        )
    out: dict[str, Any] = {}
    cap = value.get("max_offers_per_day")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= 20:
            raise LineError("preferences.max_offers_per_day", "expected an integer 0-20")
        out["max_offers_per_day"] = cap
    if "muted_campaigns" in value:
        out["muted_campaigns"] = sorted(
            set(_string_list(value["muted_campaigns"], "preferences.muted_campaigns"))
        )
    return out


CART_INSERT = (
    "INSERT OR REPLACE INTO cart_items (profile_id, sku, title, price, added_at) VALUES (?,?,?,?,?)"
)


def row_writes(rows: Rows) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The statements that store validated profiles (their old identifiers and cart go)."""
    return [
        ("DELETE FROM identifiers WHERE profile_id = ?", rows.replaced),
        ("DELETE FROM cart_items WHERE profile_id = ?", rows.replaced),
        (
            "INSERT OR REPLACE INTO profiles (profile_id, consent_offers, consent_at, "
            "consent_source, language, opted_out, segments, preferences, declined_skus) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            rows.profiles,
        ),
        (
            "INSERT OR REPLACE INTO identifiers (kind, value, profile_id) VALUES (?,?,?)",
            rows.identifiers,
        ),
        (CART_INSERT, rows.carts),
    ]


def _csv_profile(row: dict[str, str]) -> dict[str, Any]:
    cap = (row.get("max_offers_per_day") or "").strip()
    if cap and not cap.isdigit():
        raise LineError("max_offers_per_day", "expected a whole number")
    obj: dict[str, Any] = {
        "profile_id": row.get("profile_id", ""),
        "consent": {
            "proximity_offers": _bool(row.get("proximity_offers", "false"), "proximity_offers"),
            "at": row.get("consent_at") or None,
            "source": row.get("consent_source") or None,
        },
        "language": row.get("language") or "en",
        "opted_out": _bool(row.get("opted_out", "false"), "opted_out"),
        # lists in CSV cells: separated by ';'
        "segments": _cells(row.get("segments")),
        "declined_skus": _cells(row.get("declined_skus")),
        "identifiers": [
            {"kind": kind, "value": row[kind]} for kind in IDENTIFIER_KINDS if row.get(kind)
        ],
    }
    if cap:
        obj["preferences"] = {"max_offers_per_day": int(cap)}
    return obj


def _cells(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(";") if part.strip()]


def read_documents(path: Path) -> Iterator[tuple[int, Any | LineError]]:
    """(line number, profile document or LineError) for every record of the file."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "profile_id" not in reader.fieldnames:
                yield 1, LineError("header", "CSV needs a header with profile_id")
                return
            for row in reader:
                if None in row:
                    yield reader.line_num, LineError("", "more fields than the header")
                    continue
                try:
                    yield reader.line_num, _csv_profile(row)
                except LineError as exc:
                    yield reader.line_num, exc
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, LineError("", f"not JSON ({exc.msg})")


@dataclass(slots=True)
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # line, field, reason


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def import_profiles(
    conn: sqlite3.Connection,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import every good line; `progress(lines done, lines total)` after each batch."""
    report = ImportReport()
    total = max(1, count_lines(path))
    rows = Rows()

    def flush() -> None:
        with transaction(conn):
            for sql, values in row_writes(rows):
                conn.executemany(sql, values)
        report.imported += len(rows.profiles)

    number = 0
    for number, doc in read_documents(path):
        if isinstance(doc, LineError):
            report.errors.append((number, doc.field, doc.reason))
            continue
        try:
            profile_rows(doc, rows)
        except LineError as exc:
            report.errors.append((number, exc.field, exc.reason))
        if len(rows.profiles) >= BATCH:
            flush()
            rows = Rows()
            if progress is not None:
                progress(min(number, total), total)
    if rows.profiles:
        flush()
    if progress is not None:
        progress(total, total)
    return report


def export_profiles(conn: sqlite3.Connection, out: Any) -> int:
    """Write every profile as one JSON line in the import format (round-trips)."""
    identifiers: dict[str, list[dict[str, str]]] = {}
    for kind, value, pid in conn.execute(
        "SELECT kind, value, profile_id FROM identifiers ORDER BY kind, value"
    ):
        identifiers.setdefault(pid, []).append({"kind": kind, "value": value})
    carts: dict[str, list[dict[str, Any]]] = {}
    for pid, sku, title, price, added in conn.execute(
        "SELECT profile_id, sku, title, price, added_at FROM cart_items ORDER BY added_at, sku"
    ):
        carts.setdefault(pid, []).append(
            {"sku": sku, "title": title, "price": price, "added_at": added}
        )
    count = 0
    for pid, offers, at, source, language, opted_out, segs, prefs, declined in conn.execute(
        "SELECT profile_id, consent_offers, consent_at, consent_source, language, opted_out, "
        "segments, preferences, declined_skus FROM profiles ORDER BY profile_id"
    ):
        doc = {
            "profile_id": pid,
            "consent": {"proximity_offers": bool(offers), "at": at, "source": source},
            "language": language or "en",
            "opted_out": bool(opted_out),
            "segments": json.loads(segs or "[]"),
            "preferences": json.loads(prefs or "{}"),
            "declined_skus": json.loads(declined or "[]"),
            "identifiers": identifiers.get(pid, []),
            "cart": carts.get(pid, []),
        }
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        count += 1
    return count
