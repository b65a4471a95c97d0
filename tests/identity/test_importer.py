"""Bulk profile import: good lines in, bad lines reported with line, field and reason."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from gateway.identity.importer import import_profiles
from gateway.identity.store import IdentityStore

GOOD = {
    "profile_id": "p-1",
    "consent": {"proximity_offers": True, "at": "2026-10-01T00:00:00Z", "source": "app"},
    "identifiers": [
        {"kind": "ibeacon", "value": "5F2B7A10-3C4D-4E8F-9A1B-2C3D4E5F6A7B:0100:7"},
        {"kind": "nfc_uid", "value": "04A2246A8B5C80"},
        {"kind": "eid_key", "value": "00112233445566778899aabbccddeeff:10"},
    ],
    "cart": [{"sku": "978-1", "title": "Book", "price": 9.9, "added_at": "2026-11-01"}],
}


def test_jsonl_import_keeps_good_lines_and_reports_bad_ones(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "profile_id": ""}),
        "{oops",
        json.dumps({**GOOD, "profile_id": "p-2", "consent": {"proximity_offers": "perhaps"}}),
        json.dumps({**GOOD, "profile_id": "p-3", "identifiers": [{"kind": "irk", "value": "12"}]}),
        json.dumps({**GOOD, "profile_id": "p-4", "cart": [{"sku": "x", "price": -1}]}),
        json.dumps({**GOOD, "profile_id": "p-5", "identifiers": []}),
    ]
    path = tmp_path / "profiles.jsonl"
    path.write_text("\n".join(lines) + "\n")
    seen: list[tuple[int, int]] = []
    report = import_profiles(conn, path, lambda done, total: seen.append((done, total)))
    assert report.imported == 2
    assert report.errors == [
        (2, "profile_id", "expected a non-empty string"),
        (3, "", "not JSON (Expecting property name enclosed in double quotes)"),
        (4, "consent.proximity_offers", "expected true or false"),
        (5, "identifiers.irk", "expected 32 hex digits"),
        (6, "cart[0].price", "expected a non-negative number"),
    ]
    assert seen[-1] == (7, 7)
    store = IdentityStore(conn)
    # Identifiers are normalised the way the decoder spells them.
    assert store.resolve("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:7") == "p-1"
    assert store.resolve("nfc_uid", "04a2246a8b5c80") == "p-1"
    assert [c.sku for c in store.cart("p-1")] == ["978-1"]
    # Re-importing replaces a profile's identifiers instead of piling them up.
    path.write_text(
        json.dumps({**GOOD, "identifiers": [{"kind": "nfc_uid", "value": "04aabbccdd0011"}]}) + "\n"
    )
    import_profiles(conn, path)
    assert store.resolve("nfc_uid", "04a2246a8b5c80") is None
    assert store.resolve("nfc_uid", "04aabbccdd0011") == "p-1"


def test_csv_import(tmp_path: Path, conn: sqlite3.Connection) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text(
        "profile_id,proximity_offers,language,opted_out,ibeacon,irk\n"
        "p-1,true,de,false,5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:1:2,\n"
        "p-2,yes,en,no,,ec0234a357c8ad05341010a60a397d9b\n"
        "p-3,true,en,false,bad,\n"
        ",true,en,false,,\n"
    )
    report = import_profiles(conn, path)
    assert report.imported == 2
    assert [(line, field) for line, field, _ in report.errors] == [
        (4, "identifiers.ibeacon"),
        (5, "profile_id"),
    ]
    store = IdentityStore(conn)
    profile = store.profile("p-1")
    assert profile is not None and profile.language == "de" and profile.consent_offers
    assert store.rotating_keys()[1] == [("p-2", bytes.fromhex("ec0234a357c8ad05341010a60a397d9b"))]


def test_import_command(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(json.dumps(GOOD) + "\n{bad\n")
    (tmp_path / "gw.toml").write_text("[gateway]\nstate_dir = 'st'\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "profiles",
            "import",
            str(tmp_path / "p.jsonl"),
            "--config",
            str(tmp_path / "gw.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1  # some lines were rejected (the good one is in)
    assert "imported 1 profiles, rejected 1 lines" in result.stdout
    assert f"{tmp_path / 'p.jsonl'}:2: line: not JSON" in result.stderr
    assert "100 %" in result.stderr  # the progress bar finished


def test_export_round_trips(tmp_path: Path, conn: sqlite3.Connection) -> None:
    import io

    from gateway.identity.importer import export_profiles

    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "profile_id": "p-2", "cart": []}) + "\n"
    )
    import_profiles(conn, path)
    out = io.StringIO()
    assert export_profiles(conn, out) == 2
    exported = tmp_path / "out.jsonl"
    exported.write_text(out.getvalue())
    other = sqlite3.connect(":memory:", isolation_level=None)
    from gateway.store import db

    db.migrate(other)
    report = import_profiles(other, exported)
    assert report.imported == 2 and report.errors == []
    out2 = io.StringIO()
    export_profiles(other, out2)
    assert out2.getvalue() == out.getvalue()  # export → import → export is stable
