"""Bulk profile and stock import: strict, all or nothing, every problem with line, field and
reason; JSON lines, the JSON document form and CSV with cart columns."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.identity.bulk import import_profiles, import_stock
from gateway.identity.importer import LineError, Rows, export_profiles, profile_rows
from gateway.identity.store import IdentityStore
from gateway.resources import data_file
from gateway.store import db

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


def _profiles(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM profiles").fetchone()[0])


def test_one_bad_line_imports_nothing_and_every_problem_is_named(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "profile_id": ""}),
        "{oops",
        json.dumps({**GOOD, "profile_id": "p-2", "consent": {"proximity_offers": "perhaps"}}),
        json.dumps({**GOOD, "profile_id": "p-3", "identifiers": [{"kind": "irk", "value": "12"}]}),
        json.dumps({**GOOD, "profile_id": "p-4", "cart": [{"sku": "x", "price": -1}]}),
        json.dumps({"profile_id": "p-5", "consnet": {"proximity_offers": True}}),
        json.dumps({"profile_id": "p-6", "consent": {"proximity_offers": True, "att": "x"}}),
        json.dumps({"profile_id": "p-7", "cart": [{"sku": "a", "prize": 3}]}),
        json.dumps({"profile_id": "p-8", "identifiers": [{"kind": "ibeacon", "valeu": "x"}]}),
        json.dumps({**GOOD, "identifiers": []}),  # p-1 again
        json.dumps({**GOOD, "profile_id": "p-9"}),  # claims p-1's identifiers
        "",
        json.dumps({**GOOD, "profile_id": "p-10", "identifiers": []}),
    ]
    path = tmp_path / "profiles.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = import_profiles(conn, path)
    assert report.imported == 0 and report.records == 2  # p-1 (line 1) and p-10
    assert _profiles(conn) == 0  # nothing half-imported
    known = "profile_id, consent, language, opted_out, identifiers, cart, segments, "
    known += "declined_skus, preferences"
    assert report.errors == [
        (2, "profile_id", "expected a non-empty string"),
        (3, "", "not JSON (Expecting property name enclosed in double quotes, column 2)"),
        (4, "consent.proximity_offers", "expected true or false"),
        (5, "identifiers.irk", "expected 32 hex digits"),
        (6, "cart[0].price", "expected a non-negative number"),
        (7, "consnet", f"unknown field; did you mean 'consent'? known: {known}"),
        (8, "consent.att", "unknown field; did you mean 'at'? known: proximity_offers, at, source"),
        (
            9,
            "cart[0].prize",
            "unknown field; did you mean 'price'? known: sku, title, price, added_at",
        ),
        (10, "identifiers[0].valeu", "unknown field; did you mean 'value'? known: kind, value"),
        (11, "profile_id", "'p-1' is already on line 1"),
        (
            12,
            "identifiers.ibeacon",
            "'5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:7' also belongs to 'p-1'",
        ),
    ]


def test_a_good_file_imports_and_replaces_each_profile_whole(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    path = tmp_path / "profiles.jsonl"
    path.write_text(
        json.dumps(GOOD)
        + "\n\n"
        + json.dumps({**GOOD, "profile_id": "p-2", "identifiers": []})
        + "\n"
    )
    seen: list[tuple[int, int]] = []
    report = import_profiles(conn, path, lambda done, total: seen.append((done, total)))
    assert (report.imported, report.identifiers, report.cart_items) == (2, 3, 2)
    assert seen[-1] == (6, 6)  # three lines, checked then written
    store = IdentityStore(conn)
    # Identifiers are normalised the way the decoder spells them.
    assert store.resolve("ibeacon", "5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:100:7") == "p-1"
    assert store.resolve("nfc_uid", "04a2246a8b5c80") == "p-1"
    assert [c.sku for c in store.cart("p-1")] == ["978-1"]
    # Re-importing replaces a profile's identifiers and cart instead of piling them up; the
    # profiles not in the file stay.
    path.write_text(
        json.dumps(
            {**GOOD, "identifiers": [{"kind": "nfc_uid", "value": "04aabbccdd0011"}], "cart": []}
        )
        + "\n"
    )
    assert import_profiles(conn, path).imported == 1
    assert store.resolve("nfc_uid", "04a2246a8b5c80") is None
    assert store.resolve("nfc_uid", "04aabbccdd0011") == "p-1"
    assert store.cart("p-1") == [] and store.profile("p-2") is not None


def test_dry_run_checks_everything_and_writes_nothing(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    path = tmp_path / "profiles.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    report = import_profiles(conn, path, dry_run=True)
    assert (report.records, report.imported, report.errors) == (1, 0, [])
    assert _profiles(conn) == 0


def test_the_shipped_demo_document_imports_cleanly(conn: sqlite3.Connection) -> None:
    path = data_file("demo-profiles.json")
    report = import_profiles(conn, path)
    assert report.form == "json" and report.errors == [] and report.imported == 2
    assert report.notes == [
        "the 'stock' list (4 entries) is not read here: gateway stock import reads it"
    ]
    stock = import_stock(conn, path, zones={"aisle-scifi", "aisle-fiction", "aisle-kids"})
    assert stock.errors == [] and stock.imported == 4
    store = IdentityStore(conn)
    alice = store.profile("p-alice-3f9c")
    assert alice is not None and alice.consent_offers
    assert [c.sku for c in store.cart("p-alice-3f9c")] == ["978-0765326355", "978-0441478125"]
    item = store.stock("978-0441478125")
    assert item is not None and (item.quantity, item.zone_id) == (3, "aisle-scifi")


def test_document_errors_name_the_line_each_entry_starts_on(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    doc = {"profiles": [GOOD, {**GOOD, "profile_id": "p-2", "consnet": {}}]}
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(doc, indent=1))
    text = path.read_text().splitlines()
    second = next(i for i, line in enumerate(text, 1) if '"p-2"' in line) - 1  # its '{'
    report = import_profiles(conn, path)
    assert [(line, field) for line, field, _ in report.errors] == [(second, "consnet")]
    path.write_text(json.dumps({"profils": [GOOD]}))
    assert [f for _, f, _ in import_profiles(conn, path).errors] == ["profils"]
    path.write_text(json.dumps([GOOD, GOOD]))  # a bare list is a document too
    assert import_profiles(conn, path).errors == [(1, "profile_id", "'p-1' is already on line 1")]
    path.write_text('{"profiles": [\n' + json.dumps(GOOD) + ",\n]}")
    assert import_profiles(conn, path).errors[0][:2] == (3, "")  # not JSON, where it breaks


def test_csv_with_one_row_per_cart_item(tmp_path: Path, conn: sqlite3.Connection) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text(
        "profile_id,proximity_offers,language,opted_out,ibeacon,irk,cart_sku,cart_title,"
        "cart_price\n"
        "p-1,true,de,false,5f2b7a10-3c4d-4e8f-9a1b-2c3d4e5f6a7b:1:2,,978-1,Book,9.50\n"
        "p-1,,,,,,978-2,Other,\n"
        "p-2,yes,en,no,,ec0234a357c8ad05341010a60a397d9b,,,\n"
    )
    report = import_profiles(conn, path)
    assert report.errors == [] and (report.imported, report.cart_items) == (2, 2)
    store = IdentityStore(conn)
    profile = store.profile("p-1")
    assert profile is not None and profile.language == "de" and profile.consent_offers
    assert sorted((c.sku, c.title, c.price) for c in store.cart("p-1")) == [
        ("978-1", "Book", 9.5),
        ("978-2", "Other", 0.0),
    ]
    assert store.rotating_keys()[1] == [("p-2", bytes.fromhex("ec0234a357c8ad05341010a60a397d9b"))]


@pytest.mark.parametrize(
    ("csv", "errors"),
    [
        (  # the header a shop system exported: 'consent' is not a column here
            "profile_id,consent,cart_sku,cart_title\np-1,true,978-1,Book\n",
            [(1, "column consent")],
        ),
        ("profile_id,proximty_offers\np-1,true\n", [(1, "column proximty_offers")]),
        ("name,proximity_offers\nx,true\n", [(1, "header")]),
        (
            "profile_id,proximity_offers,cart_sku,cart_title,cart_price\n"
            "p-1,true,1,a,1.5\n"
            "p-1,false,2,b,x\n"  # contradicts line 2, and a price that is no number
            "p-2,maybe,,,\n"
            "p-1,,3,c,\n"  # p-1 again after p-2
            "p-3,true,,orphan title,\n"
            ",true,,,\n",
            [
                (3, "cart_price"),
                (4, "proximity_offers"),
                (5, "profile_id"),
                (6, "cart_title"),
                (7, "profile_id"),
            ],
        ),
        (  # a row cut short is not a row of empty cells
            "profile_id,proximity_offers,language\np-1,true\np-2,true,de\n",
            [(2, "language")],
        ),
    ],
)
def test_csv_problems(
    tmp_path: Path, conn: sqlite3.Connection, csv: str, errors: list[tuple[int, str]]
) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text(csv)
    report = import_profiles(conn, path)
    assert [(line, field) for line, field, _ in report.errors] == errors
    assert _profiles(conn) == 0


def test_csv_names_the_column_to_use_and_the_contradicted_line(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text("profile_id,consent\np-1,true\n")
    ((_, _, reason),) = import_profiles(conn, path).errors
    assert (
        reason
        == "unknown column; use proximity_offers (true/false: consent to proximity offers) instead"
    )
    path.write_text("profile_id,language,cart_sku\np-1,de,1\np-1,fr,2\n")
    ((_, _, reason),) = import_profiles(conn, path).errors
    assert reason == "differs from line 2 of the same shopper ('de'); repeat it or leave it empty"


def test_stock_import_is_checked_against_the_map_and_can_replace(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    zones = {"aisle-scifi", "entrance"}
    path = tmp_path / "stock.csv"
    path.write_text(
        "sku,title,quantity,zone_id\n1,a,3,aisle-scifi\n2,b,x,aisle-scifi\n3,c,1,aisle-scfi\n"
        "1,d,1,\n"
    )
    report = import_stock(conn, path, zones=zones)
    assert report.errors == [
        (3, "quantity", "expected a whole number, 0 or more"),
        (4, "zone_id", "'aisle-scfi' is not a zone of the map (zones: aisle-scifi, entrance)"),
        (5, "sku", "'1' is already on line 2"),
    ]
    assert conn.execute("SELECT count(*) FROM stock").fetchone()[0] == 0
    jsonl = tmp_path / "stock.jsonl"
    jsonl.write_text(
        json.dumps({"sku": "1", "title": "a", "quantity": 3, "zone_id": "aisle-scifi"})
        + "\n"
        + json.dumps({"sku": "2", "quantity": 0})
        + "\n"
    )
    assert import_stock(conn, jsonl, zones=zones).imported == 2
    doc = tmp_path / "stock.json"
    doc.write_text(json.dumps({"items": [{"sku": "3", "quantity": 1, "zone": "entrance"}]}))
    assert [f for _, f, _ in import_stock(conn, doc, zones=zones).errors] == ["zone"]
    doc.write_text(json.dumps({"items": [{"sku": "3", "quantity": 1, "zone_id": "entrance"}]}))
    assert import_stock(conn, doc, zones=zones, replace=True).imported == 1
    assert [r[0] for r in conn.execute("SELECT sku FROM stock")] == ["3"]


def test_the_validator_refuses_unknown_fields_for_every_caller(conn: sqlite3.Connection) -> None:
    # The downlink and the seed loader use profile_rows too: a typo is refused there alike.
    with pytest.raises(LineError) as caught:
        profile_rows({**GOOD, "opted_uot": True}, Rows())
    assert caught.value.field == "opted_uot" and "did you mean 'opted_out'?" in caught.value.reason
    with pytest.raises(ValueError, match=r"stock\[0\]\.qty: unknown field"):
        IdentityStore(conn).load_seed({"stock": [{"sku": "1", "qty": 1}]})


def test_export_round_trips(tmp_path: Path, conn: sqlite3.Connection) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps(GOOD)
        + "\n"
        + json.dumps({**GOOD, "profile_id": "p-2", "cart": [], "identifiers": []})
        + "\n"
    )
    import_profiles(conn, path)
    out = io.StringIO()
    assert export_profiles(conn, out) == 2
    exported = tmp_path / "out.jsonl"
    exported.write_text(out.getvalue())
    other = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(other)
    report = import_profiles(other, exported)
    assert report.imported == 2 and report.errors == []
    out2 = io.StringIO()
    export_profiles(other, out2)
    assert out2.getvalue() == out.getvalue()  # export → import → export is stable


def test_an_import_never_moves_an_identifier_to_another_shopper_unasked(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    path = tmp_path / "profiles.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    assert import_profiles(conn, path).imported == 1
    store = IdentityStore(conn)
    card = {"kind": "nfc_uid", "value": "04A2246A8B5C80"}  # p-1's card
    # p-9 claims p-1's card while p-1 is not in the file: refused, nothing written.
    path.write_text(
        json.dumps({**GOOD, "profile_id": "p-0", "identifiers": []})
        + "\n"
        + json.dumps({**GOOD, "profile_id": "p-9", "identifiers": [card]})
        + "\n"
    )
    report = import_profiles(conn, path)
    assert report.imported == 0
    ((line, field, reason),) = report.errors
    assert (line, field) == (2, "identifiers.nfc_uid") and "'p-1'" in reason
    assert store.resolve("nfc_uid", "04a2246a8b5c80") == "p-1"
    assert store.profile("p-0") is None  # all or nothing
    # The file that says so (p-1 re-imported without the card) moves it.
    path.write_text(
        json.dumps({**GOOD, "profile_id": "p-9", "identifiers": [card]})
        + "\n"
        + json.dumps({**GOOD, "identifiers": []})
        + "\n"
    )
    assert import_profiles(conn, path).errors == []
    assert store.resolve("nfc_uid", "04a2246a8b5c80") == "p-9"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_file_that_is_not_utf8_is_refused_line_by_line(
    tmp_path: Path, conn: sqlite3.Connection, suffix: str
) -> None:
    names = ["Jörg", "Günter"]
    if suffix == ".csv":
        text = "profile_id,proximity_offers,cart_sku,cart_title\n" + "".join(
            f"p-{i},true,978-{i},{name}\n" for i, name in enumerate(names)
        )
    else:
        lines = [
            json.dumps({**GOOD, "profile_id": f"p-{i}", "identifiers": [], "cart": [
                {"sku": f"978-{i}", "title": name}]}, ensure_ascii=False)
            for i, name in enumerate(names)
        ]  # fmt: skip
        joined = ("\n" if suffix == ".jsonl" else ",\n").join(lines)
        text = joined + "\n" if suffix == ".jsonl" else "[\n" + joined + "\n]\n"
    path = tmp_path / f"profiles{suffix}"
    path.write_bytes(text.encode("latin-1"))  # what an old spreadsheet saves
    report = import_profiles(conn, path)
    first = 2 if suffix in (".csv", ".json") else 1
    assert [line for line, _, _ in report.errors] == [first, first + 1]
    assert "UTF-8" in report.errors[0][2] and _profiles(conn) == 0
    path.write_bytes(text.encode("utf-8"))
    assert import_profiles(conn, path).errors == []
    titles = {c.title for p in ("p-0", "p-1") for c in IdentityStore(conn).cart(p)}
    assert titles == set(names)


def test_a_semicolon_separated_csv_from_a_german_spreadsheet_imports(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    path = tmp_path / "kunden.csv"
    path.write_text(
        "profile_id;proximity_offers;language;cart_sku;cart_title\np-1;ja;de;978-1;Bücher, alte\n"
    )
    ((line, field, reason),) = import_profiles(conn, path).errors
    assert (line, field) == (2, "proximity_offers") and "yes/no" in reason
    path.write_text(path.read_text().replace(";ja;", ";yes;"))
    assert import_profiles(conn, path).errors == []
    assert [c.title for c in IdentityStore(conn).cart("p-1")] == ["Bücher, alte"]
