"""Shopper and stock records: the one validator for profile, cart and stock documents.

`profile_rows`, `cart_rows` and `stock_row` check one document completely and turn it into
table rows; imports (`identity/bulk.py`), the seed loader and downlink updates all use them, so
a document means the same wherever it comes from. Validation is strict: an unknown field (a
typo such as "consnet") is an error naming it, never silently ignored. The formats are
described for users in docs/data-formats.md. `export_profiles` writes the import format.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from gateway.identity.rotating import EidKey

IDENTIFIER_KINDS = ("ibeacon", "eddystone_uid", "altbeacon", "nfc_uid", "eid_key", "irk")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class LineError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason

    @property
    def each(self) -> list[LineError]:
        """Every problem of the record (one here; `LineErrors` has several)."""
        return [self]


class LineErrors(LineError):
    """Several fields of one record are wrong: a row of a spreadsheet is fixed once, so the
    report names every bad cell, not only the first."""

    def __init__(self, problems: list[LineError]) -> None:
        super().__init__(problems[0].field, "; ".join(str(p) for p in problems))
        self.problems = problems

    @property
    def each(self) -> list[LineError]:
        return list(self.problems)


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


def parse_bool(value: Any, name: str) -> bool:
    """A yes/no cell of a CSV file: true/false, yes/no, 1/0 (any case); empty is false."""
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
    raise LineError(name, f"{value!r}: expected true/false, yes/no or 1/0")


def _json_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise LineError(name, "expected true or false")
    return value


# The fields each document may have; anything else is refused with its name.
PROFILE_FIELDS = (
    "profile_id",
    "consent",
    "language",
    "opted_out",
    "identifiers",
    "cart",
    "segments",
    "declined_skus",
    "preferences",
)
CONSENT_FIELDS = ("proximity_offers", "at", "source")
IDENTIFIER_FIELDS = ("kind", "value")
CART_FIELDS = ("sku", "title", "price", "added_at")
STOCK_FIELDS = ("sku", "title", "quantity", "zone_id")


def unknown_field(name: str, known: tuple[str, ...], prefix: str = "") -> LineError:
    """The error for a field nobody reads: its name, the closest known one, the known ones."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return LineError(f"{prefix}{name}", f"unknown field; {hint}known: {', '.join(known)}")


def _only(obj: dict[str, Any], known: tuple[str, ...], prefix: str = "") -> None:
    for name in obj:
        if name not in known:
            raise unknown_field(str(name), known, prefix)


def _opt_text(obj: dict[str, Any], key: str, where: str, limit: int = 512) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise LineError(where, f"expected text (at most {limit} characters)")
    return value


def cart_rows(profile_id: str, items: Any, prefix: str = "cart") -> list[tuple[Any, ...]]:
    """Validated cart item rows (profile_id, sku, title, price, added_at)."""
    if not isinstance(items, list):
        raise LineError(prefix, "expected a list of items")
    rows: list[tuple[Any, ...]] = []
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            raise LineError(where, "expected an object {sku, title, price, added_at}")
        _only(item, CART_FIELDS, f"{where}.")
        if not isinstance(item.get("sku"), str) or not item["sku"].strip():
            raise LineError(f"{where}.sku", "expected a non-empty string")
        price = item.get("price", 0)
        if (
            isinstance(price, bool)
            or not isinstance(price, (int, float))
            or not math.isfinite(price)
            or price < 0
        ):
            raise LineError(f"{where}.price", "expected a non-negative number")
        title = _opt_text(item, "title", f"{where}.title") or ""
        added_at = _opt_text(item, "added_at", f"{where}.added_at", 64) or ""
        sku = item["sku"].strip()
        if any(row[1] == sku for row in rows):
            raise LineError(f"{where}.sku", f"{sku!r} is in this cart twice")
        rows.append((profile_id, sku, title, float(price), added_at))
    return rows


MAX_QUANTITY = 1_000_000_000


def stock_row(obj: Any) -> tuple[str, str, int, str]:
    """One validated stock item: (sku, title, quantity, zone_id)."""
    if not isinstance(obj, dict):
        raise LineError("", "expected an object {sku, title, quantity, zone_id}")
    problems: list[LineError] = []
    try:
        _only(obj, STOCK_FIELDS)
    except LineError as exc:
        problems.append(exc)
    sku = obj.get("sku")
    if not isinstance(sku, str) or not sku.strip():
        problems.append(LineError("sku", "expected a non-empty string"))
    quantity = obj.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        problems.append(LineError("quantity", "expected a whole number, 0 or more"))
    elif quantity > MAX_QUANTITY:  # SQLite's integers end at 2**63; no shelf holds this
        problems.append(LineError("quantity", f"{quantity} is more than {MAX_QUANTITY:,}"))
    zone = title = None
    try:
        zone = _opt_text(obj, "zone_id", "zone_id", 128)
    except LineError as exc:
        problems.append(exc)
    try:
        title = _opt_text(obj, "title", "title")
    except LineError as exc:
        problems.append(exc)
    if problems:
        raise problems[0] if len(problems) == 1 else LineErrors(problems)
    assert isinstance(sku, str) and isinstance(quantity, int)
    return sku.strip(), title or "", quantity, (zone or "").strip()


def profile_rows(obj: Any, rows: Rows) -> None:
    """Validate one profile document completely, then append its rows. The one validator
    for profile documents: imports and downlink updates both use it. Unknown fields, at any
    depth, are refused with their name."""
    if not isinstance(obj, dict):
        raise LineError("", "expected a JSON object")
    _only(obj, PROFILE_FIELDS)
    pid = obj.get("profile_id")
    if not isinstance(pid, str) or not pid.strip():
        raise LineError("profile_id", "expected a non-empty string")
    consent = obj.get("consent", {})
    if not isinstance(consent, dict):
        raise LineError("consent", "expected an object {proximity_offers, at, source}")
    _only(consent, CONSENT_FIELDS, "consent.")
    offers = _json_bool(consent.get("proximity_offers", False), "consent.proximity_offers")
    consent_at = _opt_text(consent, "at", "consent.at", 64)
    consent_source = _opt_text(consent, "source", "consent.source", 128)
    opted_out = _json_bool(obj.get("opted_out", False), "opted_out")
    language = obj.get("language", "en")
    if not isinstance(language, str) or not 2 <= len(language) <= 8:
        raise LineError("language", "expected a language tag like 'en' or 'de-AT'")
    listed = obj.get("identifiers", [])
    if not isinstance(listed, list):
        raise LineError("identifiers", "expected a list of objects {kind, value}")
    identifiers = []
    for i, ident in enumerate(listed):
        if not isinstance(ident, dict):
            raise LineError("identifiers", "expected objects {kind, value}")
        _only(ident, IDENTIFIER_FIELDS, f"identifiers[{i}].")
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
            consent_at,
            consent_source,
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


def row_writes(
    rows: Rows, *, move_identifiers: bool = False
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The statements that store validated profiles (their old identifiers and cart go).
    An identifier stored for another profile is a conflict (sqlite3.IntegrityError, and the
    transaction rolls back) unless `move_identifiers`: a bulk import sets it only after
    checking that every such profile is re-imported in the same file without it."""
    insert = "INSERT OR REPLACE" if move_identifiers else "INSERT"
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
            f"{insert} INTO identifiers (kind, value, profile_id) VALUES (?,?,?)",
            rows.identifiers,
        ),
        (CART_INSERT, rows.carts),
    ]


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
