"""Downlink documents: versioned stock, profiles, carts, campaigns and config from the
backend, validated completely and applied in one transaction (or not at all).

A document reaches `apply_document` verified and bound (`gateway.sync.signed`):
  {"family": "stock", "kind": "snapshot" | "delta", "version": 7, "store": "s1",
   "gateway": "*", "issued_at": 1796200000, "expires_at": 1796804800, "data": {...},
   "sig": "…"}
  * a snapshot replaces the family and is accepted when its version is newer;
  * a delta must be exactly the next version: older → `stale_version`, further ahead →
    `version_gap` and a resync request ({family, have}) on the resync topic; a delta never
    deletes what it does not name;
  * the same version again is a no-op (at-least-once delivery, retained messages);
  * unknown members are refused, never ignored.
The per-family semantics are in docs/downlink.md.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from gateway.config.schema import ConfigError, build_section
from gateway.identity.importer import (
    CART_INSERT,
    MAX_QUANTITY,
    LineError,
    Rows,
    cart_rows,
    profile_rows,
    row_writes,
)
from gateway.offers.attribution import PICKUP_INSERT, attribute_pending, pickup_rows
from gateway.offers.rules import PickupDiscountSection
from gateway.store.db import transaction

FAMILIES = ("stock", "profiles", "carts", "campaigns", "config", "pickups")


# --- validation of document bodies (complete before anything is applied) -----------------


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{key}: expected a non-empty string")
    return value


def _num(obj: dict[str, Any], key: str, where: str, integer: bool = False) -> float:
    value = obj.get(key)
    kind = "a non-negative integer" if integer else "a non-negative number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}.{key}: expected {kind}")
    if (integer and not isinstance(value, int)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}.{key}: expected {kind}")
    return float(value)


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"data.{key}: expected a list")
    return value


STOCK_ITEM_FIELDS = frozenset({"sku", "title", "quantity", "zone_id"})
DATA_FIELDS = {
    "stock": frozenset({"items", "remove"}),
    "profiles": frozenset({"profiles", "remove"}),
    "carts": frozenset({"carts"}),
    "campaigns": frozenset({"pickup_discount", "campaigns"}),
    "pickups": frozenset({"pickups"}),
}


def _known_fields(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(
            f"{where}.{unknown[0]}: unknown field (expected {', '.join(sorted(allowed))})"
        )


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string")
    return value


def _stock_rows(
    items: list[Any], zones: frozenset[str] | None = None
) -> list[tuple[str, str, int, str]]:
    rows = []
    for i, item in enumerate(items):
        where = f"data.items[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        _known_fields(item, STOCK_ITEM_FIELDS, where)
        quantity = int(_num(item, "quantity", where, integer=True))
        if quantity > MAX_QUANTITY:
            raise ValueError(f"{where}.quantity: at most {MAX_QUANTITY}")
        zone = _optional_str(item, "zone_id", where)
        if zones is not None and zone and zone not in zones:
            known = ", ".join(sorted(zones)[:12]) + (" …" if len(zones) > 12 else "")
            raise ValueError(f"{where}.zone_id: {zone!r} is not a zone of the map (zones: {known})")
        rows.append(
            (
                _str(item, "sku", where),
                _optional_str(item, "title", where),
                quantity,
                zone,
            )
        )
    return rows


def _profiles(items: list[Any]) -> Rows:
    """Profile documents, validated by the importer's rules (the one validator)."""
    rows = Rows()
    for i, p in enumerate(items):
        try:
            profile_rows(p, rows)
        except LineError as exc:
            where = f"data.profiles[{i}]" + (f".{exc.field}" if exc.field else "")
            raise ValueError(f"{where}: {exc.reason}") from None
    return rows


def _ids(data: dict[str, Any], key: str) -> list[str]:
    values = _list(data, key)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"data.{key}: expected a list of strings")
    return values


