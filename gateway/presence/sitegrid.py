"""The grid model of a store for map-aware tracking: walkable cells per level from the map,
and each receiver's expected RSSI over them (the survey's radio map, else log-distance).
Pure: `gateway.pipeline.tracking.tracker_for` hands in the parsed map and survey."""

from __future__ import annotations

import math

import numpy as np
import shapely
from numpy.typing import NDArray

from gateway.presence.grid import Expect, GridModel, GridSpace, RadioMap
from gateway.presence.selfcal import SelfCalibration
from gateway.presence.survey import HEIGHT_M, Survey, log_distance
from gateway.presence.tracker import PresenceSettings, PresenceTracker
from gateway.site.storemap import StoreMap

# A person on the stairs is within this of the stairs polygon (cell centres).
STAIRS_REACH_M = 1.5


def _model_expect(
    receivers: dict[str, tuple[float, float]],
    power: dict[str, float],
    exponent: dict[str, float],
    sigma_db: float,
) -> Expect:
    def expect(
        receiver: str, x: NDArray[np.float64], y: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        rx, ry = receivers[receiver]
        mu = power[receiver] - 10.0 * exponent[receiver] * log_distance(x, y, rx, ry)
        return mu, np.full_like(mu, sigma_db)

    return expect


def survey_expect(survey: Survey, fallback: Expect) -> Expect:
    def expect(
        receiver: str, x: NDArray[np.float64], y: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        if receiver in survey.receivers:
            return survey.expected(receiver, x, y)
        return fallback(receiver, x, y)

    return expect


def grid_model(
    store: StoreMap,
    power: dict[str, float],
    exponent: dict[str, float],
    sigma_db: float,
    survey: Survey | None = None,
) -> GridModel:
    """`power` and `exponent` per receiver: the un-surveyed model (the device profile's power
    plus the receiver's calibration offset); `sigma_db`: one raw reading's spread about it."""
    expect = _model_expect(store.receivers, power, exponent, sigma_db)
    if survey is not None:
        expect = survey_expect(survey, expect)
    radios: dict[int, RadioMap] = {}
    stairs: dict[int, NDArray[np.bool_]] = {}
    for level in store.levels:
        floor = store.floors.get(level, store.floor if level == min(store.levels) else None)
        if floor is not None:
            b = floor.bounds
            bounds = (b[0], b[1], b[2], b[3])
        else:
            bounds = store.bounds
        space = GridSpace.build(
            bounds,
            floor,
            [w.shape for w in store.walls if w.level == level],
            [shape for lv, shape in store.obstacles if lv == level],
        )
        radios[level] = RadioMap(space, expect)
        near = [shape for lv, shape in store.stairs if lv == level]
        if near:
            points = shapely.points(space.xs.ravel(), space.ys.ravel())
            area = shapely.union_all(near).buffer(max(STAIRS_REACH_M, space.cell))
            stairs[level] = shapely.covers(area, points).reshape(space.shape)
    return GridModel(radios, stairs)


def grid_for(
    store: StoreMap,
    calibration: dict[str, tuple[float | None, float | None]],
    offsets: dict[str, float],
    default_power: float,
    settings: PresenceSettings,
    sigma_db: float,
    survey: Survey | None,
) -> GridModel:
    """The grid model with the tracker's own un-surveyed model: the receiver's calibration
    if any, else the default device power plus the receiver's offset."""
    power, exponent = {}, {}
    for rid in store.receivers:
        p1m, n = calibration.get(rid, (None, None))
        power[rid] = p1m if p1m is not None else default_power + offsets.get(rid, 0.0)
        exponent[rid] = n if n is not None else settings.path_loss_exponent
    return grid_model(store, power, exponent, sigma_db, survey)


def measurement_sigma(shadowing_db: float, measurement_noise_db: float) -> float:
    """One raw reading's spread about the log-distance model."""
    return math.hypot(shadowing_db, measurement_noise_db)


def self_calibration(
    store: StoreMap, tracker: PresenceTracker, beacon_power: dict[str, float]
) -> SelfCalibration:
    """Self-calibration against the model the tracker itself uses: the survey's radio map
    when there is one (relative: beacon powers learned alongside), else log-distance with
    each fixed beacon's profile power and the receiver's calibration."""
    survey = tracker.survey

    def expected(receiver: str, x: float, y: float, beacon: str) -> float | None:
        if survey is not None and receiver in survey.receivers:
            mu, _ = survey.expected(receiver, np.array([x]), np.array([y]))
            return float(mu[0])
        if receiver not in store.receivers or beacon not in beacon_power:
            return None
        p1m, n = tracker.calibration.get(receiver, (None, None))
        if p1m is None:
            p1m = beacon_power[beacon] + tracker.receiver_offsets.get(receiver, 0.0)
        exponent = n if n is not None else tracker.settings.path_loss_exponent
        rx, ry = store.receivers[receiver]
        d2 = (x - rx) ** 2 + (y - ry) ** 2 + HEIGHT_M**2  # as `log_distance`, without numpy
        return p1m - 5.0 * exponent * math.log10(d2)

    return SelfCalibration(
        {a.id: (a.x, a.y) for a in store.anchors},
        store.receivers,
        expected,
        relative=survey is not None,
    )
