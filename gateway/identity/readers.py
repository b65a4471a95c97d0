"""Data files → documents, each with the line it starts on: JSON lines, one JSON document, CSV.

The three forms of docs/data-formats.md, for profiles and for stock:

* JSON lines (`.jsonl`, `.ndjson`): one document per line; blank lines are skipped.
* One JSON document (`.json`): `{"profiles": [...], "stock": [...]}` (the shipped
  `demo-profiles.json`), a bare list of documents, or for stock `{"items": [...]}` (the
  downlink's form). Each document is reported at the line where it starts.
* CSV (`.csv`): a header row, then one row per record. For profiles, a shopper with several
  saved items takes one row per item (`cart_sku`, `cart_title`, `cart_price`,
  `cart_added_at`); the rows of one shopper are consecutive and repeat (or leave empty) the
  shopper's own columns.

Every column and field is known: an unknown one is an error naming it. Readers only shape
records; `importer.profile_rows` / `stock_row` validate them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from gateway.identity.importer import (
    IDENTIFIER_KINDS,
    LineError,
    parse_bool,
    unknown_field,
)

Form = Literal["jsonl", "json", "csv"]
FORMS: tuple[Form, ...] = ("jsonl", "json", "csv")
Record = tuple[int, Any]  # (line, document or LineError)

# A whole-document file is parsed in memory: beyond this, use JSON lines.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024

PROFILE_COLUMNS = (
    "profile_id",
    "proximity_offers",
    "consent_at",
    "consent_source",
    "language",
    "opted_out",
    "segments",
    "declined_skus",
    "max_offers_per_day",
    *IDENTIFIER_KINDS,
)
CART_COLUMNS = ("cart_sku", "cart_title", "cart_price", "cart_added_at")
STOCK_COLUMNS = ("sku", "title", "quantity", "zone_id")
# Column names people reach for first, and what they mean here.
COLUMN_HINTS = {
    "consent": "proximity_offers (true/false: consent to proximity offers)",
    "id": "profile_id",
    "sku": "cart_sku (one row per saved item)",
    "title": "cart_title",
    "price": "cart_price",
    "qty": "quantity",
    "zone": "zone_id",
}


def detect_form(path: Path) -> Form:
    """The form a file is in, by its suffix; other suffixes: '[' or a multi-line object
    starting the file means one document, else JSON lines."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        return "json"
    first = head.split("\n", 1)[0]
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return "json" if head.startswith("{") else "jsonl"
    return "jsonl"


def read_records(
    path: Path,
    form: Form,
    what: Literal["profiles", "stock"],
    notes: list[str] | None = None,
) -> Iterator[Record]:
    """(line, document or LineError) for every record of the file. `notes` receives what
    the file holds besides (a seed document's stock when importing profiles)."""
    undecodable = _undecodable_lines(path)
    if undecodable:
        # Read as anything but UTF-8, "Günter" would be imported as "G�nter": refuse
        # the file instead, naming every line that is not UTF-8 (nothing is imported).
        for number in undecodable:
            yield (
                number,
                LineError(
                    "", "not UTF-8 text (save the file as UTF-8, e.g. 'CSV UTF-8' in a spreadsheet)"
                ),
            )
        return
    if form == "jsonl":
        yield from _json_lines(path)
    elif form == "json":
        yield from _json_document(path, what, notes if notes is not None else [])
    elif what == "profiles":
        yield from _csv_profiles(path)
    else:
        yield from _csv_stock(path)


def _undecodable_lines(path: Path, most: int = 100) -> list[int]:
    """The numbers of the lines (at most `most`) that are not valid UTF-8."""
    bad: list[int] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(number)
                if len(bad) >= most:
                    break
    return bad


