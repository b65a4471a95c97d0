"""AES-128 encryption of many blocks under many *different* keys at once, with numpy.

Why: resolving Eddystone-EIDs needs, per shopper, one AES under the identity key (the
temporary key) and one under that temporary key (the EIDs). With `cryptography` each of
those is a new cipher object, ~12 µs of Python overhead apiece: 2.4 s for a cold table of
100k shoppers. Here the key schedule and the ten rounds run as array operations across all
keys together (FIPS-197, byte-oriented: S-box lookups, ShiftRows as an index permutation,
MixColumns with xtime), which takes a small fraction of that.

Encryption only, ECB of independent blocks, and only where `cryptography` is the reference:
the tests compare both on the FIPS-197 vector and on random keys and blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Bytes = npt.NDArray[np.uint8]


def _sbox() -> Bytes:
    """The AES S-box, derived (multiplicative inverse in GF(2^8), then the affine map)."""

    def mul(a: int, b: int) -> int:
        out = 0
        while b:
            if b & 1:
                out ^= a
            a = ((a << 1) ^ 0x11B) if a & 0x80 else a << 1
            b >>= 1
        return out

    inverse = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if mul(a, b) == 1:
                inverse[a] = b
                break
    box = []
    for a in range(256):
        x = inverse[a]
        y = x
        for shift in range(1, 5):
            y ^= ((x << shift) | (x >> (8 - shift))) & 0xFF
        box.append(y ^ 0x63)
    return np.array(box, dtype=np.uint8)


SBOX = _sbox()
XTIME = np.array(
    [((a << 1) ^ 0x1B) & 0xFF if a & 0x80 else a << 1 for a in range(256)], dtype=np.uint8
)
RCON = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36]
# ShiftRows on the column-major state (byte r + 4c is row r, column c).
SHIFT_ROWS = np.array([r + 4 * ((c + r) % 4) for c in range(4) for r in range(4)])


U32 = np.dtype("<u4")  # column words, little-endian whatever the machine


def expand_keys(keys: Bytes) -> Bytes:
    """(N, 16) keys → (N, 11, 16) round keys."""
    n = keys.shape[0]
    words = np.empty((n, 44, 4), dtype=np.uint8)
    words[:, :4, :] = keys.reshape(n, 4, 4)
    as_u32 = words.view(U32)[..., 0]  # (N, 44) words, sharing memory with `words`
    rotate = np.array([1, 2, 3, 0])
    for i in range(4, 44):
        if i % 4 == 0:
            temp = np.ascontiguousarray(SBOX[words[:, i - 1, rotate]])  # SubWord(RotWord())
            temp[:, 0] ^= RCON[i // 4 - 1]
            as_u32[:, i] = as_u32[:, i - 4] ^ temp.view(U32)[:, 0]
        else:
            as_u32[:, i] = as_u32[:, i - 4] ^ as_u32[:, i - 1]
    return words.reshape(n, 11, 16)


def _xtime32(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Multiply each of the four bytes of each word by 2 in GF(2^8)."""
    return ((x & 0x7F7F7F7F) << 1) ^ (((x >> 7) & 0x01010101) * 0x1B)


def _mix_columns(state: Bytes) -> Bytes:
    w = np.ascontiguousarray(state).view(U32)  # (..., 4) column words a0 | a1<<8 | ...
    r1 = (w >> 8) | (w << 24)  # byte i holds a(i+1)
    r2 = (w >> 16) | (w << 16)
    r3 = (w >> 24) | (w << 8)
    # 2·a0 ⊕ 3·a1 ⊕ a2 ⊕ a3 = xtime(a0 ⊕ a1) ⊕ a1 ⊕ a2 ⊕ a3, for every row at once
    out = _xtime32(w ^ r1) ^ r1 ^ r2 ^ r3
    mixed: Bytes = out.astype(U32, copy=False).view(np.uint8)
    return mixed


def encrypt(keys: Bytes, blocks: Bytes) -> Bytes:
    """AES-128: `keys` (N, 16), `blocks` (N, B, 16) → ciphertexts (N, B, 16); block j of
    row i is encrypted under key i."""
    n, b = blocks.shape[0], blocks.shape[1]
    # Round keys as two 64-bit words per block, so AddRoundKey is 2 XORs, not 16.
    round_keys = np.ascontiguousarray(expand_keys(keys)).view(np.uint64)  # (N, 11, 2)
    state = np.ascontiguousarray(blocks).view(np.uint64) ^ round_keys[:, None, 0]
    for r in range(1, 10):
        mixed = _mix_columns(SBOX[state.view(np.uint8)][..., SHIFT_ROWS])
        state = mixed.view(np.uint64) ^ round_keys[:, None, r]
    last = np.ascontiguousarray(SBOX[state.view(np.uint8)][..., SHIFT_ROWS])
    return (last.view(np.uint64) ^ round_keys[:, None, 10]).view(np.uint8).reshape(n, b, 16)


def encrypt_by_key(keys: Bytes, key_of_block: npt.NDArray[Any], blocks: Bytes) -> Bytes:
    """Encrypt `blocks` (E, 16), block e under `keys[key_of_block[e]]`, expanding each key
    once however many blocks use it (keys sharing a block count are done together)."""
    order = np.argsort(key_of_block, kind="stable")
    sorted_keys = key_of_block[order]
    counts = np.bincount(sorted_keys, minlength=len(keys))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.empty_like(blocks)
    for count in np.unique(counts[counts > 0]).tolist():
        users = np.nonzero(counts == count)[0]
        positions = (starts[users][:, None] + np.arange(count)[None, :]).reshape(-1)
        picked = order[positions]
        cipher = encrypt(keys[users], blocks[picked].reshape(len(users), count, 16))
        out[picked] = cipher.reshape(-1, 16)
    return out
