"""Site survey and map-aware tracking: the survey fit against simulated rooms with known
radio, bad walk lines, the grid filter's walls and obstacles, and the CLI end to end."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, box

from gateway.config.sections import Config
from gateway.ops.locate import make_tracker
from gateway.presence.grid import GridFilter, GridSpace, RadioMap
from gateway.presence.survey import (
    HEIGHT_M,
    Reading,
    Survey,
    SurveyError,
    fit_survey,
    parse_walk,
)
from gateway.site.storemap import parse_map

ROOM = (0.0, 0.0, 12.0, 10.0)
# receiver → (position, true gain at 1 m for the survey beacon, true exponent)
TRUE = {
    "r1": ((0.5, 0.5), -52.0, 2.0),
    "r2": ((11.5, 0.5), -61.0, 2.6),
    "r3": ((11.5, 9.5), -57.0, 3.2),
    "r4": ((0.5, 9.5), -65.0, 1.8),
}


def _rssi(rid: str, x: float, y: float, rng: random.Random, noise: float = 3.0) -> float:
    (rx, ry), p, n = TRUE[rid]
    d = math.sqrt((x - rx) ** 2 + (y - ry) ** 2 + HEIGHT_M**2)
    return round(p - 10 * n * math.log10(d) + rng.gauss(0, noise), 1)


def _zigzag(seconds: float = 240.0, speed: float = 0.35) -> list[tuple[float, float, float]]:
    """A lawn-mower walk over the room: (t, x, y) every 0.25 s."""
    legs = [(1.0, y) for y in np.arange(1.0, 9.6, 1.5)]
    route = []
    for k, (_, y) in enumerate(legs):
        xs = (1.0, 11.0) if k % 2 == 0 else (11.0, 1.0)
        route += [(xs[0], y), (xs[1], y)]
    out, t = [], 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(route):
        steps = max(1, int(math.hypot(x1 - x0, y1 - y0) / (speed * 0.25)))
        for s in range(steps):
            f = s / steps
            out.append((t, x0 + f * (x1 - x0), y0 + f * (y1 - y0)))
            t += 0.25
            if t > seconds:
                return out
    return out


def _walk(rng: random.Random, receivers: tuple[str, ...] = tuple(TRUE)) -> list[Reading]:
    return [
        Reading(t, rid, "tag", _rssi(rid, x, y, rng), x, y)
        for t, x, y in _zigzag()
        for rid in receivers
    ]


def _positions() -> dict[str, tuple[float, float]]:
    return {rid: pos for rid, (pos, _, _) in TRUE.items()}


def test_survey_recovers_known_gains_and_exponents() -> None:
    survey = fit_survey(_walk(random.Random(7)), _positions(), ROOM)
    for rid, (_, power, exponent) in TRUE.items():
        fit = survey.receivers[rid]
        assert fit.power_dbm == pytest.approx(power, abs=1.0), rid
        assert fit.exponent == pytest.approx(exponent, abs=0.15), rid
        assert fit.spread_db == pytest.approx(3.0, abs=0.5), rid
    # the radio map explains held-out stretches of the walk as well as the true model can
    # (3 dB of noise), and far better than a nominal model that knows nothing of the room
    assert survey.held_out["radio_map"] < 3.5
    assert survey.held_out["nominal"] > survey.held_out["path_loss"] + 1.0
    # and round-trips through its file format
    again = Survey.from_json(json.loads(json.dumps(survey.to_json())))
    mu, _ = again.expected("r2", np.array([6.0]), np.array([5.0]))
    true_mu = -61.0 - 26.0 * math.log10(math.sqrt(5.5**2 + 4.5**2 + 1.0))
    assert float(mu[0]) == pytest.approx(true_mu, abs=1.5)


def test_survey_radio_map_learns_a_local_shadow() -> None:
    """A shelf shadowing r1 over part of the room (10 dB): the path-loss model cannot say
    where; the radio map does."""
    rng = random.Random(3)
    readings = []
    for r in _walk(rng):
        shadow = 10.0 if r.receiver == "r1" and 4.0 <= r.x <= 8.0 and r.y >= 5.0 else 0.0
        readings.append(Reading(r.t, r.receiver, r.device, r.rssi - shadow, r.x, r.y))
    survey = fit_survey(readings, _positions(), ROOM)
    inside, _ = survey.expected("r1", np.array([6.0]), np.array([7.0]))
    outside, _ = survey.expected("r1", np.array([6.0]), np.array([2.0]))
    (rx, ry), p, n = TRUE["r1"]

    def model(x: float, y: float) -> float:
        return p - 10 * n * math.log10(math.sqrt((x - rx) ** 2 + (y - ry) ** 2 + 1))

    assert float(inside[0]) - model(6.0, 7.0) < -6.0
    assert abs(float(outside[0]) - model(6.0, 2.0)) < 2.5
    assert survey.held_out["radio_map"] < survey.held_out["path_loss"]


def test_bad_walk_lines_are_reported_with_numbers_and_skipped() -> None:
    lines = [
        '{"t": 0, "x": 1, "y": 1}',
        '{"t": 10, "x": 11, "y": 1}',
        '{"t": 5, "receiver": "r1", "device": "tag", "rssi": -60}',  # placed on the route
        "not json",
        '{"t": 6, "receiver": "r1", "rssi": 12}',
        '{"t": "x", "receiver": "r1", "rssi": -60, "x": 1, "y": 1}',
        '{"t": 7, "receiver": "r2", "rssi": -70, "x": 2, "y": 3}',
        '{"t": 30, "receiver": "r2", "rssi": -70}',  # after the last waypoint
        "[1, 2]",
        '{"t": 8, "receiver": 5, "rssi": -70, "x": 2, "y": 3}',
    ]
    readings, errors = parse_walk(lines)
    assert [(r.receiver, r.x, r.y) for r in readings] == [("r1", 6.0, 1.0), ("r2", 2.0, 3.0)]
    assert [e.split(":")[0] for e in errors] == [
        "line 4",
        "line 5",
        "line 6",
        "line 9",
        "line 10",
        "line 8",
    ]
    assert "rssi" in errors[1] and "waypoints around t=30" in errors[-1]


def test_a_survey_that_cannot_explain_its_data_says_so() -> None:
    rng = random.Random(1)
    with pytest.raises(SurveyError, match="no readings"):
        fit_survey([], _positions(), ROOM)
    few = _walk(rng)[:40]
    with pytest.raises(SurveyError, match="too few readings"):
        fit_survey(few, _positions(), ROOM)
    missing = _walk(rng, receivers=("r1", "r2", "r3"))
    with pytest.raises(SurveyError, match=r"r4 \(0\)"):
        fit_survey(missing, _positions(), ROOM)


def _space_with_wall(door: bool) -> GridSpace:
    wall = LineString([(6.0, 0.0), (6.0, 10.0)])
    if door:
        wall = LineString([(6.0, 0.0), (6.0, 8.0)])
    return GridSpace.build(ROOM, box(*ROOM), [wall], [box(2.0, 2.0, 3.0, 7.0)])


def test_grid_motion_never_goes_through_a_wall_or_into_a_shelf() -> None:
    for door, crosses in ((False, False), (True, True)):
        space = _space_with_wall(door)
        p = np.zeros(space.shape)
        p[space.cell_of(1.0, 1.0)] = 1.0
        for _ in range(30):  # a minute of walking
            p = space.diffuse(p, 2.0)
        assert float(p.sum()) == pytest.approx(1.0)
        right = float(p[space.xs > 6.0].sum())
        assert (right > 0.01) is crosses
        if not crosses:
            assert right == 0.0
        assert float(p[~space.walkable].sum()) == 0.0
        i, j = space.cell_of(2.5, 4.0)
        assert not space.walkable[i, j]


def test_grid_filter_follows_a_walk_and_keeps_out_of_the_shelf() -> None:
    """Readings from a known radio model along a walk: the filter follows it, its mass never
    inside the shelf, and behind a wall it does not jump through."""
    rng = random.Random(5)
    space = _space_with_wall(door=True)

    def expect(rid: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (rx, ry), p, n = TRUE[rid]
        mu = p - 10 * n * np.log10(np.sqrt((x - rx) ** 2 + (y - ry) ** 2 + HEIGHT_M**2))
        return mu, np.full_like(mu, 3.0)

    f = GridFilter(RadioMap(space, expect))
    errors = []
    for t, x, y in _zigzag(seconds=60.0):
        if 5.5 < x < 6.5 and y < 8.0:
            continue  # the wall: the walk (straight legs) is not physical there; skip it
        for rid in TRUE:
            f.update(t, rid, _rssi(rid, x, y, rng))
        assert f.p is not None and float(f.p[~space.walkable].sum()) == 0.0
        est = f.estimate()
        assert est is not None
        errors.append(math.hypot(est[0] - x, est[1] - y))
    assert float(np.median(errors)) < 1.5


def _map_file(tmp_path: Path) -> Path:
    features = [
        {
            "type": "Feature",
            "properties": {"kind": "floor"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [12, 0], [12, 10], [0, 10], [0, 0]]],
            },
        },
        {
            "type": "Feature",
            "properties": {"kind": "obstacle"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[2, 2], [3, 2], [3, 7], [2, 7], [2, 2]]],
            },
        },
    ]
    for rid, ((x, y), _, _) in TRUE.items():
        features.append(
            {
                "type": "Feature",
                "properties": {"kind": "gateway", "id": rid},
                "geometry": {"type": "Point", "coordinates": [x, y]},
            }
        )
    path = tmp_path / "room.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _gateway(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_survey_command_end_to_end(tmp_path: Path) -> None:
    room = _map_file(tmp_path)
    walk = tmp_path / "walk.jsonl"
    lines = [
        json.dumps(
            {"t": r.t, "receiver": r.receiver, "device": "tag", "rssi": r.rssi, "x": r.x, "y": r.y}
        )
        for r in _walk(random.Random(11))
    ]
    lines.insert(3, '{"t": 1, "receiver": "r1", "rssi": "loud", "x": 1, "y": 1}')
    walk.write_text("\n".join(lines) + "\n")
    site = tmp_path / "site.json"
    result = _gateway("survey", str(walk), "--map", str(room), "-o", str(site))
    assert result.returncode == 0, result.stderr
    assert "walk.jsonl line 4: rssi" in result.stderr
    assert "held-out RMS error" in result.stdout
    doc = json.loads(site.read_text())
    assert doc["receivers"]["r3"]["path_loss_exponent"] == pytest.approx(3.2, abs=0.15)

    # locate with the survey and the grid method: one estimate per instant, near the truth
    rng = random.Random(12)
    test = [
        json.dumps({"t": t, "receiver": rid, "device": "p", "rssi": _rssi(rid, x, y, rng)})
        for t, x, y in _zigzag(seconds=30.0)
        for rid in TRUE
    ]
    result = _gateway(
        "locate",
        "--map",
        str(room),
        "--survey",
        str(site),
        "--method",
        "grid",
        stdin="\n".join(test),
    )
    assert result.returncode == 0, result.stderr
    estimates = [json.loads(x) for x in result.stdout.splitlines()]
    assert estimates and all(e["method"] == "grid" for e in estimates)
    truth = {t: (x, y) for t, x, y in _zigzag(seconds=30.0)}
    errors = [math.hypot(e["x"] - truth[e["t"]][0], e["y"] - truth[e["t"]][1]) for e in estimates]
    assert float(np.median(errors)) < 1.5

    # a survey that is not there, or not a survey: said, exit 2
    for bad in (tmp_path / "missing.json", walk):
        result = _gateway("locate", "--map", str(room), "--survey", str(bad), stdin=test[0])
        assert result.returncode == 2
        assert str(bad) in result.stderr and "survey" in result.stderr

    # too few readings for a receiver: said, exit 2, nothing written
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(x for x in lines if '"r4"' not in x) + "\n")
    result = _gateway("survey", str(short), "--map", str(room), "-o", str(tmp_path / "no.json"))
    assert result.returncode == 2
    assert "too few readings for receiver(s) r4 (0)" in result.stderr
    assert not (tmp_path / "no.json").exists()


def test_the_tracker_uses_the_survey_for_every_method(tmp_path: Path) -> None:
    survey = fit_survey(_walk(random.Random(2)), _positions(), ROOM)
    store = parse_map(json.loads(_map_file(tmp_path).read_text()), "room", require_zones=False)
    assert len(store.obstacles) == 1
    tracker = make_tracker(Config(), store, "max_likelihood", survey)
    assert tracker.calibration["r3"][1] == pytest.approx(3.2, abs=0.15)
    grid = make_tracker(Config(), store, "grid", survey)
    assert grid.grid is not None
    i, j = grid.grid.radios[0].space.cell_of(2.5, 4.0)
    assert not grid.grid.radios[0].space.walkable[i, j]


def _line_walk(
    y: float, walk: int, rng: random.Random, truth: dict[str, tuple[float, float]], exponent: float
) -> list[Reading]:
    """A straight walk across the room at height `y` (0.35 m/s, a reading every 0.25 s per
    receiver): each receiver hears it over a narrow range of distances only."""
    out = []
    for k in range(int(10.0 / (0.35 * 0.25))):
        t, x = 1000.0 * walk + 0.25 * k, 1.0 + 0.35 * 0.25 * k
        for rid, (rx, ry) in _positions().items():
            d = math.sqrt((x - rx) ** 2 + (y - ry) ** 2 + HEIGHT_M**2)
            rssi = truth[rid][0] - 10 * exponent * math.log10(d) + rng.gauss(0, 3.0)
            out.append(Reading(t, rid, "tag", round(rssi, 1), x, y, walk))
    return out


def test_survey_shares_one_exponent_when_other_walks_say_so() -> None:
    """One exponent for the room (2.2), different gains; two walks along lines that give
    each receiver a narrow range of distances. Predicting each walk from the other prefers
    the room's exponent: it is recovered, and the gains with it; the map then predicts the
    room's middle, where no one walked, within the noise."""
    gains = {"r1": (-52.0, 0.0), "r2": (-61.0, 0.0), "r3": (-57.0, 0.0), "r4": (-65.0, 0.0)}
    rng = random.Random(5)
    readings = _line_walk(2.0, 0, rng, gains, 2.2) + _line_walk(8.0, 1, rng, gains, 2.2)
    survey = fit_survey(readings, _positions(), ROOM)
    assert survey.room_exponent == pytest.approx(2.2, abs=0.15)
    assert survey.held_out["radio_map_other_walks_room"] < survey.held_out["radio_map_other_walks"]
    for rid, (power, _) in gains.items():
        assert survey.receivers[rid].power_dbm == pytest.approx(power, abs=1.0), rid
        assert survey.receivers[rid].exponent == survey.room_exponent
    for rid, ((rx, ry), _, _) in TRUE.items():
        mu, _ = survey.expected(rid, np.array([6.0]), np.array([5.0]))
        true_mu = gains[rid][0] - 22.0 * math.log10(math.sqrt((6 - rx) ** 2 + (5 - ry) ** 2 + 1))
        assert float(mu[0]) == pytest.approx(true_mu, abs=1.5), rid
    again = Survey.from_json(json.loads(json.dumps(survey.to_json())))
    assert again.room_exponent == survey.room_exponent


def test_survey_keeps_each_receivers_exponent_when_they_differ() -> None:
    """The simulated room's receivers have exponents 1.8-3.2: two full walks over it, each
    predicted from the other, keep each receiver's own exponent."""
    rng = random.Random(9)
    first = _walk(rng)
    second = [
        Reading(r.t + 1000.0, r.receiver, r.device, _rssi(r.receiver, r.x, r.y, rng), r.x, r.y, 1)
        for r in first
    ]
    survey = fit_survey(first + second, _positions(), ROOM)
    assert survey.room_exponent is None
    assert survey.held_out["radio_map_other_walks"] < survey.held_out["radio_map_other_walks_room"]
    for rid, (_, _, exponent) in TRUE.items():
        assert survey.receivers[rid].exponent == pytest.approx(exponent, abs=0.15), rid
