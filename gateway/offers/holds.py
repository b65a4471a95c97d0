"""Stock holds: an issued pickup offer sets one unit of its item aside for its shopper.

Available = quantity − active holds; the engine offers only from available stock, and a
shopper whose saved item is all set aside for others hears `held_for_other`. A hold ends
exactly once: it expires with its offer (`expired`, at the offer's expiry, so a replay ends it
at the same moment), its offer is redeemed (`redeemed`: the unit is sold, quantity − 1), or it
is withdrawn (`withdrawn_stock`: a stock document left fewer units than holds, the newest go;
`not_found`: staff could not find the copy). Every change is a `HoldEvent` (uplinked as
`hold.placed` / `hold.released`).

Ids derive from the offer (`hd-…` from the offer id), so a replay or a restart re-derives the
same hold and the insert is a no-op. Everything runs inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from gateway.identity.store import CartItem, IdentityStore, StockItem
from gateway.model import HoldEvent
from gateway.offers.codes import _stable_id

ACTIVE = "active"
PLACED = "offer_issued"
EXPIRED = "expired"
REDEEMED = "redeemed"
WITHDRAWN_STOCK = "withdrawn_stock"
NOT_FOUND = "not_found"
RELEASE_REASONS = (EXPIRED, REDEEMED, WITHDRAWN_STOCK, NOT_FOUND)

# What a consenting shopper is told when the copy promised to her is gone (per language; the
# primary language is tried after the exact tag, English last). {title} and {hint} (the
# code's last four characters) are filled in.
APOLOGIES = {
    "en": "Sorry: {title} is no longer there for you to pick up; your code …{hint} is withdrawn.",
    "de": "Entschuldigung: {title} liegt leider nicht mehr für dich bereit; "
    "dein Code …{hint} gilt nicht mehr.",
    "fr": "Désolés : {title} n'est plus disponible pour vous ; votre code …{hint} est annulé.",
}


def apology(language: str, title: str, code: str) -> str:
    template = APOLOGIES.get(language) or APOLOGIES.get(language.split("-")[0]) or APOLOGIES["en"]
    return template.format(title=title, hint=code[-4:])


def hold_id_for(offer_id: str) -> str:
    return _stable_id("hd", offer_id)


def held(conn: sqlite3.Connection, sku: str, t: float) -> int:
    """Units of `sku` set aside at `t` (a hold past its expiry no longer counts, even before
    `expire_due` has ended it)."""
    row = conn.execute(
        "SELECT count(*) FROM holds WHERE sku = ? AND status = 'active' AND expires_at >= ?",
        (sku, t),
    ).fetchone()
    return int(row[0])


class CartStock(NamedTuple):
    in_stock: list[tuple[CartItem, StockItem]]  # with a unit free for (or held by) her
    held_for_others: tuple[tuple[CartItem, StockItem], ...]  # every unit promised to others
    held_for_self: frozenset[str]  # this shopper already has a unit set aside


def cart_stock(
    conn: sqlite3.Connection,
    identity: IdentityStore,
    cart: list[CartItem],
    profile_id: str,
    t: float,
) -> CartStock:
    """The shopper's saved items against the shelf and its holds."""
    own = frozenset(
        str(r[0])
        for r in conn.execute(
            "SELECT sku FROM holds WHERE profile_id = ? AND status = 'active' AND expires_at >= ?",
            (profile_id, t),
        )
    )
    in_stock: list[tuple[CartItem, StockItem]] = []
    others: list[tuple[CartItem, StockItem]] = []
    for item in cart:
        stock = identity.stock(item.sku)
        if stock is None or stock.quantity <= 0:
            continue
        # her own unit stays hers (the engine then says already_offered, after the caps)
        if item.sku in own or stock.quantity - held(conn, item.sku, t) > 0:
            in_stock.append((item, stock))
        else:
            others.append((item, stock))
    return CartStock(in_stock, tuple(others), own)


def _quantity(conn: sqlite3.Connection, sku: str) -> int:
    row = conn.execute("SELECT quantity FROM stock WHERE sku = ?", (sku,)).fetchone()
    return int(row[0]) if row else 0


