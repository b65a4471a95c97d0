"""Who is this? Device and tag identities → cached shopper profiles.

The profile cache lives on disk (SQLite), so a box with 100k profiles keeps little in RAM.
Identifiers are (kind, value) pairs: `ibeacon` → "uuid:major:minor", `nfc_uid` → hex UID,
later Eddystone-UID, EID keys and IRKs. Device ids that leave the box are pseudonymous:
a keyed hash of the identity, stable per gateway key, useless without it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.identity.rotating import EidKey
from gateway.store.db import transaction


def pseudonymise(key: bytes, identity: str, prefix: str = "dev") -> str:
    digest = hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:16]}"


@dataclass(frozen=True, slots=True)
class Profile:
    profile_id: str
    consent_offers: bool
    opted_out: bool
    language: str
    segments: frozenset[str] = frozenset()
    max_offers_per_day: int | None = None  # the shopper's own cap (preferences)
    muted_campaigns: frozenset[str] = frozenset()  # campaigns the shopper switched off
    declined_skus: frozenset[str] = frozenset()  # items the shopper said no to


@dataclass(frozen=True, slots=True)
class CartItem:
    sku: str
    title: str
    price: float
    added_at: str


@dataclass(frozen=True, slots=True)
class StockItem:
    sku: str
    title: str
    quantity: int
    zone_id: str


class IdentityStore:
    """Reads and writes profiles, identifiers, carts and stock in the state database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def resolve(self, kind: str, value: str) -> str | None:
        row = self.conn.execute(
            "SELECT profile_id FROM identifiers WHERE kind = ? AND value = ?", (kind, value)
        ).fetchone()
        return None if row is None else str(row[0])

    def resolve_consenting(self, kind: str, value: str) -> tuple[str | None, bool]:
        """(profile id, declined) for an identity seen in the shop. Only a shopper who
        consented to offers and did not opt out is recognised; for anyone else the answer is
        (None, True): the caller must not keep or send anything that links them (issue 16)."""
        row = self.conn.execute(
            "SELECT i.profile_id, p.consent_offers, p.opted_out FROM identifiers i "
            "LEFT JOIN profiles p ON p.profile_id = i.profile_id WHERE i.kind = ? AND i.value = ?",
            (kind, value),
        ).fetchone()
        if row is None:
            return None, False
        if row[1] and not row[2]:
            return str(row[0]), False
        return None, True

    def consents(self, profile_id: str) -> bool:
        row = self.conn.execute(
            "SELECT consent_offers, opted_out FROM profiles WHERE profile_id = ?", (profile_id,)
        ).fetchone()
        return row is not None and bool(row[0]) and not bool(row[1])

    def profile(self, profile_id: str) -> Profile | None:
        row = self.conn.execute(
            "SELECT profile_id, consent_offers, opted_out, language, segments, preferences, "
            "declined_skus FROM profiles WHERE profile_id = ?",
            (profile_id,),
        ).fetchone()
        if row is None:
            return None
        preferences = json.loads(row[5] or "{}")
        cap = preferences.get("max_offers_per_day")
        return Profile(
            str(row[0]),
            bool(row[1]),
            bool(row[2]),
            str(row[3] or "en"),
            frozenset(json.loads(row[4] or "[]")),
            int(cap) if cap is not None else None,
            frozenset(preferences.get("muted_campaigns", [])),
            frozenset(json.loads(row[6] or "[]")),
        )

    def cart(self, profile_id: str) -> list[CartItem]:
        rows = self.conn.execute(
            "SELECT sku, title, price, added_at FROM cart_items WHERE profile_id = ? "
            "ORDER BY added_at DESC, sku",
            (profile_id,),
        )
        return [CartItem(str(r[0]), str(r[1]), float(r[2]), str(r[3])) for r in rows]

    def stock(self, sku: str) -> StockItem | None:
        row = self.conn.execute(
            "SELECT sku, title, quantity, zone_id FROM stock WHERE sku = ?", (sku,)
        ).fetchone()
        if row is None:
            return None
        return StockItem(str(row[0]), str(row[1] or ""), int(row[2]), str(row[3] or ""))

    def rotating_keys(self) -> tuple[list[EidKey], list[tuple[str, bytes]], list[str]]:
        """EID keys and IRKs of consenting, not opted-out profiles (others are never
        resolved: a shopper who did not consent is not recognised at all), plus problems
        with malformed keys (profile, reason) — a bad key never disables the good ones."""
        eid_keys: list[EidKey] = []
        irks: list[tuple[str, bytes]] = []
        problems: list[str] = []
        rows = self.conn.execute(
            "SELECT i.kind, i.value, i.profile_id FROM identifiers i "
            "JOIN profiles p ON p.profile_id = i.profile_id "
            "WHERE i.kind IN ('eid_key', 'irk') AND p.consent_offers = 1 AND p.opted_out = 0"
        )
        for kind, value, profile_id in rows:
            try:
                if kind == "eid_key":
                    eid_keys.append(EidKey.parse(str(profile_id), str(value)))
                else:
                    irk = bytes.fromhex(str(value))
                    if len(irk) != 16:
                        raise ValueError("an IRK has 32 hex digits")
                    irks.append((str(profile_id), irk))
            except ValueError as exc:
                problems.append(f"{profile_id}: {kind}: {exc}")
        return eid_keys, irks, problems

    def stocked_zones(self) -> set[str]:
        rows = self.conn.execute("SELECT DISTINCT zone_id FROM stock WHERE quantity > 0")
        return {str(r[0]) for r in rows if r[0]}

    def load_seed(self, seed: dict[str, Any]) -> None:
        """Load a seed document (profiles and stock in the import format) atomically; both
        go through the importer's validators (a bad entry raises ValueError naming it)."""
        from gateway.identity.importer import LineError, Rows, profile_rows, row_writes, stock_row

        rows = Rows()
        stock: list[tuple[str, str, int, str]] = []
        for key in ("profiles", "stock"):
            for index, document in enumerate(seed.get(key, [])):
                try:
                    if key == "profiles":
                        profile_rows(document, rows)
                    else:
                        stock.append(stock_row(document))
                except LineError as exc:
                    raise ValueError(
                        "; ".join(
                            f"{key}[{index}]" + (f".{e.field}" if e.field else "") + f": {e.reason}"
                            for e in exc.each
                        )
                    ) from None
        with transaction(self.conn):
            for sql, params in row_writes(rows):
                if params:
                    self.conn.executemany(sql, params)
            self.conn.executemany(
                "INSERT OR REPLACE INTO stock (sku, title, quantity, zone_id) VALUES (?,?,?,?)",
                stock,
            )
