"""Downlink: sealed, versioned, all-or-nothing documents; authenticated commands."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.identity.store import IdentityStore
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.store import db
from gateway.sync import signed
from gateway.sync.downlink import DocumentRejected, apply_document, stored_version
from gateway.sync.signed import NonceCache, Rejected, sign, verify
from tests.support.broker import Broker
from tests.support.fakebluez import wait_for

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def stock_doc(version: int, kind: str = "delta", **data: Any) -> dict[str, Any]:
    return {"family": "stock", "kind": kind, "version": version, "data": data}


def _reason(result: dict[str, Any] | Rejected) -> str | None:
    return result.reason if isinstance(result, Rejected) else None


def test_signature_is_required_and_checked() -> None:
    doc = stock_doc(1, items=[])
    assert isinstance(verify(KEY, json.dumps(sign(KEY, doc)).encode()), dict)
    assert verify(KEY, json.dumps(doc).encode()) == Rejected("unsigned", "no 'sig'")
    forged = sign(b"not-the-store-key", doc)
    assert _reason(verify(KEY, json.dumps(forged).encode())) == "bad_signature"
    tampered = sign(KEY, doc) | {"version": 2}
    assert _reason(verify(KEY, json.dumps(tampered).encode())) == "bad_signature"
    assert _reason(verify(KEY, b"{oops")) == "invalid_json"
    assert _reason(verify(b"", json.dumps(sign(KEY, doc)).encode())) == "no_downlink_key"


def _stock(conn: sqlite3.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT sku, quantity FROM stock")}


def test_versions_apply_in_order(conn: sqlite3.Connection) -> None:
    snapshot = stock_doc(
        5, "snapshot", items=[{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]
    )
    assert apply_document(conn, snapshot) == "applied"
    assert apply_document(conn, snapshot) == "duplicate"  # redelivery is a no-op
    assert (
        apply_document(conn, stock_doc(6, items=[{"sku": "a", "quantity": 0}], remove=["b"]))
        == "applied"
    )
    assert _stock(conn) == {"a": 0}
    with pytest.raises(DocumentRejected) as stale:
        apply_document(conn, stock_doc(4, items=[{"sku": "z", "quantity": 9}]))
    assert stale.value.reason == "stale_version"
    with pytest.raises(DocumentRejected) as gap:
        apply_document(conn, stock_doc(8, items=[{"sku": "z", "quantity": 9}]))
    assert gap.value.reason == "version_gap"
    assert _stock(conn) == {"a": 0}
    # A newer snapshot heals a gap.
    assert (
        apply_document(conn, stock_doc(9, "snapshot", items=[{"sku": "c", "quantity": 3}]))
        == "applied"
    )
    assert _stock(conn) == {"c": 3}


def test_a_bad_document_changes_nothing(conn: sqlite3.Connection) -> None:
    apply_document(conn, stock_doc(1, "snapshot", items=[{"sku": "a", "quantity": 1}]))
    bad = stock_doc(2, items=[{"sku": "b", "quantity": 5}, {"sku": "c", "quantity": -1}])
    with pytest.raises(DocumentRejected) as info:
        apply_document(conn, bad)
    assert info.value.reason == "invalid_payload" and "data.items[1].quantity" in info.value.detail
    assert _stock(conn) == {"a": 1}  # b was valid but is not applied alone
    assert conn.execute("SELECT version FROM doc_versions").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"family": "prices", "kind": "delta", "version": 1, "data": {}}, "unknown_family"),
        ({"family": "stock", "kind": "patch", "version": 1, "data": {}}, "invalid_payload"),
        ({"family": "stock", "kind": "delta", "version": "1", "data": {}}, "invalid_payload"),
        ({"family": "stock", "kind": "delta", "version": 1, "data": []}, "invalid_payload"),
        (
            {
                "family": "profiles",
                "kind": "delta",
                "version": 1,
                "data": {"profiles": [{"profile_id": "p", "consent": {"proximity_offers": "yes"}}]},
            },
            "invalid_payload",
        ),
    ],
)
def test_malformed_documents_are_rejected(
    conn: sqlite3.Connection, doc: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DocumentRejected) as info:
        apply_document(conn, doc)
    assert info.value.reason == reason


def test_profile_delta_replaces_identifiers_and_cart(
    conn: sqlite3.Connection, seeded: IdentityStore
) -> None:
    doc = {
        "family": "profiles",
        "kind": "delta",
        "version": 1,
        "data": {
            "profiles": [
                {
                    "profile_id": "p-bob-81d2",
                    "consent": {
                        "proximity_offers": True,
                        "at": "2026-11-23T09:00Z",
                        "source": "app",
                    },
                    "identifiers": [{"kind": "nfc_uid", "value": "04AABBCCDDEEFF"}],
                    "cart": [{"sku": "978-0142410370", "title": "Matilda", "price": 8.0}],
                }
            ],
            "remove": ["p-alice-3f9c"],
        },
    }
    assert apply_document(conn, doc) == "applied"
    bob = seeded.profile("p-bob-81d2")
    assert bob is not None and bob.consent_offers
    assert seeded.resolve("nfc_uid", "04aabbccddeeff") == "p-bob-81d2"
    assert seeded.resolve("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:2") is None
    assert [c.sku for c in seeded.cart("p-bob-81d2")] == ["978-0142410370"]
    assert seeded.profile("p-alice-3f9c") is None and seeded.cart("p-alice-3f9c") == []
    # A delta that does not name Bob's cart or identifiers leaves them alone (issue 17).
    language_only = {
        "family": "profiles",
        "kind": "delta",
        "version": 2,
        "data": {"profiles": [{"profile_id": "p-bob-81d2", "language": "de"}]},
    }
    assert apply_document(conn, language_only) == "applied"
    bob = seeded.profile("p-bob-81d2")
    assert bob is not None and bob.language == "de"
    assert [c.sku for c in seeded.cart("p-bob-81d2")] == ["978-0142410370"]
    assert seeded.resolve("nfc_uid", "04aabbccddeeff") == "p-bob-81d2"
    emptied = {**language_only, "version": 3}
    emptied["data"] = {"profiles": [{"profile_id": "p-bob-81d2", "cart": []}]}
    assert apply_document(conn, emptied) == "applied"
    assert seeded.cart("p-bob-81d2") == []  # named, and empty: emptied
    typo = {**language_only, "version": 4, "data": {"profile": []}}
    with pytest.raises(DocumentRejected, match=r"data\.profile: unknown field"):
        apply_document(conn, typo)


def test_a_delta_cannot_hand_one_shoppers_identifier_to_another(
    conn: sqlite3.Connection, seeded: IdentityStore
) -> None:
    owner = seeded.resolve("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:2")
    assert owner is not None
    beacon = {"kind": "ibeacon", "value": "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:2"}
    others = [p for p in ("p-alice-3f9c", "p-bob-81d2") if p != owner]
    taker = {"profile_id": others[0], "identifiers": [beacon]}
    doc = {"family": "profiles", "kind": "delta", "version": 1, "data": {"profiles": [taker]}}
    with pytest.raises(DocumentRejected) as caught:
        apply_document(conn, doc)
    assert caught.value.reason == "identifier_conflict" and owner in caught.value.detail
    assert seeded.resolve("ibeacon", beacon["value"]) == owner  # nothing changed
    assert stored_version(conn, "profiles") == 0
    # Named in the same delta without it, the owner gives it up: the move is explicit.
    doc["data"] = {"profiles": [taker, {"profile_id": owner, "identifiers": []}]}
    assert apply_document(conn, doc) == "applied"
    assert seeded.resolve("ibeacon", beacon["value"]) == others[0]


def test_commands_must_be_unique_until_they_expire() -> None:
    nonces = NonceCache(size=2)
    cmd = {"command": "flush", "issued_at": 1000.0, "expires_at": 1300.0, "nonce": "nonce-001"}
    assert signed.check_command(cmd, nonces, now=1010.0) == ""
    assert signed.check_command(cmd, nonces, now=1011.0) == "replayed"
    assert signed.check_command(cmd | {"command": "rm -rf"}, nonces, 1000.0) == "unknown_command"
    assert signed.check_command({"command": "flush"}, nonces, 1000.0) == "invalid_payload"
    assert signed.check_command(cmd | {"nonce": "n1"}, nonces, 1000.0) == "invalid_payload"
    assert signed.check_command(cmd | {"args": []}, nonces, 1000.0) == "invalid_payload"
    # A nonce is forgotten once its command has expired (it could not run again anyway).
    assert signed.check_command(cmd | {"nonce": "nonce-002"}, nonces, now=1400.0) == ""
    assert "nonce-001" not in nonces.seen


def test_spent_nonces_outlive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "command-nonces.json"
    cmd = {"command": "flush", "issued_at": 1000.0, "expires_at": 1300.0, "nonce": "nonce-001"}
    assert signed.check_command(cmd, NonceCache(path=path), now=1010.0) == ""
    assert path.stat().st_mode & 0o077 == 0  # readable by the gateway's user only
    restarted = NonceCache(path=path)
    assert signed.check_command(cmd, restarted, now=1020.0) == "replayed"
    # Expired nonces are dropped as before; an unreadable file starts empty, never fails.
    assert signed.check_command(cmd | {"nonce": "nonce-002"}, restarted, now=1400.0) == ""
    assert list(NonceCache(path=path).seen) == ["nonce-002"]
    path.write_text("{not json", encoding="utf-8")
    assert NonceCache(path=path).seen == {}


def test_envelopes_bind_store_gateway_and_time() -> None:
    """Issue 16 item 3: signatures that bind what they authorise."""
    binding = signed.Binding("demo-bookstore", "gw-demo-1", max_validity_s=86400.0)
    now = 1_900_000_000.0
    doc = signed.seal(KEY, stock_doc(3, items=[]), store="demo-bookstore", now=now, valid_s=3600)

    def refused(document: dict[str, Any], at: float = now, **kw: Any) -> str | None:
        result = signed.check_envelope(document, binding, at, **kw)
        return None if result is None else result.reason

    assert refused(doc) is None
    assert refused({**doc, "store": "other-store"}) == "wrong_store"
    assert refused({**doc, "gateway": "gw-demo-2"}) == "wrong_gateway"
    assert refused({**doc, "gateway": "gw-demo-1"}) is None
    assert refused(doc, now + 3601) == "expired"
    assert refused(doc, now + 3601, held_version=3) is None  # what we hold: a duplicate
    assert refused(doc, now - 301) == "not_yet_valid"
    assert refused({**doc, "expires_at": now + 2 * 86400}) == "invalid_validity"
    assert refused({**doc, "issued_at": float("nan")}) == "unbound"  # never "never expires"
    assert refused({**doc, "issued_at": {"$date": 1}}) == "unbound"
    assert refused(stock_doc(3, items=[]) | {"sig": "x"}) == "unbound"  # an old, unbound one
    assert refused({**doc, "extra": True}) == "unknown_field"
    command = signed.seal(
        KEY,
        {"command": "flush", "nonce": "nonce-123"},
        store="demo-bookstore",
        gateway="gw-demo-1",
        now=now,
        valid_s=7200,
    )
    assert refused(command, command=True) == "invalid_validity"  # commands: at most 1 h
    # A command names its gateway: one signed for "*" would run on every gateway of the store.
    assert refused({**command, "gateway": "*"}, command=True) == "wrong_gateway"
    # The signature covers the binding: moving a document to another store breaks it.
    moved = json.dumps({**doc, "store": "other-store"}).encode()
    assert _reason(verify(KEY, moved)) == "bad_signature"


async def test_downlink_over_the_broker(tmp_path: Path, clock: PinnedClock) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
        f"downlink_key = '{KEY.hex()}'\nbackoff_max_s = 0.3\n"
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    stop = asyncio.Event()
    run = asyncio.create_task(run_gateway(gateway, [lambda inlet: stop.wait()], stop))
    base = "storegate/v1/demo-bookstore"
    mine = f"{base}/gw-demo-1"
    try:
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="backend", protocol=aiomqtt.ProtocolVersion.V5
        ) as backend:
            for topic in (f"{mine}/resync", f"{mine}/cmd-resp/#", f"{mine}/events/gateway"):
                await backend.subscribe(topic, qos=1)
            await wait_for(lambda: gateway.uplink is not None and gateway.uplink.stats.subscribed)
            inbox: list[aiomqtt.Message] = []

            async def collect() -> None:
                async for message in backend.messages:
                    inbox.append(message)

            collector = asyncio.create_task(collect())

            def on(topic: str) -> list[Any]:
                out: list[Any] = []
                for m in inbox:
                    if str(m.topic) == topic:
                        body = json.loads(m.payload)
                        out.extend(
                            body
                            if topic.endswith("/gateway") and isinstance(body, list)
                            else [body]
                        )
                return out

            async def send(topic: str, doc: dict[str, Any], sealed: bool = True, **kw: Any) -> None:
                gw = "gw-demo-1" if "command" in doc else "*"
                valid = 300.0 if "command" in doc else 86400.0
                bound = signed.seal(
                    KEY, doc, store="demo-bookstore", gateway=gw, now=clock.wall(), valid_s=valid
                )
                body = bound if sealed else doc
                await backend.publish(topic, json.dumps(body).encode(), qos=1, **kw)

            items = [{"sku": "x", "quantity": 4, "zone_id": "aisle-kids"}]
            await send(f"{base}/down/stock", stock_doc(1, "snapshot", items=items))
            await wait_for(lambda: len(on(f"{mine}/events/gateway")) == 1)
            applied = on(f"{mine}/events/gateway")[0]
            assert applied["type"] == "com.storegate.gateway.downlink_applied"
            assert applied["data"]["version"] == 1
            assert "aisle-kids" in gateway.offers._stocked_zones  # caches refreshed

            await send(f"{base}/down/stock", stock_doc(2, items=[]), sealed=False)
            await send(
                f"{base}/down/stock",
                sign(b"someone-else-key", stock_doc(2, items=[])),
                sealed=False,
            )
            await send(f"{base}/down/stock", stock_doc(7, items=[{"sku": "x", "quantity": 0}]))
            await wait_for(lambda: len(on(f"{mine}/events/gateway")) == 4)
            rejected = on(f"{mine}/events/gateway")[1:]
            assert [e["type"] for e in rejected] == ["com.storegate.gateway.downlink_rejected"] * 3
            assert [e["data"]["reason"] for e in rejected] == [
                "unsigned",
                "bad_signature",
                "version_gap",
            ]
            await wait_for(lambda: on(f"{mine}/resync") == [{"family": "stock", "have": 1}])
            held = gateway.identity.stock("x")
            assert held is not None and held.quantity == 4

            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
            props.ResponseTopic = f"{mine}/cmd-resp/reply-42"
            props.CorrelationData = b"req-42"
            command = {"command": "diagnose", "nonce": "nonce-abc-1"}
            await send(f"{mine}/cmd/diagnose", command, properties=props)
            await send(f"{mine}/cmd/diagnose", command, properties=props)  # replayed
            await wait_for(lambda: len(on(f"{mine}/cmd-resp/reply-42")) == 2)
            first, second = on(f"{mine}/cmd-resp/reply-42")
            assert first["ok"] and "outbox_depth" in first["result"]
            assert not second["ok"] and second["reason"] == "replayed"
            replies = [m for m in inbox if str(m.topic) == f"{mine}/cmd-resp/reply-42"]
            # paho's Properties sets its attributes at run time: mypy does not know them
            assert getattr(replies[0].properties, "CorrelationData", None) == b"req-42"
            collector.cancel()
    finally:
        stop.set()
        with suppress(asyncio.CancelledError):
            await run
        broker.stop()


def test_campaign_rules_as_data(tmp_path: Path, clock: PinnedClock) -> None:
    from gateway.model import OfferDecision, ZoneEvent, ZoneEventKind

    config = parse_config(f"[gateway]\nstate_dir = '{tmp_path}'\n[sinks]\nstdout = false\n")
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    seed = json.loads(
        (Path(__file__).parents[2] / "gateway" / "data" / "demo-profiles.json").read_text()
    )
    seed["profiles"][0]["language"] = "de-AT"
    gateway.identity.load_seed(seed)
    gateway.refresh()
    doc = {
        "family": "campaigns",
        "kind": "snapshot",
        "version": 1,
        "data": {
            "pickup_discount": {
                "campaign": "pickup-winter",
                "percent": 15,
                "messages": {"de": "{title}: {percent} % Rabatt"},
            }
        },
    }
    assert apply_document(gateway.conn, doc) == "applied"
    bad = {**doc, "version": 2, "data": {"pickup_discount": {"percent": 150}}}
    with pytest.raises(DocumentRejected) as info:
        apply_document(gateway.conn, bad)
    assert (
        info.value.reason == "invalid_payload"
        and "data.pickup_discount.percent" in info.value.detail
    )
    gateway.refresh()
    assert gateway.offers.rule.campaign == "pickup-winter" and gateway.offers.rule.percent == 15

    t = 1795424400.0
    event = ZoneEvent(ZoneEventKind.ENTER, "ibeacon:x", "entrance", t, t, 0.9)
    with db.transaction(gateway.conn):
        decision = gateway.offers.evaluate(event, "ibeacon:x", "p-alice-3f9c")
    assert isinstance(decision, OfferDecision) and decision.issued
    assert decision.percent == 15 and decision.campaign == "pickup-winter"
    assert decision.message == "The Left Hand of Darkness: 15 % Rabatt"  # de-AT → de template
    gateway.close()
    # The synced rule survives a restart.
    again = Gateway(config, quiet_sink=True, clock=clock)
    assert again.offers.rule.campaign == "pickup-winter"
    again.close()


def test_downlink_profiles_are_validated_like_imports(
    conn: sqlite3.Connection, seeded: IdentityStore
) -> None:
    doc = {
        "family": "profiles",
        "kind": "delta",
        "version": 1,
        "data": {
            "profiles": [
                {
                    "profile_id": "p-dana",
                    "consent": {"proximity_offers": True},
                    "identifiers": [
                        {"kind": "ibeacon", "value": "5F2B7A10-3C4D-4E8F-9A1B-2C3D4E5F6A7B:0100:07"}
                    ],
                }
            ]
        },
    }
    assert apply_document(conn, doc) == "applied"
    # Stored as the decoder spells it, so a sighting resolves.
    assert seeded.resolve("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:7") == "p-dana"
    bad = {**doc, "version": 2}
    bad["data"] = {
        "profiles": [{"profile_id": "p-eve", "identifiers": [{"kind": "irk", "value": "12"}]}]
    }
    with pytest.raises(DocumentRejected) as info:
        apply_document(conn, bad)
    assert info.value.reason == "invalid_payload"
    assert info.value.detail == "data.profiles[0].identifiers.irk: expected 32 hex digits"
    assert seeded.profile("p-eve") is None


def test_stock_is_checked_against_the_map_like_an_import(conn: sqlite3.Connection) -> None:
    zones = frozenset({"aisle-scifi", "entrance"})
    typo = stock_doc(1, items=[{"sku": "tea-004", "quantity": 1, "zone_id": "aisle-scfi"}])
    with pytest.raises(DocumentRejected) as caught:
        apply_document(conn, typo, zones)
    assert caught.value.reason == "invalid_payload"
    assert "data.items[0].zone_id: 'aisle-scfi' is not a zone of the map" in caught.value.detail
    assert conn.execute("SELECT count(*) FROM stock").fetchone()[0] == 0
    good = stock_doc(1, items=[{"sku": "tea-004", "quantity": 1, "zone_id": "aisle-scifi"}])
    assert apply_document(conn, good, zones) == "applied"
