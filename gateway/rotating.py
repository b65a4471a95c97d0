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


@dataclass(slots=True)
class EidTable:
    """Expected EIDs (previous, current, next window) of every key → profile.

    Incremental: when a key's window moves on, its previous and current EIDs are already
    known, so only the new "next" one is computed (one AES with a cached temporary key; the
    temporary key changes every 2^16 s). A cold build computes the three windows with one
    cipher per key.
    """

    keys: list[EidKey] = field(default_factory=list)
    table: dict[str, str] = field(default_factory=dict)
    # per key index: {quantum: eid hex} for the windows currently in the table
    windows: list[dict[int, str]] = field(default_factory=list)
    built_for: dict[tuple[int, int], int] = field(default_factory=dict)  # (k, offset) → quantum
    _tks: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    def _tk(self, ik: bytes, counter: int) -> bytes:
        top = counter >> 16
        tk = self._tks.get((ik, top))
        if tk is None:
            tk = self._tks[(ik, top)] = _aes_ecb(ik, ((0xFF << 32) | top).to_bytes(16, "big"))
        return tk

    def rebuild(self, now: float) -> int:
        """Bring every key's three windows up to date; returns the table size."""
        if len(self.windows) != len(self.keys):
            self.windows = [{} for _ in self.keys]
            self.table = {}
        table = self.table
        limit = 2**32 - 1
        for key, have in zip(self.keys, self.windows, strict=True):
            k = key.k
            q = (int(now) + key.offset) >> k
            wanted = (q - 1, q, q + 1)
            for old in [o for o in have if o not in wanted]:
                table.pop(have.pop(old), None)
            missing = [w for w in wanted if w not in have]
            if not missing:
                continue
            counters = [max(0, min(w << k, limit)) for w in missing]
            if counters[0] >> 16 == counters[-1] >> 16:  # the usual case: one temporary key
                out = _aes_ecb(
                    self._tk(key.identity_key, counters[0]),
                    b"".join(((k << 32) | c).to_bytes(16, "big") for c in counters),
                )
                for i, w in enumerate(missing):
                    value = out[i * 16 : i * 16 + 8].hex()
                    have[w] = value
                    table[value] = key.profile_id
                self.built_for[(k, key.offset)] = q
                continue
            # The windows straddle a temporary-key rollover: one cipher per temporary key.
            for top in {c >> 16 for c in counters}:
                group = [(w, c) for w, c in zip(missing, counters, strict=True) if c >> 16 == top]
                tk = self._tk(key.identity_key, group[0][1])
                out = _aes_ecb(tk, b"".join(((k << 32) | c).to_bytes(16, "big") for _, c in group))
                for i, (w, _) in enumerate(group):
                    value = out[i * 16 : i * 16 + 8].hex()
                    have[w] = value
                    table[value] = key.profile_id
            self.built_for[(k, key.offset)] = q
        if len(self._tks) > 4 * len(self.keys) + 16:
            self._tks.clear()  # old temporary keys (2^16 s ago) are no longer needed
        return len(table)

    def stale(self, now: float) -> bool:
        """True when some key moved into a new window since the last rebuild."""
        return any(
            (int(now) + offset) >> k != quantum for (k, offset), quantum in self.built_for.items()
        )

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
