"""RSSI to distance: the per-(device, receiver) Kalman filter and the log-distance model.

* RSSI per (device, receiver) follows a random walk observed with Gaussian noise: a 1-D
  Kalman filter is the optimal smoother for that and costs a handful of float operations.
  Process noise grows with the time between readings, so sparse and dense advertisers are
  handled alike. Readings beyond `outlier_sigma` of the prediction are rejected (multipath
  nulls, body blocking); three rejections in a row mean the level really moved, and the
  filter restarts there instead of locking out a moving person.
* Distance: log-distance path loss, d = 10 ** ((P1m - RSSI) / (10 n)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LN10_OVER_10 = math.log(10) / 10


def rssi_to_distance(rssi: float, measured_power: float, exponent: float) -> float:
    """Log-distance path loss: metres at which `measured_power` (RSSI at 1 m) drops to `rssi`."""
    return float(10 ** ((measured_power - rssi) / (10.0 * exponent)))


def distance_sigma(distance: float, rssi_sigma: float, exponent: float) -> float:
    """First-order propagation of RSSI uncertainty to distance (log-normal shadowing)."""
    return distance * LN10_OVER_10 * rssi_sigma / exponent


@dataclass(slots=True)
class RssiFilter:
    """Random-walk Kalman filter on RSSI in dB."""

    process_noise: float  # dB per sqrt(s)
    measurement_noise: float  # dB
    outlier_sigma: float
    level: float = math.nan
    variance: float = 0.0
    t: float = -math.inf
    rejected_in_row: int = 0

    def update(self, t: float, rssi: float) -> bool:
        """Fold one reading in; False if it was rejected as an outlier."""
        r2 = self.measurement_noise**2
        if math.isnan(self.level):
            self.level, self.variance, self.t = rssi, r2, t
            return True
        dt = max(0.0, t - self.t)
        predicted_var = self.variance + self.process_noise**2 * dt
        innovation = rssi - self.level
        s = predicted_var + r2
        if innovation * innovation > self.outlier_sigma**2 * s:
            self.rejected_in_row += 1
            if self.rejected_in_row < 3:
                self.variance = predicted_var
                self.t = t
                return False
            # The level really moved (a person turned a corner): start again from here.
            self.level, self.variance, self.t, self.rejected_in_row = rssi, r2, t, 0
            return True
        gain = predicted_var / s
        self.level += gain * innovation
        self.variance = (1.0 - gain) * predicted_var
        self.t = t
        self.rejected_in_row = 0
        return True

    @property
    def sigma(self) -> float:
        return math.sqrt(self.variance)


@dataclass(frozen=True, slots=True)
class Range:
    """Where one receiver puts a device: its position and the estimated distance."""

    receiver: str
    x: float
    y: float
    distance: float
    sigma: float  # of the distance, metres
    rssi: float
    sigma_db: float  # of the filtered RSSI plus the model's shadowing, dB
    exponent: float
