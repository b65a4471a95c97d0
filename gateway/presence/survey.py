"""Site survey: what this room does to the signal, learned from walks with known positions.

A survey walk is a beacon carried along known positions while the store's receivers hear it:
one reading per line `{"t", "receiver", "device", "rssi", "x", "y"}`, or readings without
`x`, `y` plus waypoints `{"t", "x", "y"}` (the route, interpolated linearly in time).

The fit, per receiver:

1. **Path loss**: RSSI = P + 10 n log10(1/d) by robust (Huber) least squares on the log of the
   3-D distance (device and receiver heights differ by `HEIGHT_M`): P is the receiver's gain
   for the survey beacon at 1 m, n its path-loss exponent (bounded to 1.5-5) — or one
   exponent for the whole room (`room_exponent`), when the walks say so (below).
2. **Radio map** (fingerprinting): the residuals of that model, smoothed over a grid by a
   Gaussian kernel (its width chosen by the held-out check below) and shrunk to 0 where the
   walk did not pass (`PRIOR_WEIGHT` readings' worth of "the model is right"), give the
   expected RSSI at every grid node; the kernel-weighted spread of the residuals around it,
   shrunk to the receiver's overall spread, gives the node's standard deviation. Between
   nodes: bilinear.

Held-out check: each walk is cut into `FOLDS` stretches of time; every stretch is predicted by
a fit on the others, and the RMS error in dB is reported for the nominal model, the fitted path
loss and the radio map; the kernel width that predicts the held-out stretches best is the
one the survey keeps (from `BANDWIDTHS_M`). A walk covers each receiver over a narrow range of
distances, where gain and exponent trade off; a route the walk did not take is far from it.
So with two walks or more, each whole walk is predicted from the others with per-receiver and
with one room-wide exponent, and the better one is kept (with one walk, the held-out
stretches decide). Pure: the caller reads and writes the files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

HEIGHT_M = 1.0  # receivers on shelves/ceilings, device in a hand or pocket: ~1 m apart
GRID_STEP_M = 0.5
BANDWIDTH_M = 1.2  # without held-out data to choose by
BANDWIDTHS_M = (0.6, 0.9, 1.3, 2.0)  # the survey picks the one that predicts its walks best
PRIOR_WEIGHT = 8.0
MIN_SPREAD_DB = 2.0
MIN_READINGS_PER_RECEIVER = 30
FOLDS = 5
EXPONENT_BOUNDS = (1.5, 5.0)
SURVEY_VERSION = 1


class SurveyError(ValueError):
    """The survey cannot explain its own data (too few readings, receivers missing)."""


@dataclass(frozen=True, slots=True)
class Reading:
    t: float
    receiver: str
    device: str
    rssi: float
    x: float
    y: float
    walk: int = 0


def _number(obj: dict[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def parse_walk(
    lines: Iterable[str], walk: int = 0, only_device: str | None = None
) -> tuple[list[Reading], list[str]]:
    """The readings of one walk file and its bad lines ("line N: why"), which are skipped.
    Readings without `x`, `y` are placed on the route of the file's waypoints. `only_device`:
    keep only that device's readings (a recorded trace hears every phone in the shop)."""
    placed: list[Reading] = []
    unplaced: list[tuple[int, float, str, str, float]] = []
    waypoints: list[tuple[float, float, float]] = []
    errors: list[str] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            errors.append(f"line {number}: not JSON")
            continue
        if not isinstance(obj, dict):
            errors.append(f"line {number}: expected a JSON object")
            continue
        if obj.get("kind", "ble") != "ble":
            continue  # a trace's NFC taps
        t, x, y, rssi = (_number(obj, k) for k in ("t", "x", "y", "rssi"))
        if t is None:
            errors.append(f"line {number}: t: expected a number of seconds")
            continue
        if ("x" in obj or "y" in obj) and (x is None or y is None):
            errors.append(f"line {number}: x, y: expected numbers (metres on the map)")
            continue
        if "receiver" not in obj and "rssi" not in obj:
            if x is None or y is None:
                errors.append(f"line {number}: a waypoint needs x and y")
                continue
            waypoints.append((t, x, y))
            continue
        # trace lines (docs/trace-format.md) name them `adapter` and `address`
        receiver = obj.get("receiver", obj.get("adapter"))
        device = obj.get("device", obj.get("address", "survey"))
        if not isinstance(receiver, str) or not receiver:
            errors.append(f"line {number}: receiver: expected a string (a gateway id of the map)")
            continue
        if rssi is None or not -127.0 <= rssi < 0.0:
            errors.append(f"line {number}: rssi: expected a number of dBm in [-127, 0)")
            continue
        if not isinstance(device, (str, int)) or device == "":
            errors.append(f"line {number}: device: expected a string")
            continue
        if only_device is not None and str(device) != only_device:
            continue
        if x is None or y is None:
            unplaced.append((number, t, receiver, str(device), rssi))
        else:
            placed.append(Reading(t, receiver, str(device), rssi, x, y, walk))
    waypoints.sort()
    ts = [w[0] for w in waypoints]
    for number, t, receiver, device, rssi in unplaced:
        if len(waypoints) < 2 or not ts[0] <= t <= ts[-1]:
            errors.append(
                f"line {number}: no x, y and no waypoints around t={t:g} to place it on the route"
            )
            continue
        k = max(1, int(np.searchsorted(ts, t)))
        (t0, x0, y0), (t1, x1, y1) = waypoints[k - 1], waypoints[min(k, len(ts) - 1)]
        f = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        placed.append(
            Reading(t, receiver, device, rssi, x0 + f * (x1 - x0), y0 + f * (y1 - y0), walk)
        )
    placed.sort(key=lambda r: r.t)
    return placed, errors


