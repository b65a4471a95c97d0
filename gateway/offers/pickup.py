"""Staff-assisted pickup: the task that appears with an issued offer, and how holds and
tasks end together.

A task shows staff what to fetch: the item, its title, its shelf zone, the last four
characters of the code (to match the shopper's phone), the shopper's language, and (live, in
the console) when she will reach the counter. No name, no profile id, no device id: the task
keeps the device's keyed pseudonym only to look up her position.

Staff act on a task: `ready` (the copy waits at the counter), `not_found` (the quantity is
corrected, the hold withdrawn, the shopper told), `collected` (handed over: the offer is
redeemed, the unit sold). The gateway closes a task itself when its offer expires
(`expired`), is withdrawn by a stock document (`withdrawn`) or is redeemed at a till
(`collected`, by "till"). Every change is a `PickupTaskEvent` for the outbox, naming who.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import NamedTuple

from gateway.model import HoldEvent, OfferDecision, PickupTaskEvent, PipelineEvent, Redemption
from gateway.offers import holds
from gateway.offers.codes import _stable_id

OPEN = "open"
READY = "ready"
STAFF_ACTIONS = ("ready", "not_found", "collected")
# How a hold's end closes its task.
_CLOSES = {
    holds.EXPIRED: "expired",
    holds.REDEEMED: "collected",
    holds.WITHDRAWN_STOCK: "withdrawn",
    holds.NOT_FOUND: "not_found",
}
GATEWAY = "gateway"


def task_id_for(offer_id: str) -> str:
    return _stable_id("tk", offer_id)


class TaskRow(NamedTuple):
    task_id: str
    sku: str
    title: str
    zone: str
    code_hint: str
    language: str
    device: str  # pseudonym: only to find the shopper's position, never shown
    opened_at: float
    status: str
    updated_at: float
    updated_by: str


_COLUMNS = (
    "task_id, sku, title, zone_id, code_hint, language, device, opened_at, status, "
    "updated_at, updated_by"
)


def _row(r: tuple[object, ...]) -> TaskRow:
    return TaskRow(
        str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]),
        float(r[7]), str(r[8]), float(r[9]), str(r[10]),  # type: ignore[arg-type]
    )  # fmt: skip


def tasks(conn: sqlite3.Connection, open_only: bool = True) -> list[TaskRow]:
    """Tasks, oldest first (the one waiting longest on top)."""
    where = "WHERE status IN ('open', 'ready')" if open_only else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM pickup_tasks {where} ORDER BY opened_at, task_id")
    return [_row(r) for r in rows]


def _event(task: TaskRow, action: str, t: float, by: str) -> PickupTaskEvent:
    return PickupTaskEvent(
        t, action, task.task_id, task.sku, task.title, task.zone, task.code_hint,
        task.language, by,
    )  # fmt: skip


def on_issued(
    conn: sqlite3.Connection, decision: OfferDecision, zone: str, device: str
) -> list[PipelineEvent]:
    """An offer was issued: set its unit aside and open its task. Nothing on a replay."""
    d = decision
    assert d.offer_id and d.profile_id and d.sku and d.code and d.expires_at is not None
    hold = holds.place(conn, d.offer_id, d.profile_id, d.sku, d.t, d.expires_at)
    if hold is None:
        return []
    row = conn.execute("SELECT language FROM profiles WHERE profile_id = ?", (d.profile_id,))
    language = str((row.fetchone() or ("en",))[0] or "en")
    task = TaskRow(
        task_id_for(d.offer_id), d.sku, d.title or d.sku, zone, d.code[-4:], language,
        device, d.t, OPEN, d.t, GATEWAY,
    )  # fmt: skip
    conn.execute(
        "INSERT OR IGNORE INTO pickup_tasks (task_id, offer_id, sku, title, zone_id, "
        "code_hint, language, device, opened_at, status, updated_at, updated_by) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (task[0], d.offer_id, *task[1:]),
    )
    return [hold, _event(task, "opened", d.t, GATEWAY)]


def end_offer(
    conn: sqlite3.Connection, offer_id: str, t: float, reason: str, by: str = GATEWAY
) -> list[PipelineEvent]:
    """The offer's hold ends for `reason`: its task closes with it; a withdrawn shopper who
    consents to offers is told (the apology rides on the hold event to the push sink)."""
    hold = holds.release(conn, offer_id, t, reason)
    if hold is None:
        return []
    events: list[PipelineEvent] = []
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM pickup_tasks WHERE offer_id = ? AND status IN ('open','ready')",
        (offer_id,),
    ).fetchone()
    task = None if row is None else _row(row)
    if reason in (holds.WITHDRAWN_STOCK, holds.NOT_FOUND):
        hold = _with_apology(conn, hold, task)
    events.append(hold)
    if task is not None:
        action = _CLOSES[reason]
        conn.execute(
            "UPDATE pickup_tasks SET status = ?, updated_at = ?, updated_by = ? WHERE task_id = ?",
            (action, t, by, task.task_id),
        )
        events.append(_event(task, action, t, by))
    return events


def _with_apology(conn: sqlite3.Connection, hold: HoldEvent, task: TaskRow | None) -> HoldEvent:
    row = conn.execute(
        "SELECT p.consent_offers, p.opted_out, p.language, o.code, "
        "coalesce(s.title, o.sku) FROM offers o "
        "LEFT JOIN profiles p ON p.profile_id = o.profile_id "
        "LEFT JOIN stock s ON s.sku = o.sku WHERE o.offer_id = ?",
        (hold.offer_id,),
    ).fetchone()
    if row is None or not row[0] or row[1]:
        return hold  # no longer consenting (or unknown): nothing more reaches her
    title = task.title if task is not None else str(row[4])
    message = holds.apology(str(row[2] or "en"), title, str(row[3]))
    return dataclasses.replace(hold, message=message)


def expire(conn: sqlite3.Connection, now: float) -> list[PipelineEvent]:
    """End the holds (and close the tasks) whose offers expired before `now`."""
    due = conn.execute(
        "SELECT offer_id, expires_at FROM holds WHERE status = 'active' AND expires_at < ? "
        "ORDER BY expires_at, hold_id",
        (now,),
    ).fetchall()
    events: list[PipelineEvent] = []
    for offer_id, expires_at in due:
        events.extend(end_offer(conn, str(offer_id), float(expires_at), holds.EXPIRED))
    return events


def reconcile_stock(conn: sqlite3.Connection, t: float) -> list[PipelineEvent]:
    """After a stock document: withdraw the newest holds of every item that now has fewer
    units than holds (each shopper told)."""
    events: list[PipelineEvent] = []
    for offer_id in holds.over_held(conn, t):
        events.extend(end_offer(conn, offer_id, t, holds.WITHDRAWN_STOCK))
    return events


def act(
    conn: sqlite3.Connection, task_id: str, action: str, t: float, by: str
) -> tuple[list[PipelineEvent], str]:
    """A staff action on an open task: (the events, "done") or ([], why not)."""
    if action not in STAFF_ACTIONS:
        return [], "unknown_action"
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM pickup_tasks WHERE task_id = ?", (task_id,)
    ).fetchone()
    if row is None:
        return [], "unknown_task"
    task = _row(row)
    if task.status not in (OPEN, READY):
        return [], f"already_{task.status}"
    offer_id = conn.execute(
        "SELECT offer_id FROM pickup_tasks WHERE task_id = ?", (task_id,)
    ).fetchone()[0]
    if action == "ready":
        conn.execute(
            "UPDATE pickup_tasks SET status = 'ready', updated_at = ?, updated_by = ? "
            "WHERE task_id = ?",
            (t, by, task_id),
        )
        return [_event(task, "ready", t, by)], "done"
    if action == "not_found":
        # The copy is not there: the shelf has one fewer than the gateway thought.
        conn.execute("UPDATE stock SET quantity = max(quantity - 1, 0) WHERE sku = ?", (task.sku,))
        return end_offer(conn, str(offer_id), t, holds.NOT_FOUND, by), "done"
    # collected: handed over at the counter, the offer is redeemed there and then
    offer = conn.execute(
        "SELECT profile_id, code, sku, status FROM offers WHERE offer_id = ?", (offer_id,)
    ).fetchone()
    events: list[PipelineEvent] = []
    if offer is not None and offer[3] == "issued":
        conn.execute(
            "UPDATE offers SET status = 'redeemed', redeemed_at = ? WHERE offer_id = ?",
            (t, offer_id),
        )
        events.append(
            Redemption(t, str(offer[0]), str(offer_id), str(offer[1]), str(offer[2]), "pickup")
        )
    events.extend(end_offer(conn, str(offer_id), t, holds.REDEEMED, by))
    return events, "done"
