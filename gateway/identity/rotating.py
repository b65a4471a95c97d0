"""Rotating identifiers: Eddystone-EID and BLE resolvable private addresses (RPA).

Shopper apps should not broadcast a static id. Two standard ways to rotate, both resolved
here against keys shared with the backend:

* Eddystone-EID (google/eddystone, eid-computation.md): the temporary key is
  AES-128(IK, 0x00×11 ‖ 0xFF ‖ 0x00 0x00 ‖ top 16 bits of the 32-bit time counter), and the
  EID is the first 8 bytes of AES-128(temporary key, 0x00×11 ‖ K ‖ counter with its K low
  bits cleared), all big-endian. A new EID every 2^K seconds.
* RPA (Bluetooth Core, Vol 3 Part H, 2.2.2 and 1.6 "random address hash function ah"):
  address = prand (24 bits, top two bits 0b01) ‖ hash, hash = ah(IRK, prand) =
  AES-128(IRK, 0x00×13 ‖ prand) mod 2^24. Keys and addresses are written most significant
  byte first, as in the specification's sample data.

`EidTable` keeps, per rotation window, the expected EIDs of every consenting profile for
the previous, current and next window (clock skew), so a sighting resolves with a dict hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _tk_block(counter: int) -> bytes:
    return b"\x00" * 11 + b"\xff" + b"\x00\x00" + ((counter >> 16) & 0xFFFF).to_bytes(2, "big")


def _eid_block(k: int, counter: int) -> bytes:
    quantised = (counter >> k) << k
    return b"\x00" * 11 + bytes([k]) + (quantised & 0xFFFFFFFF).to_bytes(4, "big")


def temporary_key(identity_key: bytes, counter: int) -> bytes:
    return _aes_ecb(identity_key, _tk_block(counter))


def eid(identity_key: bytes, k: int, counter: int) -> bytes:
    """The 8-byte Eddystone ephemeral id for a beacon time counter (seconds)."""
    if len(identity_key) != 16:
        raise ValueError("the identity key must be 16 bytes (32 hex digits)")
    if not 0 <= k <= 15:
        raise ValueError("the rotation exponent K must be 0..15")
    if not 0 <= counter < 2**32:
        raise ValueError("the time counter must be 0..2^32-1 seconds")
    return _aes_ecb(temporary_key(identity_key, counter), _eid_block(k, counter))[:8]


def parse_address(text: str) -> bytes:
    parts = text.strip().split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not an address like AA:BB:CC:DD:EE:FF")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not an address like AA:BB:CC:DD:EE:FF") from None


def is_resolvable(address: bytes) -> bool:
    """A resolvable private address has 0b01 in its two most significant bits."""
    return len(address) == 6 and address[0] >> 6 == 0b01


def ah(irk: bytes, prand: bytes) -> bytes:
    """The random address hash function: 24 bits."""
    return _aes_ecb(irk, b"\x00" * 13 + prand)[-3:]


def rpa_matches(irk: bytes, address: bytes) -> bool:
    if len(irk) != 16:
        raise ValueError("the IRK must be 16 bytes (32 hex digits)")
    return is_resolvable(address) and ah(irk, address[:3]) == address[3:]


@dataclass(frozen=True, slots=True)
class EidKey:
    profile_id: str
    identity_key: bytes
    k: int
    offset: int = 0  # beacon counter = unix time + offset (registered with the key)

    @classmethod
    def parse(cls, profile_id: str, value: str) -> EidKey:
        """Identifier value "IKHEX:K[:OFFSET]" as stored in the profile cache."""
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise ValueError("EID key must be 'IKHEX:K[:OFFSET]'")
        ik = bytes.fromhex(parts[0])
        k = int(parts[1])
        offset = int(parts[2]) if len(parts) == 3 else 0
        if len(ik) != 16:
            raise ValueError("the identity key must be 16 bytes (32 hex digits)")
        if not 0 <= k <= 15:
            raise ValueError("the rotation exponent K must be 0..15")
        return cls(profile_id, ik, k, offset)


NO_WINDOW = -(2**62)  # "nothing held yet" in the window arrays


@dataclass(slots=True)
class EidTable:
    """Expected EIDs (previous, current, next window) of every key → profile.

    Vectorised over all keys (numpy, `aesbatch`): the windows each key should have now are
    compared with the ones it holds; the EIDs that slid out leave the table, the missing
    ones — all three on a cold build, usually one when a window rolls — are computed in a
    few array operations: temporary keys for every (key, top 16 bits of the counter), then
    one AES block per missing EID under its temporary key. Same bytes as `eid()`, which
    the tests hold it to.
    """

    keys: list[EidKey] = field(default_factory=list)
    table: dict[str, str] = field(default_factory=dict)
    _k: Any = None  # (N,) rotation exponents
    _offset: Any = None  # (N,) counter offsets
    _ik: Any = None  # (N, 16) identity keys
    _profile: Any = None  # (N,) profile ids (object)
    _held: Any = None  # (N, 3) windows held (q-1, q, q+1 at the last build)
    _values: Any = None  # (N, 3) their EIDs as hex (object)

    def _prepare(self) -> None:
        import numpy as np

        n = len(self.keys)
        self._k = np.array([key.k for key in self.keys], dtype=np.int64)
        self._offset = np.array([key.offset for key in self.keys], dtype=np.int64)
        self._ik = np.frombuffer(
            b"".join(key.identity_key for key in self.keys), dtype=np.uint8
        ).reshape(n, 16)
        self._profile = np.array([key.profile_id for key in self.keys], dtype=object)
        self._held = np.full((n, 3), NO_WINDOW, dtype=np.int64)
        self._values = np.full((n, 3), None, dtype=object)

    def _quanta(self, now: float) -> Any:
        return (int(now) + self._offset) >> self._k

    def rebuild(self, now: float) -> int:
        """Bring every key's three windows up to date; returns the table size."""
        import numpy as np

        from gateway.identity import aesbatch

        if not self.keys:
            return 0
        if self._held is None or len(self._held) != len(self.keys):
            self._prepare()
            self.table = {}
        q = self._quanta(now)
        wanted = q[:, None] + np.array([-1, 0, 1])
        old_q = self._held[:, 1]
        # Windows are consecutive: the one wanted at position j was held at j + shift.
        shift = np.where(old_q == NO_WINDOW, 3, np.clip(q - old_q, -3, 3))
        source = np.arange(3)[None, :] + shift[:, None]
        kept = (source >= 0) & (source <= 2)
        rows = np.arange(len(self.keys))[:, None]
        values = np.full_like(self._values, None)
        values[kept] = self._values[np.broadcast_to(rows, kept.shape)[kept], source[kept]]
        # What slid out of the windows leaves the table.
        back = np.arange(3)[None, :] - shift[:, None]  # held position j → wanted position
        still = (back >= 0) & (back <= 2)
        for gone in self._values[~still & (self._held != NO_WINDOW)]:
            self.table.pop(gone, None)
        missing_r, missing_c = np.nonzero(~kept)
        if len(missing_r):
            windows = wanted[missing_r, missing_c]
            ks = self._k[missing_r]
            counters = np.clip(windows << ks, 0, 2**32 - 1)
            tops = counters >> 16
            # temporary keys: one per distinct (key, top)
            pair_id = missing_r * 65536 + tops
            unique_pairs, which = np.unique(pair_id, return_inverse=True)
            pair_rows, pair_tops = unique_pairs // 65536, unique_pairs % 65536
            tk_blocks = np.zeros((len(unique_pairs), 1, 16), dtype=np.uint8)
            tk_blocks[:, 0, 11] = 0xFF
            tk_blocks[:, 0, 14:16] = pair_tops.astype(">u2").view(np.uint8).reshape(-1, 2)
            tks = aesbatch.encrypt(self._ik[pair_rows], tk_blocks).reshape(-1, 16)
            # the EIDs: one block each, under its temporary key (each key expanded once)
            blocks = np.zeros((len(missing_r), 16), dtype=np.uint8)
            blocks[:, 11] = ks.astype(np.uint8)
            quantised = (counters >> ks) << ks
            blocks[:, 12:16] = quantised.astype(">u4").view(np.uint8).reshape(-1, 4)
            text = aesbatch.encrypt_by_key(tks, which, blocks)[:, :8].tobytes().hex()
            fresh = [text[i : i + 16] for i in range(0, len(text), 16)]
            column = np.empty(len(fresh), dtype=object)
            column[:] = fresh
            values[missing_r, missing_c] = column
            self.table.update(zip(fresh, self._profile[missing_r].tolist(), strict=True))
        self._held = wanted
        self._values = values
        return len(self.table)

    def stale(self, now: float) -> bool:
        """True when some key moved into a new window since the last rebuild."""
        if self._held is None or not self.keys:
            return bool(self.keys)
        return bool((self._quanta(now) != self._held[:, 1]).any())

    def resolve(self, eid_hex: str) -> str | None:
        return self.table.get(eid_hex)


@dataclass(slots=True)
class RpaResolver:
    """Resolves resolvable private addresses against the IRKs of consenting profiles.

    Each new address costs one AES per IRK, so results are cached per address (a phone keeps
    an address for ~15 minutes); the cache is bounded.
    """

    irks: list[tuple[str, bytes]] = field(default_factory=list)
    cache: dict[bytes, str | None] = field(default_factory=dict)
    max_cache: int = 50_000

    def resolve(self, address: bytes) -> str | None:
        if not is_resolvable(address) or not self.irks:
            return None
        if address in self.cache:
            return self.cache[address]
        found = next((pid for pid, irk in self.irks if ah(irk, address[:3]) == address[3:]), None)
        if len(self.cache) >= self.max_cache:
            self.cache.clear()
        self.cache[address] = found
        return found
