"""Rotating ids in the pipeline: an EID shopper is recognised across rotations, an RPA
shopper by IRK, and a shopper without consent is not recognised at all."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.identity.rotating import ah, eid
from gateway.model import Advert, IdentityMatch, OfferDecision, ZoneEvent
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway

T0 = 1_795_424_400.0
ALICE_IK = bytes.fromhex("00112233445566778899aabbccddeeff")
BOB_IK = bytes.fromhex("ffeeddccbbaa99887766554433221100")
CAROL_IRK = bytes.fromhex("ec0234a357c8ad05341010a60a397d9b")


def _gateway(tmp_path: Path, clock: PinnedClock) -> Gateway:
    config = parse_config(f"[gateway]\nstate_dir = '{tmp_path}'\n[sinks]\nstdout = false\n")
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    seed = json.loads(data_file("demo-profiles.json").read_text())
    alice, bob = seed["profiles"]
    alice["identifiers"] = [{"kind": "eid_key", "value": f"{ALICE_IK.hex()}:4:-1000000000"}]
    bob["identifiers"] = [{"kind": "eid_key", "value": f"{BOB_IK.hex()}:4:0"}]  # no consent
    carol = {
        "profile_id": "p-carol-77aa",
        "consent": {"proximity_offers": True},
        "identifiers": [
            {"kind": "irk", "value": CAROL_IRK.hex()},
        ],
        "cart": [{"sku": "978-0553283686", "title": "Hyperion", "price": 10.5, "added_at": "x"}],
    }
    seed["profiles"].append(carol)
    gateway.identity.load_seed(seed)
    # A broken key that got into the cache anyway (an older gateway's import) must not
    # break the others; the importer itself refuses it.
    gateway.conn.execute(
        "INSERT INTO identifiers (kind, value, profile_id) VALUES ('eid_key', 'nothex:4', ?)",
        (carol["profile_id"],),
    )
    gateway.refresh()
    return gateway


def _eid_advert(t: float, ik: bytes, offset: int, receiver: str = "gw-entrance") -> Advert:
    frame = b"\x30\xee" + eid(ik, 4, int(t) + offset)
    return Advert(t, receiver, "5A:00:00:00:00:01", -48, svc={"feaa": frame})


def test_eid_shopper_is_tracked_across_rotations(tmp_path: Path, clock: PinnedClock) -> None:
    gateway = _gateway(tmp_path, clock)
    assert gateway.pipeline.key_problems == [
        "p-carol-77aa: eid_key: non-hexadecimal number found in fromhex() arg at position 0"
    ]
    events = []
    for i in range(80):  # 40 s by the entrance: two and a half 16-second EID windows
        t = T0 + i * 0.5
        events += gateway.process([_eid_advert(t, ALICE_IK, -1_000_000_000)])
    matches = [e for e in events if isinstance(e, IdentityMatch)]
    assert [(m.device, m.profile_id) for m in matches] == [("profile:p-alice-3f9c", "p-alice-3f9c")]
    zone = [(e.kind, e.zone) for e in events if isinstance(e, ZoneEvent)]
    assert zone == [("enter", "entrance"), ("dwell", "entrance")]  # no exit at a rotation
    offers = [e for e in events if isinstance(e, OfferDecision)]
    assert [(o.issued, o.reason) for o in offers] == [(True, "cart_item_in_stock")]


def test_non_consenting_eid_is_not_resolved(tmp_path: Path, clock: PinnedClock) -> None:
    gateway = _gateway(tmp_path, clock)
    events = []
    for i in range(10):
        events += gateway.process([_eid_advert(T0 + i * 0.5, BOB_IK, 0)])
    [match] = [e for e in events if isinstance(e, IdentityMatch)]
    assert match.profile_id is None and match.device.startswith("eddystone_eid:")
    assert [o.reason for o in events if isinstance(o, OfferDecision)] == ["unknown"]


def test_rpa_shopper_is_resolved_by_irk(tmp_path: Path, clock: PinnedClock) -> None:
    gateway = _gateway(tmp_path, clock)
    prand = bytes([0x40 | 0x12, 0x34, 0x56])
    address = ":".join(f"{b:02X}" for b in prand + ah(CAROL_IRK, prand))
    continuity = {0x004C: bytes.fromhex("1005031c5e7a2d")}  # an iPhone's Apple data, no beacon
    events = []
    for i in range(10):
        events += gateway.process(
            [Advert(T0 + i * 0.5, "gw-entrance", address, -50, mfr=continuity)]
        )
    [match] = [e for e in events if isinstance(e, IdentityMatch)]
    assert (match.via, match.profile_id) == ("rpa", "p-carol-77aa")
    [offer] = [e for e in events if isinstance(e, OfferDecision)]
    assert offer.issued and offer.sku == "978-0553283686"
    # A random address of nobody we know is ignored, not tracked.
    stranger = "5B:00:00:00:00:02"
    assert gateway.process([Advert(T0 + 9, "gw-entrance", stranger, -50, mfr=continuity)]) == []


def test_a_declined_shoppers_sightings_are_not_shared_with_peers(
    tmp_path: Path, clock: PinnedClock
) -> None:
    from gateway.sim.walkers import ibeacon_ad

    config = parse_config(f"[gateway]\nstate_dir = '{tmp_path}'\n[sinks]\nstdout = false\n")
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    shared: list[Advert] = []
    gateway.pipeline.share = shared.append
    uuid = "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b"
    alice = ibeacon_ad(uuid, 100, 1, -59)  # consented
    bob = ibeacon_ad(uuid, 100, 2, -59)  # said no: followed under a per-visit alias only
    stranger = ibeacon_ad(uuid, 100, 99, -59)  # nobody we know: anonymous, shared
    for i in range(6):
        t = T0 + i * 0.5
        gateway.process(
            [
                Advert(t, "gw-entrance", "5A:00:00:00:00:01", -50, ad=alice),
                Advert(t, "gw-entrance", "5A:00:00:00:00:02", -50, ad=bob),
                Advert(t, "gw-entrance", "5A:00:00:00:00:03", -50, ad=stranger),
            ]
        )
        gateway.pipeline.on_advert(Advert(t + 0.1, "gw-entrance", "5A:00:00:00:00:02", -50, ad=bob))
    assert {a.address for a in shared} == {"5A:00:00:00:00:01", "5A:00:00:00:00:03"}
    assert any(a.startswith("visit:") for a in gateway.pipeline.visit_aliases.values())


def test_an_opt_out_imported_while_the_daemon_runs_is_honoured_at_once(
    tmp_path: Path, clock: PinnedClock
) -> None:
    """`gateway profiles import` is another process: the daemon sees its commit (SQLite's
    data_version) and stops recognising the shopper who opted out, EID keys included."""
    import sqlite3

    from gateway.identity.bulk import import_profiles

    gateway = _gateway(tmp_path, clock)
    gateway.data_check_s = 0.0  # check at every batch (the daemon: every 2 s)
    first = gateway.process([_eid_advert(T0, ALICE_IK, -1_000_000_000)])
    assert [m.profile_id for m in first if isinstance(m, IdentityMatch)] == ["p-alice-3f9c"]
    alice = json.loads(data_file("demo-profiles.json").read_text())["profiles"][0]
    alice["opted_out"] = True
    alice["identifiers"] = [{"kind": "eid_key", "value": f"{ALICE_IK.hex()}:4:-1000000000"}]
    path = tmp_path / "opt-out.jsonl"
    path.write_text(json.dumps(alice) + "\n")
    other = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    assert import_profiles(other, path).imported == 1
    other.close()
    later = gateway.process([_eid_advert(T0 + 1, ALICE_IK, -1_000_000_000)])
    assert [m for m in later if isinstance(m, IdentityMatch) and m.profile_id] == []
    assert "p-alice-3f9c" not in gateway.pipeline.profiles.values()
