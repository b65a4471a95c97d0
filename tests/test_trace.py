"""The replay trace format: good lines parse, bad lines say line and field."""

from __future__ import annotations

import pytest

from gateway.model import Advert, Tap
from gateway.trace import TraceError, advert_line, parse_line, tap_line


def test_round_trip() -> None:
    advert = Advert(
        12.5, "gw-1", "AA:BB", -70, b"\x02\x01\x06", {0x4C: b"\x02\x15"}, {"feaa": b"\x00"}
    )
    assert parse_line(advert_line(advert), 1) == advert
    tap = Tap(13.0, "counter", bytes.fromhex("04a2246a8b5c80"), b"\xd1\x01")
    assert parse_line(tap_line(tap), 2) == tap


def test_adapter_is_an_alias_of_receiver() -> None:
    item = parse_line('{"t": 1, "kind": "ble", "adapter": "hci0", "rssi": -50}', 1)
    assert isinstance(item, Advert) and item.receiver == "hci0"


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("{not json", "", "not JSON"),
        ("[1]", "", "JSON object"),
        ('{"kind": "ble"}', "t", "non-negative"),
        ('{"t": -1, "kind": "ble"}', "t", "non-negative"),
        ('{"t": 1, "kind": "wifi"}', "kind", "unknown kind"),
        ('{"t": 1, "kind": "ble", "rssi": -50}', "receiver", "missing"),
        ('{"t": 1, "kind": "ble", "receiver": "a", "rssi": 5}', "rssi", "outside"),
        ('{"t": 1, "kind": "ble", "receiver": "a", "rssi": -200}', "rssi", "outside"),
        ('{"t": 1, "kind": "ble", "receiver": "a", "rssi": "x"}', "rssi", "number"),
        ('{"t": 1, "kind": "ble", "receiver": "a", "rssi": -5, "ad": "xyz"}', "ad", "hex"),
        (
            '{"t": 1, "kind": "ble", "receiver": "a", "rssi": -5, "mfr": {"apple": "00"}}',
            "mfr.apple",
            "bad",
        ),
        ('{"t": 1, "kind": "nfc", "reader": "r"}', "uid", "missing"),
        ('{"t": 1, "kind": "nfc", "reader": "r", "uid": "0102"}', "uid", "4, 7 or 10"),
    ],
)
def test_bad_lines_are_explained(line: str, field: str, words: str) -> None:
    result = parse_line(line, 42)
    assert isinstance(result, TraceError)
    assert result.line == 42 and result.field == field and words in result.reason
    assert str(result).startswith("line 42")


def test_blank_and_comment_lines_are_skipped() -> None:
    assert parse_line("   \n", 1) is None
    assert parse_line("# recorded at store 12", 1) is None


@pytest.mark.parametrize("t", [1e15, 4_102_444_800, 1.7976931348623157e308])
def test_a_time_after_2100_is_refused_with_a_reason(t: float) -> None:
    line = f'{{"t": {t!r}, "kind": "ble", "receiver": "gw", "address": "AA", "rssi": -60}}'
    error = parse_line(line, 3)
    assert isinstance(error, TraceError) and error.field == "t" and "2100" in error.reason


def test_the_last_second_before_2100_is_still_a_time() -> None:
    line = '{"t": 4102444799.5, "kind": "ble", "receiver": "gw", "address": "AA", "rssi": -60}'
    assert isinstance(parse_line(line, 1), Advert)
