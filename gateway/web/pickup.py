"""The pickup page of the staff console: open pickup tasks, their ages, when each shopper
will reach the counter, and the three staff actions (gateway.offers.pickup).

  /pickup                    the page (server-rendered; `pickup.js` refreshes it)
  /pickup.js                 its script (no inline script: the console's CSP)
  /api/pickup                GET: {"tasks": [...], "counter": zone id}
  /api/pickup/{task_id}      POST {"action": "ready" | "not_found" | "collected", "by": name}

A task shows the item, its title, its shelf zone, the code's last four characters and the
shopper's language; never a name, a profile id or a device. The estimate: straight-line
distance from her last position to the counter zone over a walking speed (`WALK_MPS`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.offers import pickup
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.status import StatusView
from gateway.store import db
from gateway.web.access import Access, escape, fill

WALK_MPS = 1.0  # a shopper's pace through aisles, slower than open-floor walking
STAFF_NAME = re.compile(r"[\w .\-]{1,32}")


@dataclass(slots=True)
class PickupBoard:
    gateway: Gateway
    access: Access
    view: StatusView  # where shoppers are, and the pipeline's time

    def now(self) -> float:
        # holds live in the pipeline's time; a replay may run ahead of the wall clock
        return max(self.view.wall, self.view.trace_time())

    def counter(self) -> str:
        """The counter: the zone of the touchpoint that redeems, else a zone named so."""
        touchpoints = self.gateway.config.nfc.touchpoints.values()
        zone = next((t.zone for t in touchpoints if t.redeem and t.zone), None)
        ids = [z.id for z in self.gateway.store_map.zones]
        return zone or next((i for i in ids if "counter" in i), "")

    def tasks(self) -> list[dict[str, Any]]:
        now = self.now()
        counter_id = self.counter()
        counter = next((z for z in self.gateway.store_map.zones if z.id == counter_id), None)
        target = None if counter is None else counter.shape.centroid
        devices = {d["id"]: d for d in self.view.devices()}  # by pseudonym, as tasks keep them
        rows = []
        for task in pickup.tasks(self.gateway.conn):
            eta: float | None = None
            where = devices.get(task.device)
            if where is not None and counter_id in where["zones"]:
                eta = 0.0
            elif where is not None and target is not None:
                eta = math.hypot(where["x"] - target.x, where["y"] - target.y) / WALK_MPS
            rows.append(
                {
                    "task_id": task.task_id,
                    "sku": task.sku,
                    "title": task.title,
                    "zone": task.zone,
                    "code_hint": task.code_hint,
                    "language": task.language,
                    "status": task.status,
                    "age_s": round(max(now - task.opened_at, 0.0)),
                    "eta_s": None if eta is None else round(eta),  # None: not in the shop now
                    "updated_by": task.updated_by,
                }
            )
        return rows

    async def page(self, request: web.Request) -> web.Response:
        session = self.access.session(request)
        rows = "".join(_row_html(t) for t in self.tasks())
        body = fill(
            data_file("console/pickup.html").read_text(encoding="utf-8"),
            csrf=escape(session.csrf if session else ""),
            store=escape(self.gateway.store_map.name),
            counter=escape(self.counter()),
            rows=rows or '<tr class="empty"><td colspan="7">No open pickup tasks.</td></tr>',
        )
        return web.Response(
            text=body, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def script(self, request: web.Request) -> web.Response:
        text = data_file("console/pickup.js").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="application/javascript")

    async def api_tasks(self, request: web.Request) -> web.Response:
        return web.json_response({"tasks": self.tasks(), "counter": self.counter()})

    async def api_act(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        try:
            body = await request.json()
            action = str(body["action"])
            by = str(body.get("by") or "console").strip()
        except (ValueError, KeyError, TypeError):
            return _error(400, 'expected {"action": "ready" | "not_found" | "collected"}')
        if not STAFF_NAME.fullmatch(by):
            return _error(400, "by: a staff name of 1 to 32 letters, digits, spaces, . or -")
        if action not in pickup.STAFF_ACTIONS:
            return _error(400, f"action: one of {', '.join(pickup.STAFF_ACTIONS)}")
        with db.transaction(self.gateway.conn):
            events, outcome = pickup.act(self.gateway.conn, task_id, action, self.now(), by)
            if events:
                self.gateway.notify(events)  # into the outbox with this transaction
        if outcome != "done":
            return _error(404 if outcome == "unknown_task" else 409, outcome)
        return web.json_response({"outcome": outcome, "task_id": task_id, "action": action})


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _row_html(task: dict[str, Any]) -> str:
    """One task as a table row, every value encoded (the script builds the same)."""
    eta = task["eta_s"]
    eta_text = "not in the shop" if eta is None else "at the counter" if eta < 5 else f"{eta} s"
    cells = [
        f"<td>{escape(task['title'])}<br><small>{escape(task['sku'])}</small></td>",
        f"<td>{escape(task['zone'])}</td>",
        f'<td class="code">…{escape(task["code_hint"])}</td>',
        f"<td>{escape(task['language'])}</td>",
        f"<td>{_age(task['age_s'])}</td>",
        f"<td>{escape(eta_text)}</td>",
        "<td>"
        + "".join(
            f'<button data-action="{a}">{a.replace("_", " ")}</button>'
            for a in pickup.STAFF_ACTIONS
        )
        + "</td>",
    ]
    return (
        f'<tr data-task="{escape(task["task_id"])}" data-status="{escape(task["status"])}">'
        + "".join(cells)
        + "</tr>"
    )


def _age(seconds: int) -> str:
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min"


def add_pickup(app: web.Application, board: PickupBoard) -> None:
    r = app.router
    r.add_get("/pickup", board.page)
    r.add_get("/pickup.js", board.script)
    r.add_get("/api/pickup", board.api_tasks)
    r.add_post("/api/pickup/{task_id}", board.api_act)
