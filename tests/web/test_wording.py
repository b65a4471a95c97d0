"""The console's event sentences (gateway.web.wording), built from the very envelopes the
gateway sends upstream: store-local time across both daylight-saving changes, titles and the
last four characters of codes, readers and zones by name, no JSON whatever the data."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.identity.store import pseudonymise
from gateway.model import (
    AdapterHealth,
    AdapterState,
    BeaconHealth,
    GatewayNotice,
    NoticeKind,
    OfferDecision,
    Redemption,
    TapEvent,
    ZoneEvent,
    ZoneEventKind,
)
from gateway.sync.envelopes import EnvelopeFactory
from gateway.web.wording import Wording, code_tail, short_device

BERLIN = ZoneInfo("Europe/Berlin")
FACTORY = EnvelopeFactory("store-1", "gw-1", partial(pseudonymise, b"k" * 16))
ZONES = {"aisle-fiction": "Fiction", "entrance": "Entrance", "pickup-counter": "Pickup counter"}
TITLES = {"978-0441478125": "The Left Hand of Darkness"}


def at(text: str) -> float:
    """An instant given in UTC: '2026-03-29T00:59:30'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def wording(tz: ZoneInfo = BERLIN) -> Wording:
    return Wording(
        tz,
        ZONES,
        {"counter-reader": "pickup-counter"},
        lambda sku, _profile: TITLES.get(sku),
    )


def body(event: Any) -> dict[str, Any]:
    envelope = FACTORY.envelope(event)
    assert envelope is not None
    # through JSON, as the browser and /api/feed get it
    return dict(json.loads(json.dumps(envelope.body)))


def zone(kind: ZoneEventKind, zone_id: str, t: float, entered: float | None = None) -> ZoneEvent:
    return ZoneEvent(kind, "ibeacon:abc:1:2", zone_id, t, entered or t, 0.8)


def test_a_zone_event_reads_as_a_sentence_in_store_time() -> None:
    t = at("2026-07-01T08:42:05")  # 10:42 in Berlin (CEST)
    line = wording().line(body(zone(ZoneEventKind.ENTER, "aisle-fiction", t)))
    device = pseudonymise(b"k" * 16, "ibeacon:abc:1:2")
    assert line.clock == "10:42"
    assert line.when == "2026-07-01 10:42:05 CEST"
    assert line.text == f"Shopper dev-…{device[-4:]} entered Fiction"
    assert line.stream == "zone" and line.tone == ""
    left = wording().line(body(zone(ZoneEventKind.EXIT, "aisle-fiction", t)))
    assert left.text.endswith("left Fiction")
    stayed = wording().line(
        body(zone(ZoneEventKind.DWELL, "aisle-fiction", t, at("2026-07-01T08:40:00")))
    )
    assert stayed.text.endswith("has stayed in Fiction since 10:40")
    unknown = wording().line(body(zone(ZoneEventKind.ENTER, "back-office", t)))
    assert unknown.text.endswith("entered back-office")  # not on the map: its id


@pytest.mark.parametrize(
    ("utc", "clock", "when"),
    [
        # spring forward, 29 March 2026: 02:00 CET is 03:00 CEST
        ("2026-03-29T00:59:30", "01:59", "2026-03-29 01:59:30 CET"),
        ("2026-03-29T01:00:30", "03:00", "2026-03-29 03:00:30 CEST"),
        # fall back, 25 October 2026: 02:00–03:00 happens twice; the zone tells them apart
        ("2026-10-25T00:30:00", "02:30", "2026-10-25 02:30:00 CEST"),
        ("2026-10-25T01:30:00", "02:30", "2026-10-25 02:30:00 CET"),
        ("2026-10-25T02:30:00", "03:30", "2026-10-25 03:30:00 CET"),
    ],
)
def test_store_time_across_daylight_saving(utc: str, clock: str, when: str) -> None:
    line = wording().line(body(zone(ZoneEventKind.ENTER, "entrance", at(utc))))
    assert (line.clock, line.when) == (clock, when)


