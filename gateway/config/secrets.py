"""Secrets in the configuration: hex keys and the staff password's scrypt hash.

Low in the layers on purpose: the config validates them, the web checks passwords against the
hash and the CLI makes hashes, and none of those should import the others for it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MB and ~50 ms on a Pi: fine for a login


def secret_problem(text: str) -> str:
    """'' for a usable hex secret of at least 16 bytes, else what is wrong with it."""
    try:
        short = len(bytes.fromhex(text)) < 16
    except ValueError:
        return "not hex: give at least 32 hex digits"
    return "too short: give at least 32 hex digits" if short else ""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(bytes.fromhex(digest)),
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def valid_hash(stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        return all(int(v) > 0 for v in parts[1:4]) and bool(bytes.fromhex(parts[4]))
    except ValueError:
        return False
