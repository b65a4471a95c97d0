"""Stock holds and pickup tasks: the last copy promised once, through real replays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import PinnedClock, SystemClock
from gateway.config.sections import parse_config
from gateway.model import HoldEvent, OfferDecision, PickupTaskEvent, PipelineEvent
from gateway.offers import holds, pickup
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_pipeline
from gateway.runtime.sources import replay_source
from gateway.sources.replay import Rebase
from gateway.store import db
from tests.conftest import STORE_MORNING

SKU = "978-0441478125"
ALICE_UID = "04a2246a8b5c80"
CAROL_UID = "04c0ffee000002"
DAN_UID = "04d00d00000003"
VALIDITY = 600


def _profile(pid: str, uid: str, consent: bool = True, language: str = "en") -> dict[str, Any]:
    return {
        "profile_id": pid,
        "language": language,
        "consent": {"proximity_offers": consent, "at": "2026-09-01T10:00:00Z", "source": "app"},
        "identifiers": [{"kind": "nfc_uid", "value": uid}],
        "cart": [
            {"sku": SKU, "title": "The Left Hand", "price": 9.5, "added_at": "2026-11-01T10:00:00Z"}
        ],
    }


SEED = {
    "profiles": [
        _profile("p-alice", ALICE_UID),
        _profile("p-carol", CAROL_UID, language="de"),
        _profile("p-dan", DAN_UID, consent=False),
    ],
    "stock": [{"sku": SKU, "title": "The Left Hand", "quantity": 1, "zone_id": "aisle-scifi"}],
}


def _gateway(state: Path, clock: PinnedClock) -> Gateway:
    config = parse_config(
        f"[gateway]\nstate_dir = '{state}'\n[sinks]\nstdout = false\n"
        f"[offers.pickup_discount]\nvalidity_s = {VALIDITY}\n"
        "[offers.limits]\nquiet_hours = []\n"
        "[nfc.touchpoints.scifi-shelf]\nzone = 'aisle-scifi'\noffer_on_tap = true\n"
    )
    return Gateway(config, quiet_sink=True, clock=clock)


def _tap(t: float, uid: str) -> str:
    return json.dumps({"t": t, "kind": "nfc", "reader": "scifi-shelf", "uid": uid})


def _replay(gateway: Gateway, trace: Path) -> list[PipelineEvent]:
    seen: list[PipelineEvent] = []
    gateway.work.sinks.insert(0, lambda events, _queued: seen.extend(events))
    asyncio.run(run_pipeline(gateway, [replay_source(gateway, trace, 0.0, Rebase.keep())]))
    return seen


def test_the_last_copy_is_promised_once_and_again_when_the_hold_lapses(
    tmp_path: Path, clock: PinnedClock
) -> None:
    t0 = STORE_MORNING
    trace = tmp_path / "last-copy.jsonl"
    trace.write_text(
        "\n".join(
            [
                _tap(t0, ALICE_UID),  # Alice: offered the one copy, which is set aside
                _tap(t0 + 30, CAROL_UID),  # Carol saved it too: held for Alice
                _tap(t0 + 60, DAN_UID),  # Dan said no: nothing about holds reaches him
                _tap(t0 + VALIDITY + 100, CAROL_UID),  # Alice's offer lapsed: Carol's turn
            ]
        )
        + "\n"
    )
    state = tmp_path / "state"
    gateway = _gateway(state, clock)
    gateway.identity.load_seed(SEED)
    gateway.refresh()
    events = _replay(gateway, trace)
    decisions = [(e.profile_id, e.reason) for e in events if isinstance(e, OfferDecision)]
    assert decisions == [
        ("p-alice", "cart_item_in_stock"),
        ("p-carol", "held_for_other"),
        (None, "unknown"),  # Dan said no: not even recognised
        ("p-carol", "cart_item_in_stock"),
    ]
    hold_events = [e for e in events if isinstance(e, HoldEvent)]
    assert [(h.kind, h.profile_id, h.reason) for h in hold_events] == [
        ("placed", "p-alice", "offer_issued"),
        ("released", "p-alice", "expired"),
        ("placed", "p-carol", "offer_issued"),
    ]
    assert hold_events[1].t == t0 + VALIDITY  # ended at the offer's expiry, replay or not
    assert all(h.message is None for h in hold_events)
    tasks = [(e.action, e.code_hint, e.language) for e in events if isinstance(e, PickupTaskEvent)]
    assert [a for a, _, _ in tasks] == ["opened", "expired", "opened"]
    assert tasks[2][2] == "de" and len(tasks[0][1]) == 4
    why = gateway.offers.why("p-carol")
    assert [r.reason for r in why] == ["held_for_other", "cart_item_in_stock"]
    outbox_types = gateway.outbox.types()
    assert outbox_types.count("hold.placed") == 2 and outbox_types.count("hold.released") == 1
    assert outbox_types.count("task.opened") == 2 and outbox_types.count("task.expired") == 1
    queued = {str(r[0]) for r in gateway.conn.execute("SELECT event_id FROM outbox")}
    rows = gateway.conn.execute("SELECT * FROM holds ORDER BY hold_id").fetchall()
    gateway.close()

    # The same trace again on the same state (a restart re-reading it): same ids, nothing new.
    again = _gateway(state, clock)
    replayed = _replay(again, trace)
    assert not [e for e in replayed if isinstance(e, OfferDecision | HoldEvent)]
    assert {str(r[0]) for r in again.conn.execute("SELECT event_id FROM outbox")} == queued
    assert again.conn.execute("SELECT * FROM holds ORDER BY hold_id").fetchall() == rows
    assert [h.sku for h in holds.list_holds(again.conn, active_only=True)] == [SKU]
    again.close()


def _issue(gateway: Gateway, t: float, uid: str) -> list[PipelineEvent]:
    from gateway.model import Tap

    return gateway.process([Tap(t, "scifi-shelf", bytes.fromhex(uid))])


def test_redemption_sells_the_unit_and_closes_the_task(tmp_path: Path, clock: PinnedClock) -> None:
    gateway = _gateway(tmp_path, clock)
    gateway.identity.load_seed(SEED)
    gateway.refresh()
    t0 = STORE_MORNING
    [offer] = [e for e in _issue(gateway, t0, ALICE_UID) if isinstance(e, OfferDecision)]
    assert offer.code is not None
    with db.transaction(gateway.conn):
        redemption, outcome = gateway.offers.redeem_code(offer.code, t0 + 60, "counter")
        assert redemption is not None and outcome == "redeemed"
    ended = gateway.offers.take_events()  # the counter's redemption ends the hold
    assert [type(e).__name__ for e in ended] == ["HoldEvent", "PickupTaskEvent"]
    hold, task = ended
    assert isinstance(hold, HoldEvent) and hold.reason == "redeemed" and hold.quantity == 0
    assert isinstance(task, PickupTaskEvent) and task.action == "collected"
    assert gateway.identity.stock(SKU).quantity == 0  # type: ignore[union-attr]
    assert pickup.tasks(gateway.conn) == []
    gateway.close()


def test_staff_not_found_withdraws_and_tells_the_shopper(
    tmp_path: Path, clock: PinnedClock
) -> None:
    gateway = _gateway(tmp_path, clock)
    gateway.identity.load_seed(SEED)
    gateway.refresh()
    t0 = STORE_MORNING
    [offer] = [e for e in _issue(gateway, t0, CAROL_UID) if isinstance(e, OfferDecision)]
    [task] = pickup.tasks(gateway.conn)
    assert task.code_hint == (offer.code or "")[-4:] and task.zone == "aisle-scifi"
    assert "p-carol" not in json.dumps(task) and ALICE_UID not in json.dumps(task)
    with db.transaction(gateway.conn):
        events, outcome = pickup.act(gateway.conn, task.task_id, "ready", t0 + 30, "mia")
        assert outcome == "done" and [e.action for e in events] == ["ready"]  # type: ignore[union-attr]
        events, outcome = pickup.act(gateway.conn, task.task_id, "not_found", t0 + 90, "mia")
    assert outcome == "done"
    hold, closed = events
    assert isinstance(hold, HoldEvent) and hold.reason == "not_found" and hold.quantity == 0
    assert hold.message is not None and "gilt nicht mehr" in hold.message  # her language
    assert isinstance(closed, PickupTaskEvent) and closed.by == "mia"
    with db.transaction(gateway.conn):
        assert pickup.act(gateway.conn, task.task_id, "collected", t0 + 99, "mia")[1] == (
            "already_not_found"
        )
        # her code no longer redeems: the copy was never there
        assert gateway.offers.redeem_code(offer.code or "", t0 + 120, "counter")[1] == "withdrawn"
    gateway.close()


def test_a_stock_document_below_the_holds_withdraws_the_newest(
    tmp_path: Path, clock: PinnedClock
) -> None:
    seed = json.loads(json.dumps(SEED))
    seed["stock"][0]["quantity"] = 2
    gateway = _gateway(tmp_path, clock)
    gateway.identity.load_seed(seed)
    gateway.refresh()
    t0 = STORE_MORNING
    _issue(gateway, t0, ALICE_UID)
    _issue(gateway, t0 + 10, CAROL_UID)
    assert holds.held(gateway.conn, SKU, t0 + 20) == 2
    with db.transaction(gateway.conn):
        gateway.conn.execute("UPDATE stock SET quantity = 1 WHERE sku = ?", (SKU,))
        events = pickup.reconcile_stock(gateway.conn, t0 + 20)
    withdrawn = [e for e in events if isinstance(e, HoldEvent)]
    assert [(h.profile_id, h.reason) for h in withdrawn] == [("p-carol", "withdrawn_stock")]
    assert withdrawn[0].message and withdrawn[0].message.startswith("Entschuldigung")
    assert holds.held(gateway.conn, SKU, t0 + 20) == 1
    # a shopper who withdrew consent meanwhile is not told
    with db.transaction(gateway.conn):
        gateway.conn.execute("UPDATE profiles SET consent_offers = 0 WHERE profile_id = 'p-alice'")
        gateway.conn.execute("UPDATE stock SET quantity = 0 WHERE sku = ?", (SKU,))
        [hold, task] = pickup.reconcile_stock(gateway.conn, t0 + 30)
    assert isinstance(hold, HoldEvent) and hold.profile_id == "p-alice" and hold.message is None
    assert isinstance(task, PickupTaskEvent) and task.action == "withdrawn"
    gateway.close()


def test_the_command_line_lists_stock_holds_and_tasks(
    tmp_path: Path, clock: PinnedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    gateway = _gateway(tmp_path / "state", clock)
    gateway.identity.load_seed(SEED)
    gateway.refresh()
    # The list commands read the system's wall clock: the offer (and its hold) must be live
    # at the real now, whatever day the suite runs on (the pinned clock is in 2031).
    t0 = SystemClock().wall()
    _issue(gateway, t0, ALICE_UID)
    gateway.close()
    config = tmp_path / "gateway.toml"
    config.write_text(f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n")
    capsys.readouterr()
    assert main(["stock", "list", "--json", "--config", str(config)]) == 0
    [item] = [i for i in json.loads(capsys.readouterr().out) if i["sku"] == SKU]
    assert (item["quantity"], item["held"], item["available"]) == (1, 1, 0)
    assert main(["holds", "list", "--json", "--config", str(config)]) == 0
    [hold] = json.loads(capsys.readouterr().out)
    assert hold["sku"] == SKU and hold["status"] == "active" and "profile_id" not in hold
    assert main(["tasks", "list", "--json", "--config", str(config)]) == 0
    [task] = json.loads(capsys.readouterr().out)
    assert (
        task["status"] == "open" and task["zone"] == "aisle-scifi" and len(task["code_hint"]) == 4
    )
    assert "p-alice" not in json.dumps(task) and "device" not in task
    assert main(["tasks", "list", "--config", str(config)]) == 0
    assert "The Left Hand" in capsys.readouterr().out
    gateway = _gateway(tmp_path / "state", clock)
    _issue(gateway, t0 + 30, CAROL_UID)  # the last copy is Alice's
    gateway.close()
    assert main(["offers", "why", "p-carol", "--config", str(config)]) == 0
    assert "suppressed (held_for_other: every copy on the shelf" in capsys.readouterr().out
    # a stock import with no copy left withdraws the hold (newest first) and says so
    stock = tmp_path / "stock.jsonl"
    stock.write_text(
        json.dumps({"sku": SKU, "title": "The Left Hand", "quantity": 0, "zone_id": "aisle-scifi"})
        + "\n"
    )
    assert main(["stock", "import", str(stock), "--config", str(config)]) == 0
    assert "1 holds withdrawn" in capsys.readouterr().out
    assert main(["holds", "list", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_backend_stock_document_withdraws_holds_and_apologises(
    tmp_path: Path, clock: PinnedClock
) -> None:
    from gateway.sync import downlink

    gateway = _gateway(tmp_path, clock)
    gateway.identity.load_seed(SEED)
    gateway.refresh()
    t0 = clock.wall()
    _issue(gateway, t0, CAROL_UID)  # Carol (German) holds the one copy
    document = {
        "family": "stock",
        "kind": "delta",
        "version": 1,
        "store": "demo-bookstore",
        "data": {"items": [{"sku": SKU, "title": "The Left Hand", "quantity": 0}]},
    }
    assert downlink.apply_document(gateway.conn, document) == "applied"
    gateway.withdraw_over_held(t0 + 5)  # what the daemon does after a stock document
    types = gateway.outbox.types()
    assert "hold.released" in types and "task.withdrawn" in types
    released = [
        json.loads(r[0])["data"]
        for r in gateway.conn.execute("SELECT body FROM outbox WHERE type = 'hold.released'")
    ]
    assert [(r["reason"], r["quantity"], r["held"]) for r in released] == [
        ("withdrawn_stock", 0, 0)
    ]
    pushes = [json.loads(x) for x in (tmp_path / "pushes.jsonl").read_text().splitlines()]
    assert [p["profile_id"] for p in pushes] == ["p-carol", "p-carol"]  # offer, then apology
    assert pushes[1]["message"].startswith("Entschuldigung") and pushes[1]["code"] == ""
    gateway.close()
