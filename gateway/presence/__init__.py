"""PRESENCE: RSSI readings to distances to positions. Pure numerics, driven by input timestamps.

`tracker` smooths each receiver's RSSI and solves a device's position (scalar solvers and their
numpy batch twins), `calibration` fits per-receiver offsets from a calibration walk, `fleet`
watches the fixed beacons' health from what the receivers hear of them.
"""
