"""Downlink: versioned documents and commands from the backend, authenticated and bound.

A client that can publish to the broker must not be able to change the shop's stock or
command the gateway, nor replay what the backend sent elsewhere or long ago. Every document
and command carries an HMAC-SHA256 signature with the store's downlink key over its RFC 8785
canonical JSON without "sig" (`gateway.sync.canonical`), and the signature covers what it
authorises: the store, the gateway (or "*" for every gateway of the store), the family or
command, the version, when it was issued and until when it holds (docs/downlink.md).

Documents (topic .../down/{family}):
  {"family": "stock", "kind": "snapshot" | "delta", "version": 7, "store": "s1",
   "gateway": "*", "issued_at": 1796200000, "expires_at": 1796804800, "data": {...},
   "sig": "…"}
  * a snapshot replaces the family and is accepted when its version is newer;
  * a delta must be exactly the next version: older → `stale_version`, further ahead →
    `version_gap` and a resync request ({family, have}) on the resync topic;
  * the same version again is a no-op (at-least-once delivery, retained messages);
  * a new version must be current: issued at most `CLOCK_SKEW_S` ahead of this box's clock
    and not expired, and valid for at most `mqtt.downlink_max_validity_days` — so a fresh
    gateway never takes an old captured snapshot for the truth;
  * the payload is validated completely first and applied in one transaction: a bad
    document is rejected with a reason, never applied in part.
Commands (topic .../cmd/{name}): {"command", "args", "store", "gateway", "issued_at",
"expires_at", "nonce", "sig"}; valid for at most `COMMAND_MAX_VALIDITY_S`, never seen before,
answered (accepted or not) on the MQTT 5 response topic if it lies in this gateway's own
`cmd-resp/` subtree (correlation data echoed), else on .../cmd-resp/{name}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.config.schema import ConfigError, build_section
from gateway.identity.importer import (
    CART_INSERT,
    LineError,
    Rows,
    cart_rows,
    profile_rows,
    row_writes,
)
from gateway.offers.rules import PickupDiscountSection
from gateway.store.db import transaction
from gateway.sync import wire
from gateway.sync.canonical import NotCanonical
from gateway.sync.canonical import canonical as jcs

FAMILIES = ("stock", "profiles", "carts", "campaigns", "config")
COMMANDS = ("flush", "diagnose", "reload")
CLOCK_SKEW_S = 300.0  # how far ahead of this box's clock an issue time may be
COMMAND_MAX_VALIDITY_S = 3600.0
DEFAULT_MAX_VALIDITY_S = 30 * 86400.0
DOCUMENT_FIELDS = frozenset(
    {"family", "kind", "version", "store", "gateway", "issued_at", "expires_at", "data", "sig"}
)
COMMAND_FIELDS = frozenset(
    {"command", "args", "store", "gateway", "issued_at", "expires_at", "nonce", "sig"}
)
ALL_GATEWAYS = "*"


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes the signature covers: RFC 8785 of the document without "sig"."""
    return jcs({k: v for k, v in document.items() if k != "sig"})


