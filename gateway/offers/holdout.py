"""Holdout groups: which eligible shoppers a campaign keeps as its control group.

The group is a pure function of (key, campaign id, profile id): an HMAC-SHA256 of the two ids
under the store's pseudonym key, read as a number in [0, 100). A shopper whose number is below
the campaign's `holdout_percent` is held out. So she stays in the same group on every visit and
at every gateway of the store that shares the key, raising the share only moves shoppers from
exposed to held out (never back), and nobody can pick or predict a group without the key.
"""

from __future__ import annotations

import hashlib
import hmac

_SCALE = float(1 << 64)


def holdout_bucket(key: bytes, campaign: str, profile_id: str) -> float:
    """The shopper's place in [0, 100) for this campaign (uniform, stable, keyed)."""
    digest = hmac.new(key, f"holdout|{campaign}|{profile_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE * 100.0


def in_holdout(key: bytes, campaign: str, profile_id: str, percent: float) -> bool:
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    return holdout_bucket(key, campaign, profile_id) < percent