@pytest.fixture
def box_in_tokyo() -> Iterator[None]:
    """The server's own zone is neither UTC nor the store's."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("box_in_tokyo")
def test_the_store_zone_not_the_servers() -> None:
    t = at("2026-12-03T09:15:00")
    assert wording().line(body(zone(ZoneEventKind.ENTER, "entrance", t))).clock == "10:15"
    new_york = wording(ZoneInfo("America/New_York"))
    assert new_york.line(body(zone(ZoneEventKind.ENTER, "entrance", t))).when == (
        "2026-12-03 04:15:00 EST"
    )


def offer(**changes: Any) -> OfferDecision:
    t = at("2026-12-03T09:00:15")
    fields: dict[str, Any] = {
        "t": t,
        "device": "ibeacon:abc:1:2",
        "profile_id": "p-alice-3f9c",
        "campaign": "pickup",
        "trigger": "enter:entrance",
        "issued": True,
        "reason": "cart_item_in_stock",
        "sku": "978-0441478125",
        "title": "The Left Hand of Darkness",
        "code": "PK-BX52-6SEV",
        "expires_at": t + 7200,
        "percent": 10,
        "offer_id": "o-1",
        "decision_id": "d-1",
    }
    return OfferDecision(**(fields | changes))


def test_an_offer_names_the_item_the_discount_and_the_codes_last_four() -> None:
    line = wording().line(body(offer()))
    assert line.text == (
        "Offer to shopper p-alice-3f9c on entering Entrance: 10 % off “The Left Hand of "
        "Darkness”, code …6SEV, valid until 12:00"
    )
    assert line.tone == "issued" and line.clock == "10:00"
    assert "PK-BX52" not in line.text  # the whole code is the shopper's, not the screen's
    # a title the store does not know: the item code; an offer valid into tomorrow: the date
    late = offer(sku="000-1", t=at("2026-12-03T22:30:00"), expires_at=at("2026-12-04T08:00:00"))
    text = wording().line(body(late)).text
    assert "10 % off item 000-1" in text and "valid until 4 Dec 09:00" in text


def test_no_offer_says_why_in_words() -> None:
    quiet = offer(issued=False, reason="quiet_hours", trigger="dwell:aisle-fiction")
    line = wording().line(body(quiet))
    assert line.text == "No offer to shopper p-alice-3f9c after staying in Fiction: quiet hours"
    assert line.tone == "suppressed"
    stranger = offer(issued=False, reason="unknown", profile_id=None)
    assert "No offer to shopper dev-…" in wording().line(body(stranger)).text
    assert "not a known shopper" in wording().line(body(stranger)).text
    newer = offer(issued=False, reason="holdout_group")  # a reason this console predates
    assert wording().line(body(newer)).text.endswith(": holdout group")


def test_taps_and_redemptions_name_the_reader_and_its_zone() -> None:
    t = at("2026-12-03T09:01:49")
    tap = TapEvent(t, "counter-reader", "pickup-counter", "dev-c137528f6ee84cea", "p-alice", True)
    assert wording().line(body(tap)).text == (
        "Tap at reader counter-reader (Pickup counter): shopper p-alice, card verified"
    )
    anonymous = TapEvent(t, "counter-reader", None, "dev-c137528f6ee84cea", None, False)
    assert wording().line(body(anonymous)).text == (
        "Tap at reader counter-reader (Pickup counter): unknown card dev-…4cea"
    )
    nameless = TapEvent(t, "", None, "dev-c137528f6ee84cea", None, False)
    assert wording().line(body(nameless)).text.startswith("Tap at an unnamed reader:")
    redeemed = Redemption(t, "p-alice", "o-1", "PK-BX52-6SEV", "978-0441478125", "counter-reader")
    line = wording().line(body(redeemed))
    assert line.text == (
        "Shopper p-alice redeemed code …6SEV for “The Left Hand of Darkness” at reader "
        "counter-reader (Pickup counter)"
    )


def test_beacons_radios_and_head_office() -> None:
    t = at("2026-12-03T09:05:00")
    missing = BeaconHealth(t, "bcn-kids", "missing", t - 120, None, None, None, None)
    line = wording().line(body(missing))
    assert line.text == "Beacon bcn-kids is missing: last heard at 10:03" and line.tone == "warn"
    low = BeaconHealth(t, "bcn-kids", "low_battery", t, 1.0, 2650, 12.0, 21.0)
    assert wording().line(body(low)).text == "Beacon bcn-kids needs a new battery (12 %, 2650 mV)"
    ok = BeaconHealth(t, "bcn-kids", "ok", t, 1.0, None, None, None)
    assert wording().line(body(ok)).text == "Beacon bcn-kids is working"
    radio = AdapterHealth(t, "hci0", AdapterState.RESTARTING, "no adverts for 30 s", 2)
    assert wording().line(body(radio)).text == (
        "Radio hci0 is restarting (no adverts for 30 s; 2 restarts so far)"
    )
    refused = GatewayNotice(
        t, NoticeKind.DOWNLINK_REJECTED, "profiles", {"reason": "bad_signature", "detail": "x"}
    )
    assert wording().line(body(refused)).text == (
        "Update from head office refused: profiles, bad signature (x)"
    )
    dropped = GatewayNotice(t, NoticeKind.OUTBOX_DROPPED, "outbox", {"zone": 12, "beacon": 3})
    assert wording().line(body(dropped)).text == (
        "Unsent events dropped to make room: beacon 3, zone 12"
    )


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": 7, "time": "yesterday", "data": []},
        {"type": "com.storegate.offer.issued", "time": "2026-12-03T09:00:00Z", "data": {}},
        {"type": "com.storegate.offer.issued", "data": {"percent": "ten", "code": {"a": 1}}},
        {"type": "com.storegate.zone.enter", "time": "2026-12-03T09:00:00", "data": None},
        {"type": "com.storegate.beacon.health", "data": {"status": "low_battery"}},
        {"type": "com.storegate.nfc.tap", "data": {"reader": ["x"], "profile_id": 5}},
        {"type": "com.storegate.identity.match", "subject": "dev-0123456789abcdef", "data": {}},
        {"type": "com.storegate.gateway.adapter", "time": "9999-12-31T23:59:59Z", "data": {}},
    ],
)
def test_odd_events_say_less_never_fail_and_never_show_json(event: dict[str, Any]) -> None:
    line = wording().line(event)
    assert line.text and not any(c in line.text for c in "{}[]\"'")
    assert line.clock == "--:--" or line.clock[2] == ":"


def test_short_forms() -> None:
    assert short_device("dev-c933eb06aeb2bc75") == "dev-…bc75"
    assert short_device("dev-ab") == "dev-ab"
    assert code_tail("PK-BX52-6SEV") == "…6SEV" and code_tail("--") == ""


def test_holds_and_pickup_tasks_read_as_sentences() -> None:
    from gateway.model import HoldEvent, PickupTaskEvent

    t = at("2026-06-01T08:00:00")
    placed = HoldEvent(
        t, "placed", "hd-1", "of-1", "p-alice-3f9c", "978-0441478125", "offer", t + 600, 1, 1
    )
    line = wording().line(body(placed))
    assert line.text == (
        "“The Left Hand of Darkness” set aside for shopper p-alice-3f9c (0 left for others)"
    )
    gone = HoldEvent(
        t, "released", "hd-1", "of-1", "p-alice-3f9c", "978-0441478125", "expired", t, 1, 0
    )
    assert wording().line(body(gone)).text.endswith(": the offer expired (1 left for others)")
    opened = PickupTaskEvent(
        t, "opened", "tk-1", "978-0441478125", "The Left Hand of Darkness", "aisle-fiction",
        "6SEV", "en", "gateway",
    )  # fmt: skip
    assert wording().line(body(opened)).text == (
        "New pickup of “The Left Hand of Darkness” (code …6SEV): fetch it from Fiction"
    )
    ready = PickupTaskEvent(
        t, "ready", "tk-1", "978-0441478125", "The Left Hand of Darkness", "aisle-fiction",
        "6SEV", "en", "Maria",
    )  # fmt: skip
    assert wording().line(body(ready)).text == (
        "Pickup of “The Left Hand of Darkness” (code …6SEV) is ready at the counter (by Maria)"
    )
