"""IDENTITY: which shopper a device or a tag belongs to, from the cached profiles.

`store` reads profiles, carts and stock and pseudonymises identifiers, `rotating` resolves
Eddystone-EID and BLE resolvable private addresses (with `aesbatch`, a numpy AES-128 for the
EID table), `loyalty` checks signed loyalty tokens read over NFC, `importer` imports and exports
profiles and carts (JSON lines, CSV) all-or-nothing.
"""
