"""Loyalty tokens: a signature redeems, a UID or a forgery never does."""

from __future__ import annotations

import ndef

from gateway.identity import loyalty

KEY = bytes.fromhex("64656d6f2d6c6f79616c74792d6b6579")


def test_signed_token_verifies() -> None:
    token, reason = loyalty.read_token(KEY, loyalty.token_record(KEY, "p-1", "card-9"))
    assert reason == "" and token == loyalty.LoyaltyToken("p-1", "card-9", True)


def test_forged_token_is_flagged() -> None:
    forged = loyalty.token_record(b"attacker-key-123", "p-1", "card-9")
    token, reason = loyalty.read_token(KEY, forged)
    assert reason == "token_forged" and token is not None and not token.verified


def test_tampered_profile_breaks_the_signature() -> None:
    good = loyalty.token_record(KEY, "p-1", "card-9")
    tampered = good.replace(b'"p-1"', b'"p-2"')
    token, reason = loyalty.read_token(KEY, tampered)
    assert reason == "token_forged" and token is not None and token.profile_id == "p-2"


def test_absent_or_malformed() -> None:
    assert loyalty.read_token(KEY, b"") == (None, "no_ndef")
    assert loyalty.read_token(KEY, b"\xff\x00\x13") == (None, "ndef_malformed")
    uri = b"".join(ndef.message_encoder([ndef.UriRecord("https://shop.example/")]))
    assert loyalty.read_token(KEY, uri) == (None, "no_token")
    bad_json = b"".join(ndef.message_encoder([ndef.Record(loyalty.LOYALTY_MIME, "", b"{")]))
    assert loyalty.read_token(KEY, bad_json) == (None, "token_malformed")
