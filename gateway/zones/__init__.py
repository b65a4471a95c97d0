"""ZONES: positions to zone events (enter, exit, dwell) against the store's geofences. Pure.

`index` answers "which zone holds this point" fast (a grid for single points, an STRtree for
batches), `tracker` turns each device's stream of zones into events with hysteresis and dwell.
"""