def apply_document(
    conn: sqlite3.Connection, document: dict[str, Any], zones: frozenset[str] | None = None
) -> str:
    """Validate and apply one verified document. Returns "applied" or "duplicate", or raises
    `DocumentRejected` with a reason (nothing is changed then). With the map's `zones`, a
    stock item must lie in one of them (as `gateway stock import` checks)."""
    family, kind, version = _head(document)
    current = stored_version(conn, family)
    if version == current:
        return "duplicate"
    if version < current:
        raise DocumentRejected("stale_version", f"version {version} is older than {current}")
    if kind == "delta" and version != current + 1:
        raise DocumentRejected("version_gap", f"delta {version} does not follow {current}")
    writes = _writes(document, zones)
    try:
        with transaction(conn):
            for sql, rows in writes:
                if rows is None:
                    conn.execute(sql)
                else:
                    conn.executemany(sql, rows)
            if family == "pickups":
                attribute_pending(conn)  # each new pickup fact to the decision before it
            conn.execute(
                "INSERT INTO doc_versions (family, version) VALUES (?, ?) "
                "ON CONFLICT(family) DO UPDATE SET version = excluded.version",
                (family, version),
            )
    except sqlite3.IntegrityError:
        # An identifier of a profile the document does not name: moving it silently would
        # hand one shopper's phone or card to another. Nothing was changed (rolled back).
        raise DocumentRejected(
            "identifier_conflict",
            f"an identifier in this document belongs to another profile ({_owners(conn, writes)}); "
            "name that profile in the same document without it",
        ) from None
    return "applied"


def _owners(conn: sqlite3.Connection, writes: list[Write]) -> str:
    """The stored owners of the identifiers a document would insert (for the message)."""
    found: list[str] = []
    for sql, rows in writes:
        if "INTO identifiers" in sql and rows:
            for kind, value, pid in rows:
                row = conn.execute(
                    "SELECT profile_id FROM identifiers WHERE kind = ? AND value = ?", (kind, value)
                ).fetchone()
                if row is not None and row[0] != pid:
                    found.append(f"{kind} of {row[0]!r}, given to {pid!r}")
    return "; ".join(found[:3]) or "unknown"


def _head(document: dict[str, Any]) -> tuple[str, str, int]:
    family, kind, version = document.get("family"), document.get("kind"), document.get("version")
    if family not in FAMILIES:
        raise DocumentRejected("unknown_family", f"family {family!r}; one of {', '.join(FAMILIES)}")
    if kind not in ("snapshot", "delta"):
        raise DocumentRejected("invalid_payload", "kind must be 'snapshot' or 'delta'")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DocumentRejected("invalid_payload", "version must be a positive integer")
    return str(family), str(kind), version


def _writes(document: dict[str, Any], zones: frozenset[str] | None = None) -> list[Write]:
    family, kind, _version = _head(document)
    data = document.get("data")
    if not isinstance(data, dict):
        raise DocumentRejected("invalid_payload", "data must be an object")
    try:
        return _plan(family, kind, data, zones)
    except ValueError as exc:
        raise DocumentRejected("invalid_payload", str(exc)) from None


def validate_document(document: dict[str, Any]) -> None:
    """Everything `apply_document` checks that needs no state: raises DocumentRejected
    (what `gateway downlink sign` runs before it signs)."""
    _writes(document)


Write = tuple[str, list[tuple[Any, ...]] | None]


def _plan(
    family: str, kind: str, data: dict[str, Any], zones: frozenset[str] | None = None
) -> list[Write]:
    """Every statement the document needs, built (and so validated) before any runs."""
    writes: list[Write] = []
    if family in DATA_FIELDS:
        _known_fields(data, DATA_FIELDS[family], "data")
    if family == "stock":
        rows = _stock_rows(_list(data, "items"), zones)
        if kind == "snapshot":
            writes.append(("DELETE FROM stock", None))
        else:
            writes.append(("DELETE FROM stock WHERE sku = ?", [(s,) for s in _ids(data, "remove")]))
        writes.append(
            ("INSERT OR REPLACE INTO stock (sku, title, quantity, zone_id) VALUES (?,?,?,?)", rows)
        )
    elif family == "profiles":
        profiles = _profiles(_list(data, "profiles"))
        removed = [(p,) for p in _ids(data, "remove")] if kind == "delta" else []
        if kind == "snapshot":
            writes += [
                ("DELETE FROM profiles", None),
                ("DELETE FROM identifiers", None),
                ("DELETE FROM cart_items", None),
            ]
        writes += [
            ("DELETE FROM profiles WHERE profile_id = ?", removed),
            ("DELETE FROM identifiers WHERE profile_id = ?", removed),
            ("DELETE FROM cart_items WHERE profile_id = ?", removed),
        ]
        statements = list(row_writes(profiles))
        if kind == "delta":
            writes += _keep_unnamed_parts(statements, _list(data, "profiles"))
        else:
            writes += statements
    elif family == "carts":
        carts_by_profile = data.get("carts", {})
        if not isinstance(carts_by_profile, dict):
            raise ValueError("data.carts: expected an object of profile id → items")
        carts: list[tuple[Any, ...]] = []
        for pid, items in carts_by_profile.items():
            try:
                carts.extend(cart_rows(pid, items, f"data.carts.{pid}"))
            except LineError as exc:
                raise ValueError(f"{exc.field}: {exc.reason}") from None
        if kind == "snapshot":
            writes.append(("DELETE FROM cart_items", None))
        else:
            writes.append(
                ("DELETE FROM cart_items WHERE profile_id = ?", [(p,) for p in carts_by_profile])
            )
        writes.append((CART_INSERT, carts))
    elif family == "campaigns":
        # Rules as data, validated like the config file (every key named on error). A bad
        # campaign is left out and reported; it never disables the good ones. A document
        # without a single good campaign changes nothing.
        good, bad = campaign_rules(data)
        if not good:
            where, problem = bad[0]
            raise ValueError(f"{where}: {problem}")
        body = json.dumps({"campaigns": [raw for _rule, raw in good]})
        writes.append(
            ("INSERT OR REPLACE INTO documents (family, body) VALUES (?, ?)", [("campaigns", body)])
        )
    elif family == "pickups":
        # Facts, never replaced: snapshot and delta both add (a repeated fact is a no-op).
        writes.append((PICKUP_INSERT, pickup_rows(_list(data, "pickups"))))
    # config: versions are tracked; local config files stay the operator's.
    return writes


