"""RFC 8785 (JCS): the bytes a downlink signature covers, checked against the RFC's own
vectors (Appendix B numbers, §3.2.3 sorting, §3.2.2 example), not against ourselves."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.sync.canonical import NotCanonical, canonical, number

# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript serialisation.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_numbers_as_ecmascript_writes_them(bits: str, expected: str) -> None:
    assert number(struct.unpack(">d", bytes.fromhex(bits))[0]) == expected


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinities_are_not_json(bits: str) -> None:
    with pytest.raises(NotCanonical):
        number(struct.unpack(">d", bytes.fromhex(bits))[0])


def test_the_rfc_example_and_the_floats_python_writes_differently() -> None:
    text = (
        '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        '"literals":[null,true,false]}'
    )
    assert (
        canonical(json.loads(text))
        == (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )
    # json.dumps would write 5e-05, 1e-07 and escape ü; JCS does not.
    assert canonical({"p": 0.00005, "q": 1e-7, "n": "Günter", "i": 10.0}) == (
        '{"i":10,"n":"Günter","p":0.00005,"q":1e-7}'.encode()
    )


def test_members_sort_by_utf16_code_units() -> None:
    names = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    body = canonical({name: 0 for name in names}).decode()
    order = [name for name in json.loads(body)]
    # U+1F600 is the surrogate pair D83D DE00: before U+FB33, after U+20AC.
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_what_a_double_cannot_hold_is_refused() -> None:
    assert canonical([2**53 - 1]) == b"[9007199254740991]"
    with pytest.raises(NotCanonical, match=r"\$\.big"):
        canonical({"big": 2**63})
    with pytest.raises(NotCanonical, match="surrogate"):
        canonical({"s": "\ud800"})
    with pytest.raises(NotCanonical):
        canonical({1: "non-string member name"})