def place(
    conn: sqlite3.Connection,
    offer_id: str,
    profile_id: str,
    sku: str,
    t: float,
    expires_at: float,
) -> HoldEvent | None:
    """Set a unit aside for an issued offer; None if this offer's hold exists (a replay)
    or no unit is free (the engine checked: never more holds than units)."""
    quantity = _quantity(conn, sku)
    before = held(conn, sku, t)
    if quantity - before <= 0:
        return None
    hold_id = hold_id_for(offer_id)
    inserted = conn.execute(
        "INSERT OR IGNORE INTO holds (hold_id, offer_id, profile_id, sku, placed_at, "
        "expires_at, status) VALUES (?,?,?,?,?,?, 'active')",
        (hold_id, offer_id, profile_id, sku, t, expires_at),
    ).rowcount
    if not inserted:
        return None
    return HoldEvent(
        t, "placed", hold_id, offer_id, profile_id, sku, PLACED, expires_at, quantity,
        before + 1,
    )  # fmt: skip


def release(conn: sqlite3.Connection, offer_id: str, t: float, reason: str) -> HoldEvent | None:
    """End the offer's hold (if it is still active) for `reason`. A redemption sells the
    unit (quantity − 1); a withdrawal also withdraws the offer (its code no longer redeems)."""
    assert reason in RELEASE_REASONS, reason
    row = conn.execute(
        "SELECT hold_id, profile_id, sku, expires_at FROM holds "
        "WHERE offer_id = ? AND status = 'active'",
        (offer_id,),
    ).fetchone()
    if row is None:
        return None
    hold_id, profile_id, sku, expires_at = str(row[0]), str(row[1]), str(row[2]), float(row[3])
    conn.execute(
        "UPDATE holds SET status = ?, ended_at = ? WHERE hold_id = ?",
        (reason, t, hold_id),
    )
    if reason == REDEEMED:
        conn.execute("UPDATE stock SET quantity = max(quantity - 1, 0) WHERE sku = ?", (sku,))
    elif reason in (WITHDRAWN_STOCK, NOT_FOUND):
        conn.execute(
            "UPDATE offers SET status = 'withdrawn' WHERE offer_id = ? AND status = 'issued'",
            (offer_id,),
        )
    return HoldEvent(
        t, "released", hold_id, offer_id, profile_id, sku, reason, expires_at,
        _quantity(conn, sku), held(conn, sku, t),
    )  # fmt: skip


def next_expiry(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT min(expires_at) FROM holds WHERE status = 'active'").fetchone()
    return None if row[0] is None else float(row[0])


def over_held(conn: sqlite3.Connection, t: float) -> list[str]:
    """Offers whose holds exceed their item's quantity (after a stock document lowered it or
    removed the item): the newest holds of each item, as many as are too many."""
    out: list[str] = []
    rows = conn.execute(
        "SELECT h.sku, count(*), coalesce(s.quantity, 0) FROM holds h "
        "LEFT JOIN stock s ON s.sku = h.sku "
        "WHERE h.status = 'active' AND h.expires_at >= ? GROUP BY h.sku",
        (t,),
    ).fetchall()
    for sku, count, quantity in rows:
        excess = int(count) - max(int(quantity), 0)
        if excess <= 0:
            continue
        newest = conn.execute(
            "SELECT offer_id FROM holds WHERE sku = ? AND status = 'active' AND expires_at >= ? "
            "ORDER BY placed_at DESC, hold_id DESC LIMIT ?",
            (sku, t, excess),
        )
        out.extend(str(r[0]) for r in newest)
    return out


class HoldRow(NamedTuple):
    hold_id: str
    sku: str
    status: str
    placed_at: float
    expires_at: float
    ended_at: float | None


def list_holds(conn: sqlite3.Connection, active_only: bool = False) -> list[HoldRow]:
    """Holds, newest first (no profile ids: `gateway holds list` shows what is set aside)."""
    where = "WHERE status = 'active'" if active_only else ""
    rows = conn.execute(
        "SELECT hold_id, sku, status, placed_at, expires_at, ended_at FROM holds "
        f"{where} ORDER BY placed_at DESC, hold_id"
    )
    return [
        HoldRow(
            str(r[0]),
            str(r[1]),
            str(r[2]),
            float(r[3]),
            float(r[4]),
            None if r[5] is None else float(r[5]),
        )
        for r in rows
    ]
