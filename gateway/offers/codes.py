"""Offer codes a shopper can read out or type at the counter, and content-derived ids.

A code is the offer id's HMAC in Crockford base32 (no I, L, O, U: nothing to misread);
`normalise_code` forgives the usual typing slips. Ids derive from content, so replaying the
same sightings derives the same ids and the inserts are no-ops.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def offer_code(key: bytes, offer_id: str) -> str:
    """A short, unambiguous, unguessable code: PK-XXXX-XXXX (Crockford base32)."""
    digest = hmac.new(key, offer_id.encode(), hashlib.sha256).digest()
    text = base64.b32encode(digest[:5]).decode().translate(_CROCKFORD)
    return f"PK-{text[:4]}-{text[4:8]}"


# What people mistype when reading a code aloud or off a phone: Crockford's base32 treats
# O as 0 and I/L as 1; case, spaces and dashes do not matter.
_TYPED = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalise_code(typed: str) -> str | None:
    """'pk xy1z-ab0c' → 'PK-XY1Z-AB0C'; None if it cannot be an offer code."""
    text = "".join(c for c in typed.upper() if c.isalnum())
    if text.startswith("PK"):
        text = text[2:]
    text = text.translate(_TYPED)
    alphabet = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    if len(text) != 8 or not set(text) <= alphabet:
        return None
    return f"PK-{text[:4]}-{text[4:]}"


def _stable_id(prefix: str, *parts: object) -> str:
    return prefix + "-" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:20]