def _keep_unnamed_parts(
    statements: list[tuple[str, list[tuple[Any, ...]]]], profiles: list[Any]
) -> list[Write]:
    """A delta never deletes what it does not name: a listed profile's identifiers and cart
    are replaced only when its object carries `identifiers` / `cart` (an update of consent
    or language must not empty the shopper's saved cart)."""
    without = {
        part: {(p["profile_id"],) for p in profiles if isinstance(p, dict) and part not in p}
        for part in ("identifiers", "cart")
    }
    kept: list[Write] = []
    for sql, rows in statements:
        if sql == "DELETE FROM identifiers WHERE profile_id = ?":
            rows = [r for r in rows if r not in without["identifiers"]]
        elif sql == "DELETE FROM cart_items WHERE profile_id = ?":
            rows = [r for r in rows if r not in without["cart"]]
        kept.append((sql, rows))
    return kept


def campaign_rules(
    data: dict[str, Any],
) -> tuple[list[tuple[PickupDiscountSection, dict[str, Any]]], list[tuple[str, str]]]:
    """The campaigns of a document: (rule, its raw object) for the valid ones, (where,
    problem) for the others. `pickup_discount` (one campaign) and/or `campaigns` (a list)."""
    entries: list[tuple[str, Any]] = []
    if "pickup_discount" in data:
        entries.append(("data.pickup_discount", data["pickup_discount"]))
    listed = data.get("campaigns", [])
    if not isinstance(listed, list):
        return [], [("data.campaigns", "expected a list of campaign objects")]
    entries += [(f"data.campaigns[{i}]", c) for i, c in enumerate(listed)]
    if not entries:
        return [], [("data", "expected 'pickup_discount' and/or 'campaigns'")]
    good: list[tuple[PickupDiscountSection, dict[str, Any]]] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for where, section in entries:
        if not isinstance(section, dict):
            bad.append((where, "expected an object of campaign settings"))
            continue
        try:
            rule = build_section(PickupDiscountSection, section, "campaigns", where)
        except ConfigError as exc:
            bad.append((exc.key or where, exc.problem))
            continue
        if rule.campaign in seen:
            bad.append((f"{where}.campaign", f"duplicate campaign id {rule.campaign!r}"))
            continue
        seen.add(rule.campaign)
        good.append((rule, section))
    return good, bad


def stored_campaigns(conn: sqlite3.Connection) -> list[PickupDiscountSection]:
    """The campaigns last synced from the backend (empty: none, use the config's)."""
    row = conn.execute("SELECT body FROM documents WHERE family = 'campaigns'").fetchone()
    if row is None:
        return []
    try:
        good, _bad = campaign_rules(json.loads(row[0]))
    except (ValueError, json.JSONDecodeError):
        return []  # an older gateway's document this one cannot read: keep the config
    return [rule for rule, _raw in good]


class DocumentRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def stored_version(conn: sqlite3.Connection, family: str) -> int:
    """The version of `family` this box holds (0: none yet); what a resync request reports."""
    row = conn.execute("SELECT version FROM doc_versions WHERE family = ?", (family,)).fetchone()
    return int(row[0]) if row else 0
