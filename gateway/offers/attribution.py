"""Attribution: which decision an outcome belongs to, once.

An *exposure* is opened by the first eligible decision of a campaign for a shopper (issued:
group `exposed`; kept back: group `holdout`) and stays open for the campaign's
`attribution_window_days`; further eligible decisions inside the window belong to it. An
*outcome* is something the shopper did that the offer is meant to cause, observed the same way
in both groups:
  * `redemption`  an offer redeemed with the loyalty card or a typed code,
  * `counter_tap` her verified loyalty card tapped at a redeeming touchpoint (the held-out
                  shopper has no offer to redeem; coming to the counter is her outcome),
  * `pickup`      a pickup of a saved item the backend reports (downlink family `pickups`).
Each outcome is attributed to the latest open exposure of that shopper (the same item first,
the redeemed offer's campaign for a redemption) that has no outcome yet; an exposure converts
at most once, an outcome counts at most once (its id is derived from what it is), so replays and
re-sent pickup facts change nothing.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from typing import Any

from gateway.offers.bandit import Arm

EXPOSED, HOLDOUT = "exposed", "holdout"
DAY_S = 86400.0


def open_exposure(
    conn: sqlite3.Connection,
    decision_id: str,
    campaign: str,
    profile_id: str,
    group: str,
    variant: str,
    sku: str,
    t: float,
    window_days: float,
    store_day: str,
) -> bool:
    """Open an exposure for an eligible decision unless one is open; True if opened."""
    open_row = conn.execute(
        "SELECT 1 FROM exposures WHERE campaign = ? AND profile_id = ? AND t <= ? AND until_t > ?",
        (campaign, profile_id, t, t),
    ).fetchone()
    if open_row is not None:
        return False
    conn.execute(
        "INSERT OR IGNORE INTO exposures (exposure_id, campaign, profile_id, grp, variant, sku, "
        "t, until_t, store_day) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            decision_id,
            campaign,
            profile_id,
            group,
            variant,
            sku,
            t,
            t + window_days * DAY_S,
            store_day,
        ),
    )
    return True


def outcome_id(kind: str, ref: str) -> str:
    return "oc-" + hashlib.sha256(f"{kind}|{ref}".encode()).hexdigest()[:20]


def record_outcome(
    conn: sqlite3.Connection,
    kind: str,
    ref: str,
    profile_id: str,
    t: float,
    sku: str = "",
    campaign: str = "",
) -> str | None:
    """Record one outcome (idempotent by kind + ref) and attribute it: the exposure id it
    counted for, or None (a repeat, or no open exposure without an outcome)."""
    oid = outcome_id(kind, ref)
    cur = conn.execute(
        "INSERT OR IGNORE INTO outcomes (outcome_id, kind, profile_id, sku, t) VALUES (?,?,?,?,?)",
        (oid, kind, profile_id, sku, t),
    )
    if cur.rowcount == 0:
        return None
    return _attribute_id(conn, oid, kind, profile_id, t, sku, campaign)


def _attribute(
    conn: sqlite3.Connection,
    oid: str,
    kind: str,
    profile_id: str,
    t: float,
    sku: str,
    campaign: str,
) -> int:
    return int(_attribute_id(conn, oid, kind, profile_id, t, sku, campaign) is not None)


def _attribute_id(
    conn: sqlite3.Connection,
    oid: str,
    kind: str,
    profile_id: str,
    t: float,
    sku: str,
    campaign: str,
) -> str | None:
    row = conn.execute(
        "SELECT exposure_id FROM exposures WHERE profile_id = ? AND t <= ? AND until_t >= ? "
        "AND outcome_id IS NULL AND (? = '' OR campaign = ?) "
        "ORDER BY (sku = ?) DESC, t DESC LIMIT 1",
        (profile_id, t, t, campaign, campaign, sku),
    ).fetchone()
    if row is None:
        conn.execute("UPDATE outcomes SET exposure_id = '' WHERE outcome_id = ?", (oid,))
        return None
    exposure = str(row[0])
    conn.execute(
        "UPDATE exposures SET outcome_id = ?, outcome_kind = ?, outcome_t = ? "
        "WHERE exposure_id = ?",
        (oid, kind, t, exposure),
    )
    conn.execute("UPDATE outcomes SET exposure_id = ? WHERE outcome_id = ?", (exposure, oid))
    return exposure


def arms(conn: sqlite3.Connection, campaign: str) -> dict[str, Arm]:
    """Exposed offers and conversions per variant of a campaign: the bandit's posterior."""
    return {
        str(variant): Arm(int(n), int(converted))
        for variant, n, converted in conn.execute(
            "SELECT variant, count(*), count(outcome_id) FROM exposures "
            "WHERE campaign = ? AND grp = 'exposed' GROUP BY variant",
            (campaign,),
        )
    }


# --- pickup facts from the backend (downlink family `pickups`) ---------------------------

PICKUP_FIELDS = frozenset({"profile_id", "sku", "t"})
PICKUP_INSERT = (
    "INSERT OR IGNORE INTO outcomes (outcome_id, kind, profile_id, sku, t) "
    "VALUES (?, 'pickup', ?, ?, ?)"
)
MAX_PICKUP_T = 1e11  # Unix seconds; beyond year 5000 is a unit mistake (milliseconds)


def pickup_rows(items: list[Any]) -> list[tuple[str, str, str, float]]:
    """Validated pickup facts ({profile_id, sku, t}) as outcome rows; ValueError names the
    first bad member (`data.pickups[i].field`)."""
    rows = []
    for i, item in enumerate(items):
        where = f"data.pickups[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        unknown = sorted(set(item) - PICKUP_FIELDS)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown field (expected profile_id, sku, t)")
        values = []
        for key in ("profile_id", "sku"):
            value = item.get(key)
            if not isinstance(value, str) or not value or len(value) > 200:
                raise ValueError(f"{where}.{key}: expected a non-empty string (≤ 200 chars)")
            values.append(value)
        t = item.get("t")
        if (
            isinstance(t, bool)
            or not isinstance(t, (int, float))
            or not math.isfinite(t)
            or not 0 < t < MAX_PICKUP_T
        ):
            raise ValueError(f"{where}.t: expected Unix seconds (a positive number)")
        profile, sku = values
        rows.append((outcome_id("pickup", f"{profile}|{sku}|{float(t)!r}"), profile, sku, float(t)))
    return rows


def attribute_pending(conn: sqlite3.Connection) -> int:
    """Attribute outcomes stored but not yet attributed (pickup facts just written); each is
    tried once (`exposure_id` '' when nothing was open). Returns how many were attributed."""
    pending = conn.execute(
        "SELECT outcome_id, kind, profile_id, sku, t FROM outcomes WHERE exposure_id IS NULL "
        "ORDER BY t"
    ).fetchall()
    attributed = 0
    for oid, kind, profile_id, sku, t in pending:
        attributed += _attribute(conn, str(oid), str(kind), str(profile_id), float(t), str(sku), "")
    return attributed