def sign(key: bytes, document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the document with its signature (the backend side, and tests)."""
    return {**document, "sig": hmac.new(key, canonical(document), hashlib.sha256).hexdigest()}


def seal(
    key: bytes,
    document: dict[str, Any],
    *,
    store: str,
    now: float,
    gateway: str = ALL_GATEWAYS,
    valid_s: float = 7 * 86400.0,
) -> dict[str, Any]:
    """Bind a document or command to a store, a gateway and a time window, then sign it.
    Fields the document already has are kept (`gateway downlink sign` fills the others)."""
    bound = {
        "store": store,
        "gateway": gateway,
        "issued_at": now,
        "expires_at": now + valid_s,
        **{k: v for k, v in document.items() if k != "sig"},
    }
    return sign(key, bound)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Binding:
    """What a signature must name to be accepted by this gateway."""

    store: str
    gateway: str
    max_validity_s: float = DEFAULT_MAX_VALIDITY_S


def verify(key: bytes, payload: bytes, max_bytes: int = 4 << 20) -> dict[str, Any] | Rejected:
    """The signed JSON object in `payload`, or why it is refused. Size and nesting are bounded
    before parsing; nothing here raises."""
    if not key:
        return Rejected("no_downlink_key", "mqtt.downlink_key is not configured")
    try:
        document = wire.parse(payload, max_bytes=max_bytes)
    except wire.WireRejected as exc:
        return Rejected(exc.reason, exc.detail)
    if not isinstance(document, dict):
        return Rejected("invalid_payload", "expected a JSON object")
    sig = document.get("sig")
    if not isinstance(sig, str):
        return Rejected("unsigned", "no 'sig'")
    try:
        body = canonical(document)
    except NotCanonical as exc:
        return Rejected("invalid_payload", f"cannot be canonicalised (RFC 8785): {exc}")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        return Rejected("bad_signature", "signature does not match the downlink key")
    return document


def _time(document: dict[str, Any], key: str) -> float:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}: expected seconds since 1970 (UTC), a number")
    return float(value)


def check_envelope(
    document: dict[str, Any],
    binding: Binding,
    now: float,
    *,
    command: bool = False,
    held_version: int | None = None,
) -> Rejected | None:
    """None when a verified document (or command) is meant for this gateway now, else why
    not. A document whose version this gateway already holds skips the time checks: an
    expired copy of what was applied is a harmless duplicate."""
    fields = COMMAND_FIELDS if command else DOCUMENT_FIELDS
    unknown = sorted(set(document) - fields)
    if unknown:
        return Rejected(
            "unknown_field", f"{', '.join(unknown)}; expected {', '.join(sorted(fields))}"
        )
    store, gateway = document.get("store"), document.get("gateway")
    if not isinstance(store, str) or not isinstance(gateway, str):
        return Rejected(
            "unbound",
            "store and gateway are required (signatures bind them; sign with "
            "`gateway downlink sign`)",
        )
    if store != binding.store:
        return Rejected("wrong_store", f"for store {store!r}; this is {binding.store!r}")
    if gateway not in (ALL_GATEWAYS, binding.gateway):
        return Rejected("wrong_gateway", f"for gateway {gateway!r}; this is {binding.gateway!r}")
    try:
        issued, expires = _time(document, "issued_at"), _time(document, "expires_at")
    except ValueError as exc:
        return Rejected("unbound", str(exc))
    longest = COMMAND_MAX_VALIDITY_S if command else binding.max_validity_s
    if not 0 < expires - issued <= longest:
        return Rejected(
            "invalid_validity",
            f"valid for {expires - issued:.0f} s; expires_at must follow issued_at by at most "
            f"{longest:.0f} s",
        )
    version = document.get("version")
    if held_version is not None and version == held_version:
        return None
    if issued > now + CLOCK_SKEW_S:
        return Rejected(
            "not_yet_valid",
            f"issued {issued - now:.0f} s ahead of this gateway's clock ({now:.0f}); is the "
            "clock synchronised?",
        )
    if expires <= now:
        return Rejected("expired", f"expired {now - expires:.0f} s ago (clock {now:.0f})")
    return None


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
}
MAX_QUANTITY = 1_000_000_000


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


def _stock_rows(items: list[Any]) -> list[tuple[str, str, int, str]]:
    rows = []
    for i, item in enumerate(items):
        where = f"data.items[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        _known_fields(item, STOCK_ITEM_FIELDS, where)
        quantity = int(_num(item, "quantity", where, integer=True))
        if quantity > MAX_QUANTITY:
            raise ValueError(f"{where}.quantity: at most {MAX_QUANTITY}")
        rows.append(
            (
                _str(item, "sku", where),
                _optional_str(item, "title", where),
                quantity,
                _optional_str(item, "zone_id", where),
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


def apply_document(conn: sqlite3.Connection, document: dict[str, Any]) -> str:
    """Validate and apply one verified document. Returns "applied" or "duplicate", or raises
    `DocumentRejected` with a reason (nothing is changed then)."""
    family, kind, version = _head(document)
    current = stored_version(conn, family)
    if version == current:
        return "duplicate"
    if version < current:
        raise DocumentRejected("stale_version", f"version {version} is older than {current}")
    if kind == "delta" and version != current + 1:
        raise DocumentRejected("version_gap", f"delta {version} does not follow {current}")
    writes = _writes(document)
    with transaction(conn):
        for sql, rows in writes:
            if rows is None:
                conn.execute(sql)
            else:
                conn.executemany(sql, rows)
        conn.execute(
            "INSERT INTO doc_versions (family, version) VALUES (?, ?) "
            "ON CONFLICT(family) DO UPDATE SET version = excluded.version",
            (family, version),
        )
    return "applied"


def _head(document: dict[str, Any]) -> tuple[str, str, int]:
    family, kind, version = document.get("family"), document.get("kind"), document.get("version")
    if family not in FAMILIES:
        raise DocumentRejected("unknown_family", f"family {family!r}; one of {', '.join(FAMILIES)}")
    if kind not in ("snapshot", "delta"):
        raise DocumentRejected("invalid_payload", "kind must be 'snapshot' or 'delta'")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DocumentRejected("invalid_payload", "version must be a positive integer")
    return str(family), str(kind), version


def _writes(document: dict[str, Any]) -> list[Write]:
    family, kind, _version = _head(document)
    data = document.get("data")
    if not isinstance(data, dict):
        raise DocumentRejected("invalid_payload", "data must be an object")
    try:
        return _plan(family, kind, data)
    except ValueError as exc:
        raise DocumentRejected("invalid_payload", str(exc)) from None


def validate_document(document: dict[str, Any]) -> None:
    """Everything `apply_document` checks that needs no state: raises DocumentRejected
    (what `gateway downlink sign` runs before it signs)."""
    _writes(document)


Write = tuple[str, list[tuple[Any, ...]] | None]


def _plan(family: str, kind: str, data: dict[str, Any]) -> list[Write]:
    """Every statement the document needs, built (and so validated) before any runs."""
    writes: list[Write] = []
    if family in DATA_FIELDS:
        _known_fields(data, DATA_FIELDS[family], "data")
    if family == "stock":
        rows = _stock_rows(_list(data, "items"))
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


class NonceCache:
    """Commands seen and not yet expired (replay protection). Bounded: only correctly signed
    commands get here, so the bound is a safety net, not the defence."""

    def __init__(self, size: int = 4096) -> None:
        self.seen: OrderedDict[str, float] = OrderedDict()  # nonce -> expires_at
        self.size = size

    def fresh(self, nonce: str, expires_at: float, now: float) -> str:
        for old, until in list(self.seen.items()):
            if until > now:
                break
            del self.seen[old]
        if nonce in self.seen:
            return "replayed"
        self.seen[nonce] = expires_at
        while len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return ""


def check_command(document: dict[str, Any], nonces: NonceCache, now: float) -> str:
    """'' when a verified, bound command may run, else the reason it may not."""
    if document.get("command") not in COMMANDS:
        return "unknown_command"
    nonce, args = document.get("nonce"), document.get("args", {})
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128 or not isinstance(args, dict):
        return "invalid_payload"
    try:
        expires_at = _time(document, "expires_at")
    except ValueError:
        return "invalid_payload"
    return nonces.fresh(nonce, expires_at, now)


def stored_version(conn: sqlite3.Connection, family: str) -> int:
    """The version of `family` this box holds (0: none yet); what a resync request reports."""
    row = conn.execute("SELECT version FROM doc_versions WHERE family = ?", (family,)).fetchone()
    return int(row[0]) if row else 0