@dataclass(frozen=True, slots=True)
class ReceiverFit:
    power_dbm: float  # survey beacon's RSSI at 1 m at this receiver (gain)
    exponent: float
    spread_db: float  # RMS residual of the path-loss model
    readings: int


def log_distance(x: Any, y: Any, rx: float, ry: float) -> Any:
    """log10 of the 3-D distance from the receiver at (rx, ry) (numpy arrays or floats)."""
    return 0.5 * np.log10((x - rx) ** 2 + (y - ry) ** 2 + HEIGHT_M**2)


def _huber(res: NDArray[np.float64]) -> NDArray[np.float64]:
    scale = max(1.0, 1.4826 * float(np.median(np.abs(res))))
    k = 1.5 * scale
    return np.where(np.abs(res) <= k, 1.0, k / np.maximum(np.abs(res), 1e-9))


def fit_path_loss(
    ld: NDArray[np.float64], rssi: NDArray[np.float64], exponent: float | None = None
) -> tuple[float, float, float]:
    """(P, n, RMS residual) of RSSI = P - 10 n ld, Huber-weighted, n bounded; with
    `exponent` given (the room's), only the gain P is fitted."""
    w = np.ones_like(rssi)
    p, n = float(np.median(rssi)), 2.0 if exponent is None else exponent
    for _ in range(8):
        if exponent is None:
            a = np.stack([np.ones_like(ld), -10.0 * ld], axis=1)
            sw = np.sqrt(w)
            sol, *_ = np.linalg.lstsq(a * sw[:, None], rssi * sw, rcond=None)
            p, n = float(sol[0]), float(sol[1])
        else:
            p = float(np.sum(w * (rssi + 10.0 * n * ld)) / np.sum(w))
        if not EXPONENT_BOUNDS[0] <= n <= EXPONENT_BOUNDS[1]:
            n = min(max(n, EXPONENT_BOUNDS[0]), EXPONENT_BOUNDS[1])
            p = float(np.sum(w * (rssi + 10.0 * n * ld)) / np.sum(w))
        w = _huber(rssi - (p - 10.0 * n * ld))
    res = rssi - (p - 10.0 * n * ld)
    return p, n, float(np.sqrt(np.mean(res * res)))


def room_exponent(per_receiver: list[tuple[NDArray[np.float64], NDArray[np.float64]]]) -> float:
    """One path-loss exponent for the whole room (each receiver keeps its own gain):
    Huber-weighted least squares of every receiver's readings about its own weighted mean
    (the gains drop out), alternated with the gains; bounded like a receiver's own."""
    n = 2.0
    for _ in range(6):
        num = den = 0.0
        for ld, rssi in per_receiver:
            p, _, _ = fit_path_loss(ld, rssi, n)
            w = _huber(rssi - (p - 10.0 * n * ld))
            lc = ld - float(np.sum(w * ld) / np.sum(w))
            rc = rssi - float(np.sum(w * rssi) / np.sum(w))
            num += float(np.sum(w * lc * rc))
            den += float(np.sum(w * lc * lc))
        if den <= 0:
            break
        n = min(max(-num / (10.0 * den), EXPONENT_BOUNDS[0]), EXPONENT_BOUNDS[1])
    return n


