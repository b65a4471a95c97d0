"""PRESENCE: RSSI readings to distances to positions. Pure numerics, driven by input timestamps.

`filter` smooths each (device, receiver) RSSI and turns it into a range, `solve` places a device
from its ranges (the scalar reference solvers), `batch` is their numpy twin for many devices at
once, `tracker` keeps each device's state and decides when to solve, `calibration` fits a
receiver's offset from a calibration measurement, `fleet` watches the fixed beacons' health.
Nothing here does I/O: the calibration file is `gateway.store.calibration`, and
`gateway.pipeline.tracking.tracker_for` builds a tracker from the config.
"""
