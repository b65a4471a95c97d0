"""Secrets in the configuration: hex keys, and the form of the staff password's scrypt hash
(which `gateway.web.auth` makes and checks, at its current parameters).

Low in the layers on purpose: the config validates them without importing the web.
"""

from __future__ import annotations


def secret_problem(text: str) -> str:
    """'' for a usable hex secret of at least 16 bytes, else what is wrong with it."""
    try:
        short = len(bytes.fromhex(text)) < 16
    except ValueError:
        return "not hex: give at least 32 hex digits"
    return "too short: give at least 32 hex digits" if short else ""


def valid_hash(stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        return all(int(v) > 0 for v in parts[1:4]) and bool(bytes.fromhex(parts[4]))
    except ValueError:
        return False
