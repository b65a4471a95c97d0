"""Fleet health of fixed beacons: ok, missing, low battery from TLM, slow interval."""

from __future__ import annotations

from gateway.model import EddystoneTLM
from gateway.presence.fleet import Expectation, FleetHealth
from gateway.site.storemap import Anchor

ANCHORS = [
    Anchor("shelf", 1, 1, "eddystone_uid:00112233445566778899:000000000001", "generic-ibeacon"),
    Anchor("door", 5, 1, "ibeacon:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9:1:1", "generic-ibeacon"),
]
EXPECT = {a.id: Expectation(1.0, 2000, 3000) for a in ANCHORS}


def _fleet() -> FleetHealth:
    return FleetHealth(ANCHORS, expectations=EXPECT, missing_after_s=30.0, low_battery_pct=15.0)


def test_status_changes_are_reported_once() -> None:
    fleet = _fleet()
    for t in range(10):
        fleet.seen("shelf", "AA", float(t))
        fleet.seen("door", "BB", float(t))
    assert [(h.beacon, h.status) for h in fleet.check(10.0)] == [("shelf", "ok"), ("door", "ok")]
    assert fleet.check(11.0) == []  # no change, no event
    report = fleet.report("shelf", 11.0)
    assert report.interval_s is not None and abs(report.interval_s - 1.0) < 0.01


def test_one_advert_heard_by_many_receivers_counts_once() -> None:
    fleet = _fleet()
    for t in range(5):
        for receiver_delay in (0.0, 0.004, 0.011):  # same advert, three receivers
            fleet.seen("shelf", "AA", t + receiver_delay)
    interval = fleet.report("shelf", 5.0).interval_s
    assert interval is not None and abs(interval - 1.0) < 0.05


def test_missing_after_silence_and_back() -> None:
    fleet = _fleet()
    fleet.seen("shelf", "AA", 0.0)
    fleet.check(1.0)
    changes = fleet.check(31.5)
    statuses = {h.beacon: h.status for h in changes}
    assert statuses == {"shelf": "missing", "door": "missing"}  # door never heard at all
    fleet.seen("shelf", "AA", 40.0)
    assert [(h.beacon, h.status) for h in fleet.check(40.5)] == [("shelf", "ok")]


def test_low_battery_from_tlm_of_the_same_address() -> None:
    fleet = _fleet()
    fleet.seen("shelf", "AA", 0.0)
    fleet.telemetry("AA", 0.5, EddystoneTLM(2100, 21.0, 10, 100))  # 10 % of 2.0-3.0 V
    fleet.telemetry("ZZ", 0.5, EddystoneTLM(2000, 21.0, 10, 100))  # unknown address: ignored
    [health] = [h for h in fleet.check(1.0) if h.beacon == "shelf"]
    assert health.status == "low_battery"
    assert health.battery_mv == 2100 and health.battery_pct is not None
    assert abs(health.battery_pct - 10.0) < 1e-9 and health.temperature == 21.0


def test_slow_beacon_when_most_adverts_are_not_heard() -> None:
    fleet = _fleet()
    for t in range(0, 60, 6):  # heard every 6 s, nominal 1 s
        fleet.seen("door", "BB", float(t))
    assert {h.beacon: h.status for h in fleet.check(55.0)}["door"] == "slow"