@dataclass(slots=True)
class Survey:
    """Per-receiver path loss and radio map of one store (JSON: `to_json` / `from_json`)."""

    receivers: dict[str, ReceiverFit]
    origin: tuple[float, float]
    step: float
    shape: tuple[int, int]  # nodes along x, along y
    mean: dict[str, NDArray[np.float64]]  # receiver → (nx, ny) expected RSSI, dBm
    spread: dict[str, NDArray[np.float64]]  # receiver → (nx, ny) standard deviation, dB
    held_out: dict[str, float] = field(default_factory=dict)
    readings: int = 0
    walks: int = 0
    bandwidth: float = BANDWIDTH_M
    room_exponent: float | None = None  # one exponent for the room, if the walks chose it

    def expected(
        self, receiver: str, x: NDArray[np.float64], y: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Expected RSSI and its spread at points (bilinear between nodes; beyond the grid,
        the path-loss model and the receiver's overall spread)."""
        return _bilinear(self, receiver, x, y)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SURVEY_VERSION,
            "readings": self.readings,
            "walks": self.walks,
            "held_out_rmse_db": self.held_out,
            "bandwidth_m": self.bandwidth,
            "room_exponent": self.room_exponent,
            "height_m": HEIGHT_M,
            "grid": {"origin": list(self.origin), "step_m": self.step, "shape": list(self.shape)},
            "receivers": {
                r: {
                    "power_dbm": round(f.power_dbm, 2),
                    "path_loss_exponent": round(f.exponent, 3),
                    "spread_db": round(f.spread_db, 2),
                    "readings": f.readings,
                    "mean_dbm": np.round(self.mean[r], 2).tolist(),
                    "spread_map_db": np.round(self.spread[r], 2).tolist(),
                }
                for r, f in sorted(self.receivers.items())
            },
        }

    @classmethod
    def from_json(cls, doc: Any) -> Survey:
        """A survey file's content; ValueError naming what is wrong."""
        try:
            if doc.get("version") != SURVEY_VERSION:
                raise ValueError(f"version: expected {SURVEY_VERSION}")
            grid = doc["grid"]
            shape = (int(grid["shape"][0]), int(grid["shape"][1]))
            receivers, mean, spread = {}, {}, {}
            for rid, r in doc["receivers"].items():
                receivers[rid] = ReceiverFit(
                    float(r["power_dbm"]),
                    float(r["path_loss_exponent"]),
                    float(r["spread_db"]),
                    int(r["readings"]),
                )
                mean[rid] = np.asarray(r["mean_dbm"], dtype=float).reshape(shape)
                spread[rid] = np.asarray(r["spread_map_db"], dtype=float).reshape(shape)
            return cls(
                receivers,
                (float(grid["origin"][0]), float(grid["origin"][1])),
                float(grid["step_m"]),
                shape,
                mean,
                spread,
                {k: float(v) for k, v in doc.get("held_out_rmse_db", {}).items()},
                int(doc.get("readings", 0)),
                int(doc.get("walks", 0)),
                float(doc.get("bandwidth_m", BANDWIDTH_M)),
                None if doc.get("room_exponent") is None else float(doc["room_exponent"]),
            )
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"not a survey file ({type(e).__name__}: {e})") from None


