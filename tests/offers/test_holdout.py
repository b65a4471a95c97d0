"""Holdouts and attribution end to end: the demo shopper held out (no push, reason `holdout`,
counted by `gateway report`) or exposed (her redemption attributed), stable groups, pickup
facts from the backend attributed once, bad facts refused with their place."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.offers.holdout import holdout_bucket, in_holdout
from gateway.ops.demo import run_demo
from gateway.store import db
from gateway.sync.downlink import DocumentRejected, apply_document
from tests.conftest import STORE_MORNING

ALICE = "p-alice-3f9c"
KEY = bytes.fromhex("6c6f63616c2d64656d6f2d6b65792d30")


def _campaigns(state: Path, version: int = 1, **settings: Any) -> None:
    conn = db.connect(state / "gateway.db")
    try:
        document = {"family": "campaigns", "kind": "snapshot", "version": version}
        apply_document(conn, document | {"data": {"pickup_discount": settings}})
    finally:
        conn.close()


def _demo(state: Path) -> tuple[Path, str]:
    out = io.StringIO()
    _summary, gateway = run_demo(0, state, out, clock=PinnedClock(STORE_MORNING))
    gateway.close()
    config = state / "config.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n')
    return config, out.getvalue()


def _gateway(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def _pickups(state: Path, version: int, facts: list[Any], kind: str = "delta") -> str:
    conn = db.connect(state / "gateway.db")
    try:
        document = {"family": "pickups", "kind": kind, "version": version}
        return apply_document(conn, document | {"data": {"pickups": facts}})
    finally:
        conn.close()


def test_demo_shopper_held_out_gets_no_push_and_is_counted(tmp_path: Path) -> None:
    _campaigns(tmp_path, holdout_percent=100)
    config, output = _demo(tmp_path)
    assert "PUSH " not in output
    assert not (tmp_path / "pushes.jsonl").exists() or not (tmp_path / "pushes.jsonl").read_text()
    why = _gateway("offers", "why", ALICE, "--config", str(config))
    assert "held out (holdout: eligible, but in the campaign's control group" in why
    assert "issued (" not in why
    report = json.loads(_gateway("report", "--config", str(config), "--json"))
    campaign = report["campaigns"]["pickup-discount"]
    assert (campaign["exposed"], campaign["holdout"]) == (0, 1)
    # she still came to the counter and tapped her card: her outcome is observed
    assert campaign["redeemed_holdout"] == 1 and campaign["redeemed_exposed"] == 0
    assert campaign["uplift"]["absolute"] is None  # nobody exposed: no comparison yet
    assert report["funnel"]["held_out"] == 1 and report["funnel"]["offered"] == 0
    text = _gateway("report", "--config", str(config))
    assert "held out" in text and "pickup-discount (holdout 100 %)" in text


def test_demo_shopper_exposed_and_her_redemption_attributed(tmp_path: Path) -> None:
    _campaigns(tmp_path, holdout_percent=0)
    config, output = _demo(tmp_path)
    assert output.count("PUSH ") == 1
    report = json.loads(_gateway("report", "--config", str(config), "--json"))
    campaign = report["campaigns"]["pickup-discount"]
    assert (campaign["exposed"], campaign["holdout"]) == (1, 0)
    assert campaign["redeemed_exposed"] == 1 and campaign["redeemed_holdout"] == 0
    assert campaign["variants"]["base"]["exposed"] == 1
    conn = db.connect(tmp_path / "gateway.db")
    try:
        kind = conn.execute("SELECT outcome_kind FROM exposures").fetchall()
        assert kind == [("redemption",)]
        funnel = report["funnel"]
        assert funnel["entered"] >= 1 and funnel["offered"] == 1 and funnel["redeemed"] == 1
        assert funnel["eligible"] >= funnel["offered"]
        # the heat map and the occupancy were aggregated from the positions and zone events
        assert conn.execute("SELECT sum(seconds) FROM heat_cells").fetchone()[0] > 10
        assert conn.execute("SELECT count(*) FROM zone_occupancy").fetchone()[0] >= 1
        # a pickup fact for her after the redemption: recorded, but the exposure converts once
        t = conn.execute("SELECT t FROM exposures").fetchone()[0]
    finally:
        conn.close()
    fact = {"profile_id": ALICE, "sku": "978-0441478125", "t": t + 3600}
    assert _pickups(tmp_path, 1, [fact]) == "applied"
    report = json.loads(_gateway("report", "--config", str(config), "--json"))
    assert report["campaigns"]["pickup-discount"]["redeemed_exposed"] == 1


def test_groups_are_stable_keyed_and_proportionate() -> None:
    shoppers = [f"p-{i}" for i in range(20000)]
    held = [p for p in shoppers if in_holdout(KEY, "c1", p, 10)]
    assert 0.09 < len(held) / len(shoppers) < 0.11
    # the same shopper, the same group, on any gateway sharing the key
    assert held == [p for p in shoppers if in_holdout(KEY, "c1", p, 10)]
    # raising the share only moves shoppers into the holdout
    assert set(held) <= {p for p in shoppers if in_holdout(KEY, "c1", p, 30)}
    # independent per campaign and per key
    other = {p for p in shoppers if in_holdout(KEY, "c2", p, 10)}
    assert len(other & set(held)) < 0.02 * len(shoppers)
    assert holdout_bucket(KEY, "c1", "p-1") != holdout_bucket(b"x" * 16, "c1", "p-1")
    assert not in_holdout(KEY, "c1", "p-1", 0) and in_holdout(KEY, "c1", "p-1", 100)


def test_pickup_facts_attribute_to_the_preceding_decision_once(tmp_path: Path) -> None:
    _campaigns(tmp_path, holdout_percent=100)
    _demo(tmp_path)
    conn = db.connect(tmp_path / "gateway.db")
    try:
        conn.execute("UPDATE exposures SET outcome_id = NULL, outcome_kind = NULL")
        t = conn.execute("SELECT t FROM exposures").fetchone()[0]
    finally:
        conn.close()
    before = {"profile_id": ALICE, "sku": "978-0441478125", "t": t - 60}
    late = {"profile_id": ALICE, "sku": "978-0441478125", "t": t + 8 * 86400}
    fact = {"profile_id": ALICE, "sku": "978-0441478125", "t": t + 86400}
    assert _pickups(tmp_path, 1, [before, late]) == "applied"
    assert _pickups(tmp_path, 2, [fact, fact]) == "applied"  # a repeated fact: once
    assert _pickups(tmp_path, 3, [fact], kind="snapshot") == "applied"
    conn = db.connect(tmp_path / "gateway.db")
    try:
        rows = conn.execute("SELECT outcome_kind, outcome_t FROM exposures").fetchall()
        assert rows == [("pickup", t + 86400)]
        assert conn.execute("SELECT count(*) FROM outcomes WHERE kind = 'pickup'").fetchone() == (
            3,
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("fact", "where"),
    [
        ({"profile_id": ALICE, "sku": "x"}, "data.pickups[0].t"),
        ({"profile_id": ALICE, "sku": "x", "t": 1.7e12}, "data.pickups[0].t"),
        ({"profile_id": ALICE, "sku": "x", "t": True}, "data.pickups[0].t"),
        ({"profile_id": "", "sku": "x", "t": 1.7e9}, "data.pickups[0].profile_id"),
        ({"profile_id": ALICE, "sku": "x", "t": 1.7e9, "price": 3}, "data.pickups[0].price"),
        ("p-1", "data.pickups[0]"),
    ],
)
def test_bad_pickup_facts_are_refused_with_their_place(
    tmp_path: Path, fact: Any, where: str
) -> None:
    with pytest.raises(DocumentRejected) as caught:
        _pickups(tmp_path, 1, [fact])
    assert caught.value.reason == "invalid_payload" and caught.value.detail.startswith(where)


def test_holdout_settings_are_validated_where_they_are_written() -> None:
    config = parse_config("[offers.pickup_discount]\nholdout_percent = 20\n")
    assert config.offers.pickup_discount.holdout_percent == 20
    config = parse_config(
        "[offers.campaigns.vip]\nholdout_percent = 50\nattribution_window_days = 3\n"
    )
    assert config.offers.campaigns["vip"].attribution_window_days == 3
    for bad, key in (
        ("holdout_percent = 101", "holdout_percent"),
        ("holdout_percent = -1", "holdout_percent"),
        ("attribution_window_days = 0", "attribution_window_days"),
        ("variants.a.percent = 95", "variants.a.percent"),
    ):
        with pytest.raises(Exception, match=key.replace(".", r"\.")):
            parse_config(f"[offers.pickup_discount]\n{bad}\n")


def test_attribution_rows_are_forgotten_with_the_decisions(tmp_path: Path) -> None:
    _campaigns(tmp_path, holdout_percent=100)
    _demo(tmp_path)
    conn = db.connect(tmp_path / "gateway.db")
    try:
        counts = [
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("exposures", "outcomes", "funnel_marks")
        ]
        assert all(counts), counts
        removed = db.purge_expired(conn, STORE_MORNING + 400 * 86400, 30 * 86400)
        assert {"exposures", "outcomes", "funnel_marks"} <= set(removed)
        # the aggregates (no person in them) stay for the insights
        assert conn.execute("SELECT count(*) FROM heat_cells").fetchone()[0] > 0
    finally:
        conn.close()


def test_report_names_a_bad_since(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "report",
            "--config",
            str(config),
            "--since",
            "last week",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--since 'last week': give a store-local date (2026-11-01) or days back (7d)" in (
        done.stderr
    )
    empty = json.loads(_gateway("report", "--config", str(config), "--since", "7d", "--json"))
    assert empty["campaigns"]["pickup-discount"]["exposed"] == 0
    assert set(empty["funnel"]) == {
        "window_passers",
        "entered",
        "dwelled_at_item_zone",
        "eligible",
        "offered",
        "held_out",
        "redeemed",
    }


def test_a_variant_prices_and_words_the_offer_and_is_on_record(conn: sqlite3.Connection) -> None:
    from gateway.offers.engine import OfferEngine
    from gateway.offers.rules import PickupDiscountSection, VariantSection
    from gateway.sync.envelopes import EnvelopeFactory
    from tests.offers.test_campaigns import NO_LIMITS, _decide, _seed

    store = _seed(conn)
    only = {"bold": VariantSection(percent=25, message="{title}: {percent} % off, today only")}
    rule = PickupDiscountSection(variants=only)
    engine = OfferEngine(conn, store, [rule], "Europe/Berlin", KEY, NO_LIMITS)
    decision = _decide(engine, "entrance", ALICE)[0]
    assert decision.issued and decision.variant == "bold" and decision.percent == 25
    assert decision.message == "The Left Hand of Darkness: 25 % off, today only"
    row = conn.execute("SELECT grp, variant FROM exposures").fetchall()
    assert row == [("exposed", "bold")]
    envelope = EnvelopeFactory("s", "g", lambda d: "dev-0123456789abcdef").envelope(decision)
    assert envelope is not None and envelope.body["data"]["variant"] == "bold"
    # the kill switch: the campaign's own offer, no variant named
    engine.set_campaigns([PickupDiscountSection(variants=only, optimise=False)])
    carol = _decide(engine, "entrance", "p-carol-77aa")[0]
    assert carol.issued and carol.variant == "" and carol.percent == 10
