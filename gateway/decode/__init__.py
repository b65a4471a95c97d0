"""DECODE: raw radio bytes to typed frames. Pure and stateless: no I/O, no clock, no config.

`ble` parses BLE advertising data (AD structures, iBeacon, AltBeacon, Eddystone), `ndef` is a
strict NDEF parser for NFC tags, and `frames` renders decoded frames as JSON for `gateway decode`.
"""