def _bilinear(
    s: Survey, receiver: str, x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    nx, ny = s.shape
    fx = np.clip((np.asarray(x, dtype=float) - s.origin[0]) / s.step, 0, nx - 1)
    fy = np.clip((np.asarray(y, dtype=float) - s.origin[1]) / s.step, 0, ny - 1)
    i0 = np.minimum(np.floor(fx).astype(int), max(0, nx - 2))
    j0 = np.minimum(np.floor(fy).astype(int), max(0, ny - 2))
    i1, j1 = np.minimum(i0 + 1, nx - 1), np.minimum(j0 + 1, ny - 1)
    ax, ay = fx - i0, fy - j0
    out = []
    for grid in (s.mean[receiver], s.spread[receiver]):
        out.append(
            (1 - ax) * (1 - ay) * grid[i0, j0]
            + ax * (1 - ay) * grid[i1, j0]
            + (1 - ax) * ay * grid[i0, j1]
            + ax * ay * grid[i1, j1]
        )
    return out[0], out[1]


def _arrays(readings: list[Reading], receiver: str) -> tuple[NDArray[np.float64], ...]:
    sel = [r for r in readings if r.receiver == receiver]
    return (
        np.array([r.x for r in sel]),
        np.array([r.y for r in sel]),
        np.array([r.rssi for r in sel]),
    )


def _fit(
    readings: list[Reading],
    receivers: dict[str, tuple[float, float]],
    bounds: tuple[float, float, float, float],
    step: float,
    bandwidth: float = BANDWIDTH_M,
    room: bool = False,
) -> Survey:
    """`room`: one path-loss exponent for every receiver (`room_exponent`), else each its own."""
    min_x, min_y, max_x, max_y = bounds
    nx = max(2, math.ceil((max_x - min_x) / step) + 1)
    ny = max(2, math.ceil((max_y - min_y) / step) + 1)
    gx, gy = np.meshgrid(min_x + step * np.arange(nx), min_y + step * np.arange(ny), indexing="ij")
    fits, mean, spread = {}, {}, {}
    data = {}
    for rid, (rx, ry) in receivers.items():
        x, y, rssi = _arrays(readings, rid)
        if len(rssi) >= MIN_READINGS_PER_RECEIVER:
            data[rid] = (x, y, rssi, log_distance(x, y, rx, ry))
    shared = room_exponent([(d[3], d[2]) for d in data.values()]) if room and data else None
    for rid, (x, y, rssi, ld) in data.items():
        rx, ry = receivers[rid]
        p, n, rms = fit_path_loss(ld, rssi, shared)
        fits[rid] = ReceiverFit(p, n, rms, len(rssi))
        res = rssi - (p - 10.0 * n * ld)
        # Gaussian kernel from every node to every reading, chunked over nodes.
        nodes_x, nodes_y = gx.ravel(), gy.ravel()
        m = np.empty(nodes_x.size)
        v = np.empty(nodes_x.size)
        for a in range(0, nodes_x.size, 512):
            dx = nodes_x[a : a + 512, None] - x[None, :]
            dy = nodes_y[a : a + 512, None] - y[None, :]
            w = np.exp(-(dx * dx + dy * dy) / (2.0 * bandwidth**2))
            sw = w.sum(1)
            mu = (w * res).sum(1) / (sw + PRIOR_WEIGHT)
            m[a : a + 512] = mu
            dev = res[None, :] - mu[:, None]
            v[a : a + 512] = ((w * dev * dev).sum(1) + PRIOR_WEIGHT * rms * rms) / (
                sw + PRIOR_WEIGHT
            )
        model = p - 10.0 * n * log_distance(nodes_x, nodes_y, rx, ry)
        mean[rid] = (model + m).reshape(nx, ny)
        spread[rid] = np.maximum(np.sqrt(v), MIN_SPREAD_DB).reshape(nx, ny)
    survey = Survey(fits, (min_x, min_y), step, (nx, ny), mean, spread)
    survey.room_exponent = shared
    return survey


def fit_survey(
    readings: list[Reading],
    receivers: dict[str, tuple[float, float]],
    bounds: tuple[float, float, float, float],
    nominal: tuple[float, float] = (-59.0, 2.0),
    step: float = GRID_STEP_M,
) -> Survey:
    """Fit the survey; `SurveyError` when the walks cannot support it. `nominal` (P at 1 m,
    exponent) is the un-surveyed model, reported for comparison on held-out data."""
    if not readings:
        raise SurveyError("no readings with a position: nothing to learn from")
    heard = {r.receiver for r in readings}
    unknown = sorted(heard - set(receivers))
    if unknown:
        readings = [r for r in readings if r.receiver in receivers]
    counts = {rid: sum(1 for r in readings if r.receiver == rid) for rid in receivers}
    short = sorted(rid for rid, c in counts.items() if c < MIN_READINGS_PER_RECEIVER)
    if short:
        raise SurveyError(
            "too few readings for receiver(s) "
            + ", ".join(f"{rid} ({counts[rid]})" for rid in short)
            + f": each needs at least {MIN_READINGS_PER_RECEIVER}; walk closer to them, longer"
        )
    held_out, bandwidth, room = held_out_rmse(readings, receivers, nominal)
    survey = _fit(readings, receivers, bounds, step, bandwidth, room)
    survey.held_out = held_out
    survey.bandwidth = bandwidth
    survey.readings = len(readings)
    survey.walks = len({r.walk for r in readings})
    return survey


def _kernel_residual(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    tx: NDArray[np.float64],
    ty: NDArray[np.float64],
    res: NDArray[np.float64],
    bandwidth: float,
) -> NDArray[np.float64]:
    """The radio map's residual estimate at points (x, y) from training residuals at (tx, ty):
    the same shrunk kernel mean as the grid nodes get, evaluated at the points themselves."""
    out = np.empty(len(x))
    for a in range(0, len(x), 512):
        dx = x[a : a + 512, None] - tx[None, :]
        dy = y[a : a + 512, None] - ty[None, :]
        w = np.exp(-(dx * dx + dy * dy) / (2.0 * bandwidth**2))
        out[a : a + 512] = (w * res).sum(1) / (w.sum(1) + PRIOR_WEIGHT)
    return out


def _prediction_errors(
    train: list[Reading],
    test: list[Reading],
    receivers: dict[str, tuple[float, float]],
    room: bool,
    bandwidths: tuple[float, ...],
) -> dict[float, list[float]]:
    """Errors (dB) predicting `test` from `train`: the fitted path loss (key 0.0) and the
    radio map at each bandwidth; `room`: one exponent for every receiver."""
    data = {}
    for rid, (rx, ry) in receivers.items():
        x, y, rssi = _arrays(test, rid)
        tx, ty, trssi = _arrays(train, rid)
        if len(trssi) >= MIN_READINGS_PER_RECEIVER and len(rssi):
            data[rid] = (x, y, rssi, tx, ty, trssi, log_distance(tx, ty, rx, ry))
    out: dict[float, list[float]] = {b: [] for b in (0.0, *bandwidths)}
    shared = room_exponent([(d[6], d[5]) for d in data.values()]) if room and data else None
    for rid, (x, y, rssi, tx, ty, trssi, tld) in data.items():
        p, n, _ = fit_path_loss(tld, trssi, shared)
        path_res = rssi - (p - 10 * n * log_distance(x, y, *receivers[rid]))
        out[0.0] += list(path_res)
        train_res = trssi - (p - 10 * n * tld)
        for b in bandwidths:
            out[b] += list(path_res - _kernel_residual(x, y, tx, ty, train_res, b))
    return out


def held_out_rmse(
    readings: list[Reading],
    receivers: dict[str, tuple[float, float]],
    nominal: tuple[float, float],
) -> tuple[dict[str, float], float, bool]:
    """RMS error (dB) predicting each held-out stretch of each walk from the other data, for
    the nominal model, the fitted path loss (each receiver its own exponent, or one for the
    room) and the radio map at each candidate bandwidth; and the survey's own choices, from
    its own walks: the bandwidth that predicts held-out stretches best, and whether the room
    shares one exponent — with two walks or more, by predicting each whole walk from the
    others (a route the others did not take is what an exponent must extrapolate to)."""
    by_walk: dict[int, list[Reading]] = {}
    for r in readings:
        by_walk.setdefault(r.walk, []).append(r)
    fold_of: dict[int, int] = {}
    for walk in by_walk.values():
        t0, t1 = walk[0].t, walk[-1].t
        span = max(t1 - t0, 1e-9)
        for r in walk:
            fold_of[id(r)] = min(FOLDS - 1, int(FOLDS * (r.t - t0) / span))
    nominal_errors: list[float] = []
    stretch: dict[bool, dict[float, list[float]]] = {False: {}, True: {}}
    for fold in range(FOLDS):
        train = [r for r in readings if fold_of[id(r)] != fold]
        test = [r for r in readings if fold_of[id(r)] == fold]
        for rid, (rx, ry) in receivers.items():
            x, y, rssi = _arrays(test, rid)
            ld = log_distance(x, y, rx, ry)
            nominal_errors += list(rssi - (nominal[0] - 10 * nominal[1] * ld))
        for room in (False, True):
            for b, e in _prediction_errors(train, test, receivers, room, BANDWIDTHS_M).items():
                stretch[room].setdefault(b, []).extend(e)

    def rms(v: list[float]) -> float:
        return round(float(np.sqrt(np.mean(np.square(v)))), 3) if v else math.inf

    out = {"nominal": rms(nominal_errors), "path_loss": rms(stretch[False].get(0.0, []))}
    out["path_loss_room"] = rms(stretch[True].get(0.0, []))
    scored = {(room, b): rms(stretch[room].get(b, [])) for room in stretch for b in BANDWIDTHS_M}
    room, best = min(scored, key=lambda c: (scored[c], c[0]))
    if len(by_walk) >= 2:
        across: dict[bool, list[float]] = {False: [], True: []}
        for w, test in by_walk.items():
            train = [r for v in by_walk if v != w for r in by_walk[v]]
            for c in across:
                across[c] += _prediction_errors(train, test, receivers, c, (best,))[best]
        out["radio_map_other_walks"] = rms(across[False])
        out["radio_map_other_walks_room"] = rms(across[True])
        room = rms(across[True]) <= rms(across[False])
        best = min(BANDWIDTHS_M, key=lambda b: scored[room, b])
    out["radio_map"] = scored[room, best]
    if not math.isfinite(out["radio_map"]):
        best, room = BANDWIDTH_M, False
    return {k: v for k, v in out.items() if math.isfinite(v)}, best, room
