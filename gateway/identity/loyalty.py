"""Loyalty tokens carried in NFC tags: identify with the UID, redeem only with a signature.

A UID is trivially cloned, so it may say *who* (identity) but never authorise a redemption.
A loyalty tag carries an NDEF MIME record of type `application/vnd.storegate.loyalty+json`:
  {"v": 1, "profile": "<profile id>", "tid": "<token id>", "sig": "<hex HMAC-SHA256>"}
signed over "v1|<profile>|<tid>" with the store's loyalty key (config `nfc.loyalty_key`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import ndef

from gateway.decode.ndef import TNF_MIME, NdefError, split_records

LOYALTY_MIME = "application/vnd.storegate.loyalty+json"


@dataclass(frozen=True, slots=True)
class LoyaltyToken:
    profile_id: str
    token_id: str
    verified: bool


def _signed_text(profile_id: str, token_id: str) -> bytes:
    return f"v1|{profile_id}|{token_id}".encode()


def sign(key: bytes, profile_id: str, token_id: str) -> str:
    return hmac.new(key, _signed_text(profile_id, token_id), hashlib.sha256).hexdigest()


def token_record(key: bytes, profile_id: str, token_id: str) -> bytes:
    """An NDEF message carrying a signed loyalty token (for provisioning and tests)."""
    body = {"v": 1, "profile": profile_id, "tid": token_id, "sig": sign(key, profile_id, token_id)}
    record = ndef.Record(LOYALTY_MIME, "", json.dumps(body, separators=(",", ":")).encode())
    return b"".join(ndef.message_encoder([record]))


def read_token(key: bytes, ndef_bytes: bytes) -> tuple[LoyaltyToken | None, str]:
    """Find and verify a loyalty token in an NDEF message; (None, reason) when absent/bad."""
    if not ndef_bytes:
        return None, "no_ndef"
    try:
        records = split_records(ndef_bytes)
    except NdefError:
        return None, "ndef_malformed"
    for record in records:
        if record.tnf != TNF_MIME or record.type != LOYALTY_MIME.encode():
            continue
        try:
            body = json.loads(record.payload)
            profile_id, token_id, sig = str(body["profile"]), str(body["tid"]), str(body["sig"])
            version = body["v"]
        except (ValueError, KeyError, TypeError):
            return None, "token_malformed"
        if version != 1:
            return None, "token_version"
        good = hmac.compare_digest(sig, sign(key, profile_id, token_id))
        return LoyaltyToken(profile_id, token_id, good), "" if good else "token_forged"
    return None, "no_token"