def _json_lines(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, LineError("", f"not JSON ({exc.msg}, column {exc.colno})")


# The top-level keys of a document, per kind of data; the others' data is named, not read.
_DOCUMENT_KEYS = {"profiles": ("profiles",), "stock": ("stock", "items")}
SEED_KEYS = ("profiles", "stock", "items")


def _json_document(path: Path, what: str, notes: list[str]) -> Iterator[Record]:
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        yield (
            1,
            LineError(
                "", f"a JSON document over {MAX_DOCUMENT_BYTES >> 20} MB; use JSON lines (.jsonl)"
            ),
        )
        return
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()

    def line_at(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        yield exc.lineno, LineError("", f"not JSON ({exc.msg}, column {exc.colno})")
        return
    if isinstance(whole, list):
        start = _skip(text, 0)
        yield from _array(text, start, decoder, line_at)
        return
    if not isinstance(whole, dict):
        yield 1, LineError("", f"expected an object with {what!r}, or a list")
        return
    for key in whole:
        if key not in SEED_KEYS:
            yield 1, unknown_field(str(key), SEED_KEYS)
            return
    wanted = [k for k in _DOCUMENT_KEYS[what] if k in whole]
    for key in whole:
        if key not in _DOCUMENT_KEYS[what] and isinstance(whole[key], list):
            other = "stock" if key in _DOCUMENT_KEYS["stock"] else "profiles"
            notes.append(
                f"the {key!r} list ({len(whole[key])} entries) is not read here: "
                f"gateway {other} import reads it"
            )
    if not wanted:
        yield 1, LineError("", f"no {what!r} list in this document (it has: {', '.join(whole)})")
        return
    # Walk the top-level object again to find where each wanted list's items start.
    index = _skip(text, 0) + 1  # after '{'
    while True:
        index = _skip(text, index)
        if text[index] == "}":
            return
        key, index = decoder.raw_decode(text, index)
        index = _skip(text, index) + 1  # after ':'
        index = _skip(text, index)
        if key in wanted:
            if not isinstance(whole[key], list):
                yield line_at(index), LineError(key, "expected a list")
            else:
                yield from _array(text, index, decoder, line_at, f"{key}")
        _, index = decoder.raw_decode(text, index)
        index = _skip(text, index)
        if text[index] == ",":
            index += 1


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _array(
    text: str, start: int, decoder: json.JSONDecoder, line_at: Any, key: str = ""
) -> Iterator[Record]:
    """Each element of the JSON array at `start`, with the line it starts on."""
    index = _skip(text, start + 1)  # after '['
    while text[index] != "]":
        item, end = decoder.raw_decode(text, index)
        yield line_at(index), item
        index = _skip(text, end)
        if text[index] == ",":
            index = _skip(text, index + 1)


def _header(reader: Any, known: tuple[str, ...], required: str) -> LineError | None:
    names = reader.fieldnames
    if not names or required not in names:
        return LineError("header", f"a CSV needs a header row with {required!r}")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return LineError(f"column {name}", "appears twice in the header")
        seen.add(name)
        if name not in known:
            if name in COLUMN_HINTS and COLUMN_HINTS[name].split()[0] in known:
                return LineError(
                    f"column {name}", f"unknown column; use {COLUMN_HINTS[name]} instead"
                )
            error = unknown_field(name, known)
            return LineError(f"column {name}", error.reason.replace("field", "column"))
    return None


def _csv_rows(path: Path, known: tuple[str, ...], required: str) -> Iterator[Record]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        # Comma-separated, or semicolon-separated as spreadsheets save CSV where the decimal
        # separator is a comma (Germany, France, ...): told apart by the header row.
        header = f.readline()
        f.seek(0)
        reader = csv.DictReader(f, delimiter=";" if header.count(";") > header.count(",") else ",")
        problem = _header(reader, known, required)
        if problem is not None:
            yield 1, problem
            return
        for row in reader:
            if None in row:
                yield reader.line_num, LineError("", "more cells than the header has columns")
                continue
            missing = [column for column, cell in row.items() if cell is None]
            if missing:  # DictReader fills a short row's missing cells with None
                yield (
                    reader.line_num,
                    LineError(
                        missing[0],
                        f"the row ends before column {missing[0]!r}: "
                        f"{len(row) - len(missing)} cells where the header has {len(row)} "
                        "(an empty cell still needs its comma)",
                    ),
                )
                continue
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items()}


def _cells(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def _csv_profile(row: dict[str, str]) -> dict[str, Any]:
    cap = row.get("max_offers_per_day", "")
    if cap and not cap.isdigit():
        raise LineError("max_offers_per_day", "expected a whole number")
    obj: dict[str, Any] = {
        "profile_id": row.get("profile_id", ""),
        "consent": {
            "proximity_offers": parse_bool(row.get("proximity_offers", ""), "proximity_offers"),
            "at": row.get("consent_at") or None,
            "source": row.get("consent_source") or None,
        },
        "language": row.get("language") or "en",
        "opted_out": parse_bool(row.get("opted_out", ""), "opted_out"),
        # lists in CSV cells: separated by ';'
        "segments": _cells(row.get("segments", "")),
        "declined_skus": _cells(row.get("declined_skus", "")),
        "identifiers": [
            {"kind": kind, "value": row[kind]} for kind in IDENTIFIER_KINDS if row.get(kind)
        ],
        "cart": [],
    }
    if cap:
        obj["preferences"] = {"max_offers_per_day": int(cap)}
    return obj


def _cart_item(row: dict[str, str]) -> dict[str, Any] | None:
    if not row.get("cart_sku"):
        for column in CART_COLUMNS[1:]:
            if row.get(column):
                raise LineError(column, "given without cart_sku on the same row")
        return None
    item: dict[str, Any] = {"sku": row["cart_sku"], "title": row.get("cart_title", "")}
    if row.get("cart_price"):
        try:
            item["price"] = float(row["cart_price"])
        except ValueError:
            raise LineError("cart_price", "expected a number such as 12.99") from None
    if row.get("cart_added_at"):
        item["added_at"] = row["cart_added_at"]
    return item


def _csv_profiles(path: Path) -> Iterator[Record]:
    """Rows → profile documents; one shopper's consecutive rows become one document whose
    cart holds one item per row. Reported at the shopper's first line."""
    current: tuple[int, dict[str, Any], dict[str, str]] | None = None  # its first row was good
    current_pid, current_first = "", 0
    done: dict[str, int] = {}  # profile id → its first line, for shoppers already passed
    for number, row in _csv_rows(path, PROFILE_COLUMNS + CART_COLUMNS, "profile_id"):
        if isinstance(row, LineError):
            yield number, row
            continue
        pid = row.get("profile_id", "")
        try:
            item = _cart_item(row)
            if pid and pid == current_pid:  # the next saved item of the same shopper
                if current is not None:
                    first, doc, own = current
                    for column in PROFILE_COLUMNS:
                        if row.get(column) and row[column] != own.get(column, ""):
                            raise LineError(
                                column,
                                f"differs from line {first} of the same shopper "
                                f"({own.get(column, '')!r}); repeat it or leave it empty",
                            )
                    if item is not None:
                        doc["cart"].append(item)
                continue
            if current is not None:
                yield current[0], current[1]
            if current_pid:
                done[current_pid] = current_first
            current, current_pid, current_first = None, pid, number
            if pid and pid in done:
                raise LineError(
                    "profile_id",
                    f"{pid!r} already had rows ending before (from line {done[pid]}); "
                    "keep a shopper's rows together",
                )
            doc = _csv_profile(row)
            if item is not None:
                doc["cart"].append(item)
            current = (number, doc, row)
        except LineError as exc:
            yield number, exc
    if current is not None:
        yield current[0], current[1]


def _csv_stock(path: Path) -> Iterator[Record]:
    for number, row in _csv_rows(path, STOCK_COLUMNS, "sku"):
        if isinstance(row, LineError):
            yield number, row
            continue
        quantity = row.get("quantity", "")
        yield (
            number,
            {
                "sku": row.get("sku", ""),
                "title": row.get("title", ""),
                # not a number: left as text for `stock_row` to report with the row's other
                # problems (ASCII only: '²'.isdigit() is true and int('²') fails)
                "quantity": int(quantity)
                if quantity.isascii() and quantity.isdigit()
                else quantity,
                "zone_id": row.get("zone_id", ""),
            },
        )
