"""Building a presence tracker from the config, the store map and an optional survey: the
one place that does it, for the pipeline, `gateway locate`, the accuracy evaluation and the
floor-plan renderer. Beside the pipeline (its package), to keep each module readable in
one sitting.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config.sections import Config
from gateway.presence.selfcal import SelfCalibration
from gateway.presence.sitegrid import grid_for, measurement_sigma, self_calibration
from gateway.presence.survey import Survey
from gateway.presence.tracker import PresenceSettings, PresenceTracker
from gateway.site.hardware import BeaconProfile, load_beacon_profile
from gateway.site.storemap import MapError, StoreMap
from gateway.store.calibration import receiver_offsets


def self_calibration_for(store_map: StoreMap, tracker: PresenceTracker) -> SelfCalibration:
    """Offsets learned from the fixed beacons, applied by `tracker` once settled."""
    power = {a.id: load_beacon_profile(a.profile).measured_power_dbm for a in store_map.anchors}
    selfcal = self_calibration(store_map, tracker, power)
    tracker.learned_offsets = selfcal.applied
    return selfcal


# How far beyond the map's outline a position may go: a shopper who walks out is
# placed outside (and leave the entrance zone), not clamped onto the threshold.
OUTSIDE_MARGIN_M = 15.0


def tracker_for(
    config: Config,
    store: StoreMap,
    device_profile: BeaconProfile,
    method: str | None = None,
    solve_interval_s: float = 0.0,
    survey: Survey | None = None,
) -> PresenceTracker:
    """The one place a tracker is built from the config and the store map (pipeline,
    `gateway locate`, accuracy evaluation and the floor-plan renderer all use it). The
    survey: `survey`, else the config's `presence.survey` file."""
    p = config.presence
    if survey is None and p.survey:
        survey = load_survey(config.resolve(p.survey, shared=False))
    b = store.bounds
    settings = PresenceSettings(
        process_noise_db=p.process_noise_db,
        measurement_noise_db=p.measurement_noise_db,
        outlier_sigma=p.outlier_sigma,
        stale_after_s=p.stale_after_s,
        method=method or p.method,
        path_loss_exponent=p.path_loss_exponent or device_profile.path_loss_exponent,
        default_measured_power=device_profile.measured_power_dbm,
        measured_power_override=p.measured_power,
        shadowing_db=p.shadowing_db,
        bounds=(
            b[0] - OUTSIDE_MARGIN_M,
            b[1] - OUTSIDE_MARGIN_M,
            b[2] + OUTSIDE_MARGIN_M,
            b[3] + OUTSIDE_MARGIN_M,
        ),
        min_solve_interval_s=solve_interval_s,
    )
    offsets = receiver_offsets(config.state_path)
    calibration = dict(store.calibration)
    if survey is not None:  # measured in this room: it wins over the map's figures
        for rid, fit in survey.receivers.items():
            calibration[rid] = (fit.power_dbm, fit.exponent)
    grid = None
    if settings.method == "grid":
        default_power = p.measured_power or device_profile.measured_power_dbm
        sigma = measurement_sigma(p.shadowing_db, p.measurement_noise_db)
        grid = grid_for(store, calibration, offsets, default_power, settings, sigma, survey)
    tracker = PresenceTracker(
        settings, store.receivers, calibration, store.receiver_levels, offsets, grid
    )
    tracker.survey = survey
    return tracker


def load_survey(path: str | Path) -> Survey:
    """A survey file (`gateway survey`); MapError naming the file and what is wrong (a
    reload keeps the running map and survey)."""
    try:
        return Survey.from_json(json.loads(Path(path).read_text()))
    except OSError as e:
        raise MapError(str(path), "", f"survey not readable ({e.strerror})") from None
    except ValueError as e:
        raise MapError(str(path), "", f"not a survey from `gateway survey` ({e})") from None
