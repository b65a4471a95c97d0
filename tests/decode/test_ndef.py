"""`gateway nfc parse`: NDEF messages to JSON, checked against the specs, ndeflib, and fuzz."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import ndef
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.decode.ndef import parse_hex_line, parse_message


def encode(*records: ndef.Record) -> bytes:
    return b"".join(ndef.message_encoder(list(records)))


def test_uri_record_from_the_uri_rtd_example() -> None:
    # MB|ME|SR, TNF well-known, type "U", prefix 0x01 "http://www." + "nfc-forum.org"
    message = bytes.fromhex("d1010e5501") + b"nfc-forum.org"
    assert parse_message(message) == {
        "records": [{"type": "U", "tnf": 1, "id": "", "uri": "http://www.nfc-forum.org"}]
    }


def test_text_record_utf8_and_utf16() -> None:
    utf8 = bytes.fromhex("d1010855")[:0] + bytes.fromhex("d10108540265") + b"nHello"
    assert parse_message(utf8)["records"][0] | {} == {
        "type": "T",
        "tnf": 1,
        "id": "",
        "text": "Hello",
        "language": "en",
    }
    utf16 = bytes.fromhex("d1010954") + bytes([0x82]) + b"de" + "Tür".encode("utf-16-be")
    [record] = parse_message(utf16)["records"]
    assert (record["text"], record["language"]) == ("Tür", "de")


def test_chunked_record_is_reassembled() -> None:
    # first chunk: MB|CF|SR, TNF 2, type text/plain; middle: CF|SR TNF 6; last: ME|SR TNF 6
    first = bytes([0xB2, 10, 3]) + b"text/plain" + b"abc"
    middle = bytes([0x36, 0, 3]) + b"def"
    last = bytes([0x56, 0, 2]) + b"gh"
    [record] = parse_message(first + middle + last)["records"]
    assert (record["mime"], record["payload"]) == ("text/plain", "abcdefgh")


@pytest.mark.parametrize(
    ("hex_message", "reason"),
    [
        ("", "message_empty"),
        ("51010155" + "00", "missing_message_begin"),
        ("91010155" + "00", "missing_message_end"),
        ("d1010255" + "00", "truncated_record"),
        ("d101015500" + "d1010155" + "00", "trailing_bytes"),
        ("d7000000", "tnf_reserved"),
        ("d6000000", "unchanged_without_chunk"),
        ("d1000100", "missing_type"),
        ("d0010000" + "55", "empty_record_not_empty"),
        ("d1010155" + "ff", "uri_prefix_reserved"),
        ("d1010154" + "45", "text_reserved_bit"),
        ("d1010354" + "05656e", "text_truncated"),
        ("b20300" + "612f62", "unterminated_chunk"),
        ("d10207" + "5370" + "d1010354" + "02656e", "smart_poster_uri"),
    ],
)
def test_malformed_messages_have_reasons(hex_message: str, reason: str) -> None:
    result = parse_hex_line(hex_message)
    assert result["records"] == [] and result["error"] == reason, result


uris = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda u: ndef.UriRecord("https://" + u), uris),
            st.builds(
                lambda t, lang: ndef.TextRecord(t, lang),
                texts,
                st.sampled_from(["en", "de", "fr-CA"]),
            ),
            st.builds(
                lambda d: ndef.Record("application/octet-stream", "", d), st.binary(max_size=300)
            ),
            st.builds(lambda u, t: ndef.SmartposterRecord("https://" + u, title=t), uris, texts),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_agrees_with_ndeflib(records: list[ndef.Record]) -> None:
    result = parse_message(encode(*records))
    assert "error" not in result
    for ours, theirs in zip(result["records"], records, strict=True):
        if isinstance(theirs, ndef.SmartposterRecord):
            assert ours["uri"] == theirs.resource.iri and ours["title"] == theirs.title
        elif isinstance(theirs, ndef.UriRecord):
            assert ours["uri"] == theirs.iri
        elif isinstance(theirs, ndef.TextRecord):
            assert (ours["text"], ours["language"]) == (theirs.text, theirs.language)
        else:
            assert bytes.fromhex(ours["payload_hex"]) == theirs.data


def test_one_hundred_thousand_mutated_messages() -> None:
    rng = random.Random(6)
    seeds = [
        encode(ndef.UriRecord("https://shop.example/a")),
        encode(ndef.TextRecord("pick up here", "en"), ndef.UriRecord("tel:+49301234")),
        encode(ndef.SmartposterRecord("https://shop.example/p", title="Counter")),
        encode(ndef.Record("application/vnd.storegate.loyalty+json", "x", b'{"v":1}')),
    ]
    rejected = accepted = 0
    for i in range(100_000):
        buf = bytearray(seeds[i % len(seeds)])
        for _ in range(1 + i % 3):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        if i % 4 == 0:
            del buf[rng.randrange(len(buf)) :]
        result = parse_message(bytes(buf))
        if result.get("error"):
            assert result["records"] == [] and result["error"]
            rejected += 1
        else:
            json.dumps(result)
            accepted += 1
    assert rejected > 20_000 and accepted > 10_000


def test_parse_command() -> None:
    lines = [encode(ndef.UriRecord("https://shop.example/x")).hex(), "not hex", ""]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "nfc", "parse"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out == [
        {"records": [{"type": "U", "tnf": 1, "id": "", "uri": "https://shop.example/x"}]},
        {"records": [], "error": "not_hex", "detail": "input is not hexadecimal"},
        # a blank line is answered too: outputs zip with inputs
        {"records": [], "error": "message_empty", "detail": out[2].get("detail")},
    ]
