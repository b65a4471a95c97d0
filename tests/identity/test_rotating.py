"""Rotating identifiers: Eddystone-EID and RPA against published values and properties."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.identity.rotating import (
    EidKey,
    EidTable,
    RpaResolver,
    ah,
    eid,
    parse_address,
    rpa_matches,
)

IK = bytes.fromhex("0102030405060708090A111213141516")
# Bluetooth Core spec sample data for the random address hash function ah.
SPEC_IRK = bytes.fromhex("ec0234a357c8ad05341010a60a397d9b")


def test_eid_matches_an_independent_implementation() -> None:
    # RadiusNetworks/ephemeral_calc test suite: K=10, beacon time 0 and ~2000 s.
    assert eid(IK, 10, 0).hex() == "a9b76a71c5f89290"
    assert eid(IK, 10, 2000).hex() == "4144413e45fefa58"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15), st.integers(0, 2**32 - 1))
def test_eid_is_constant_within_a_window_and_changes_across(k: int, t: int) -> None:
    start = (t >> k) << k
    assert eid(IK, k, t) == eid(IK, k, start) == eid(IK, k, start + (1 << k) - 1)
    if start + (1 << k) < 2**32:
        assert eid(IK, k, start + (1 << k)) != eid(IK, k, start)


def test_eid_rejects_bad_parameters() -> None:
    for args in ((IK[:8], 1, 0), (IK, 16, 0), (IK, 1, -1), (IK, 1, 2**32)):
        with pytest.raises(ValueError):
            eid(*args)


def test_rpa_spec_sample() -> None:
    assert ah(SPEC_IRK, bytes.fromhex("708194")).hex() == "0dfbaa"
    assert rpa_matches(SPEC_IRK, parse_address("70:81:94:0D:FB:AA"))
    assert not rpa_matches(SPEC_IRK, parse_address("70:81:94:0D:FB:AB"))
    # Same hash but not marked resolvable (top bits 11): not an RPA.
    assert not rpa_matches(SPEC_IRK, parse_address("F0:81:94:0D:FB:AA"))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=3, max_size=3))
def test_generated_rpas_resolve_to_their_irk_only(irk: bytes, prand: bytes) -> None:
    prand = bytes([(prand[0] & 0x3F) | 0x40]) + prand[1:]
    address = prand + ah(irk, prand)
    assert rpa_matches(irk, address)
    other = bytes(b ^ 0x5A for b in irk)
    resolver = RpaResolver([("p-other", other), ("p-me", irk)])
    assert resolver.resolve(address) in ("p-me", "p-other")  # 24-bit hash: collisions exist
    if not rpa_matches(other, address):
        assert resolver.resolve(address) == "p-me"


def test_eid_table_resolves_previous_current_and_next_window() -> None:
    keys = [EidKey("p-a", IK, 10, 0), EidKey("p-b", bytes(range(16)), 4, 1000)]
    table = EidTable(keys)
    now = 1_795_424_400
    table.rebuild(now)
    assert len(table.table) == 6
    for delta in (-1024, 0, 1024):  # clock skew of one window either way
        assert table.resolve(eid(IK, 10, now + delta).hex()) == "p-a"
    assert table.resolve(eid(IK, 10, now + 2048).hex()) is None
    assert table.resolve(eid(bytes(range(16)), 4, now + 1000).hex()) == "p-b"
    assert not table.stale(now + 1)
    assert table.stale(now + 16)  # p-b's 16-second window moved on


def test_eid_key_parsing() -> None:
    key = EidKey.parse("p", "0102030405060708090a111213141516:10:-3600")
    assert (key.k, key.offset, key.identity_key) == (10, -3600, IK)
    for bad in ("zz:10", "0102030405060708090a111213141516", "0102030405060708090a111213141516:99"):
        with pytest.raises(ValueError):
            EidKey.parse("p", bad)


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )


def test_eid_and_rpa_commands() -> None:
    out = _gateway("eid", "--ik", IK.hex().upper(), "--k", "10", "--t", "2000")
    assert (out.returncode, out.stdout) == (0, "4144413e45fefa58\n")
    out = _gateway("rpa", "--irk", SPEC_IRK.hex(), "--address", "70:81:94:0d:fb:aa")
    assert (out.returncode, out.stdout) == (0, "match\n")
    out = _gateway("rpa", "--irk", SPEC_IRK.hex(), "--address", "70:81:94:0D:FB:AB")
    assert (out.returncode, out.stdout) == (0, "no-match\n")
    for args in (
        ("eid", "--ik", "xyz", "--k", "1", "--t", "0"),
        ("eid", "--ik", IK.hex(), "--k", "16", "--t", "0"),
        ("eid", "--ik", IK.hex(), "--k", "1", "--t", "1.5"),
        ("rpa", "--irk", SPEC_IRK.hex()[:30], "--address", "70:81:94:0D:FB:AA"),
        ("rpa", "--irk", SPEC_IRK.hex(), "--address", "70-81-94-0D-FB-AA"),
    ):
        out = _gateway(*args)
        assert out.returncode == 2 and out.stdout == "" and out.stderr.startswith("gateway: ")


def test_batched_aes_is_aes() -> None:
    """The numpy AES against the FIPS-197 example and `cryptography` on random input."""
    import os

    import numpy as np
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from gateway.identity import aesbatch

    key = np.frombuffer(bytes(range(16)), np.uint8).reshape(1, 16)
    block = np.frombuffer(bytes.fromhex("00112233445566778899aabbccddeeff"), np.uint8)
    out = aesbatch.encrypt(key, block.reshape(1, 1, 16))
    assert out.tobytes().hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    keys = np.frombuffer(os.urandom(16 * 300), np.uint8).reshape(300, 16)
    blocks = np.frombuffer(os.urandom(16 * 300 * 3), np.uint8).reshape(300, 3, 16)
    ours = aesbatch.encrypt(keys, blocks)
    for i in range(300):
        encryptor = Cipher(algorithms.AES(keys[i].tobytes()), modes.ECB()).encryptor()
        assert ours[i].tobytes() == encryptor.update(blocks[i].tobytes()) + encryptor.finalize()


def test_the_vectorised_table_is_eid_for_every_key() -> None:
    """Hundreds of keys at once give exactly what `eid()` gives one by one: on a cold build,
    across a temporary-key rollover (every 2^16 s), after rolling forward, and with keys near
    the ends of the 32-bit counter."""
    import random

    from gateway.identity.rotating import EidKey, EidTable

    rng = random.Random(9)
    keys = [
        EidKey(
            f"p{i}",
            rng.randbytes(16),
            rng.choice([0, 4, 8, 10, 15]),
            rng.randrange(-(10**6), 10**6),
        )
        for i in range(300)
    ]
    keys.append(EidKey("p-low", rng.randbytes(16), 10, -1_795_424_400))  # counter near 0
    rollover = (1_795_424_400 // 65536 + 1) * 65536 - 3.0
    table = EidTable(keys)
    for now in (1_795_424_400.0, rollover, rollover + 40_000, rollover + 40_001):
        table.rebuild(now)
        expected: dict[str, str] = {}
        for key in keys:
            q = (int(now) + key.offset) >> key.k
            for window in (q - 1, q, q + 1):
                counter = max(0, min(window << key.k, 2**32 - 1))
                expected[eid(key.identity_key, key.k, counter).hex()] = key.profile_id
        assert table.table == expected  # nothing missing, nothing stale left behind
        assert not table.stale(now)
    assert table.stale(rollover + 40_001 + 2**15)
