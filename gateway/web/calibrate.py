"""The console's calibration helper: which receiver to stand at, long enough to count.

Staff pick a receiver (a gateway's radio, named on the plan) and a map beacon, carry the
beacon to the receiver, hold it at the given distance and keep still. The helper

* names the receiver and says where it is ("by Pickup counter, bottom right of the plan");
* counts only that receiver's readings of that beacon (`presence.calibration.Calibrator`,
  as `gateway calibrate --receiver` does) and says when another receiver hears the beacon
  much louder (the staff member is standing at the wrong one);
* refuses a duration too short for `MIN_SAMPLES` readings: the beacon's advertising
  interval (the slower of its profile's and the one observed in this shop) times
  `MIN_SAMPLES`, with room for the adverts one receiver misses;
* reports the readings as a series for the page's plot (RSSI in dBm against seconds since
  the start) with the RSSI the beacon's profile expects at that distance;
* saves exactly what `gateway calibrate` saves, and only a plausible result.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from shapely.geometry import Point

from gateway.clock import Clock
from gateway.decode import ble as decode
from gateway.model import Advert
from gateway.presence import calibration
from gateway.runtime.gateway import Gateway
from gateway.runtime.status import StatusView
from gateway.site.hardware import load_beacon_profile
from gateway.site.storemap import Anchor, StoreMap
from gateway.store import calibration as calibration_file

MIN_SAMPLES = calibration.MIN_SAMPLES
# One receiver hears half to all of a beacon's adverts (the demo trace: 44 %, 2.5 m away): ask
# for this much more time than the interval alone needs.
MISSED_ADVERTS = 2.0
MIN_SECONDS, MAX_SECONDS = 10, 300
MIN_DISTANCE_M, MAX_DISTANCE_M = 0.2, 20.0
# Another receiver this much louder (median) means the beacon is not held at the chosen one.
WRONG_RECEIVER_DB = 6.0


def _error(status: type[web.HTTPException], message: str, **more: object) -> web.HTTPException:
    body = {"error": message, **more}
    return status(text=json.dumps(body), content_type="application/json")


def where_on_plan(store: StoreMap, receiver: str) -> str:
    """'by Pickup counter, bottom right of the plan': enough to walk to it."""
    x, y = store.receivers[receiver]
    level = store.receiver_levels.get(receiver, 0)
    here = Point(x, y)
    zones = [z for z in store.zones if z.level == level]
    nearest = min(zones, key=lambda z: z.shape.distance(here), default=None)
    words = []
    if nearest is not None:
        distance = nearest.shape.distance(here)
        if distance == 0:
            words.append(f"in {nearest.name}")
        elif distance <= 3.0:
            words.append(f"by {nearest.name}")
    min_x, min_y, max_x, max_y = store.bounds
    across = (x - min_x) / max(max_x - min_x, 1e-9)
    up = (y - min_y) / max(max_y - min_y, 1e-9)
    side = "left" if across < 1 / 3 else "right" if across > 2 / 3 else ""
    end = "bottom" if up < 1 / 3 else "top" if up > 2 / 3 else ""
    spot = f"{end} {side}".strip() or "middle"
    words.append(f"{spot} of the plan" + (f", level {level}" if len(store.levels) > 1 else ""))
    return ", ".join(words)


def nearest_receiver(store: StoreMap, anchor: Anchor) -> str | None:
    same = [r for r in store.receivers if store.receiver_levels.get(r, 0) == anchor.level]
    return min(
        same or store.receivers,
        key=lambda r: math.dist(store.receivers[r], (anchor.x, anchor.y)),
        default=None,
    )


@dataclass(slots=True)
class Run:
    calibrator: calibration.Calibrator
    identity: str
    receiver: str
    expected_dbm: float  # what the profile says this receiver should read at the distance
    clock: Clock
    started: float  # monotonic: the run's length is a duration
    seconds: float
    series: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=1200))
    saved: str = ""

    @property
    def done(self) -> bool:
        return self.elapsed() >= self.seconds

    def elapsed(self) -> float:
        return self.clock.monotonic() - self.started

    def problems(self, result: calibration.CalibrationResult) -> list[str]:
        out = result.problems()
        if result.samples < MIN_SAMPLES and self.done:
            rate = result.samples / max(self.seconds, 1e-9)
            again = math.ceil(MIN_SAMPLES / rate * 1.2)
            out.append(
                f"{self.receiver} heard {result.samples} in {self.seconds:g} s: start again "
                + (f"with {again} s" if again <= MAX_SECONDS else "closer to the receiver")
            )
        loudest = self.calibrator.best_receiver()
        if loudest and loudest != self.receiver:
            other = self.calibrator.result(loudest)
            if (
                other is not None
                and other.samples >= MIN_SAMPLES
                and other.median_dbm - result.median_dbm >= WRONG_RECEIVER_DB
            ):
                out.append(
                    f"{loudest} hears the beacon {other.median_dbm - result.median_dbm:.0f} dB "
                    f"louder than {self.receiver}: stand at {self.receiver}, or pick {loudest}"
                )
        return out


@dataclass(slots=True)
class CalibrationHelper:
    gateway: Gateway
    view: StatusView
    run: Run | None = None

    def interval_s(self, anchor: Anchor) -> float:
        """Seconds between the beacon's adverts: its profile's, or slower as heard here."""
        nominal = load_beacon_profile(anchor.profile).advertising_interval_ms / 1000.0
        observed = self.view.beacon_intervals().get(anchor.id)
        return max(nominal, observed or 0.0)

    def min_seconds(self, anchor: Anchor) -> int:
        need = math.ceil(MIN_SAMPLES * self.interval_s(anchor) * MISSED_ADVERTS)
        return max(MIN_SECONDS, need)

    # --- HTTP -----------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        """What the form offers: receivers with where they are, beacons with the shortest
        duration that gets enough readings."""
        store = self.gateway.store_map
        beacons = []
        for anchor in store.anchors:
            interval = self.interval_s(anchor)
            beacons.append(
                {
                    "id": anchor.id,
                    "interval_s": round(interval, 2),
                    "min_seconds": self.min_seconds(anchor),
                    "nearest_receiver": nearest_receiver(store, anchor),
                }
            )
        return web.json_response(
            {
                "receivers": [{"id": r, "where": where_on_plan(store, r)} for r in store.receivers],
                "beacons": beacons,
                "min_readings": MIN_SAMPLES,
                "max_seconds": MAX_SECONDS,
                "distance_m": [MIN_DISTANCE_M, MAX_DISTANCE_M],
            }
        )

    def on_advert(self, advert: Advert) -> None:
        run = self.run
        if run is None or run.done:
            return
        frame, _reason = decode.decode_advert(advert)
        if frame is not None and frame.identity == run.identity:
            run.calibrator.add(advert.receiver, advert.rssi)
            if advert.receiver == run.receiver:
                run.series.append((round(run.elapsed(), 2), advert.rssi))

    async def status(self, request: web.Request) -> web.Response:
        run = self.run
        if run is None:
            return web.json_response({"running": False, "min_readings": MIN_SAMPLES})
        result = run.calibrator.result(run.receiver)
        return web.json_response(
            {
                "running": not run.done,
                "beacon": run.calibrator.beacon,
                "receiver": run.receiver,
                "where": where_on_plan(self.gateway.store_map, run.receiver),
                "distance_m": run.calibrator.distance_m,
                "elapsed_s": round(min(run.elapsed(), run.seconds), 1),
                "seconds": run.seconds,
                "readings": run.calibrator.count(run.receiver),
                "min_readings": MIN_SAMPLES,
                "expected_dbm": run.expected_dbm,
                "series": list(run.series)[-600:],
                "result": None
                if result is None
                else {
                    "receiver": result.receiver,
                    "samples": result.samples,
                    "median_dbm": result.median_dbm,
                    "spread_db": result.spread_db,
                    "measured_power_dbm": result.measured_power_dbm,
                    "offset_db": result.offset_db,
                    "problems": run.problems(result),
                },
                "saved": run.saved,
            }
        )

    async def start(self, request: web.Request) -> web.Response:
        store = self.gateway.store_map
        try:
            body = await request.json()
            beacon = str(body["beacon"])
            receiver = str(body.get("receiver") or "")
            distance = float(body.get("distance", 1.0))
            seconds = float(body.get("seconds", 30.0))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _error(
                web.HTTPBadRequest, "expected receiver, beacon, distance (m) and seconds"
            ) from None
        anchor = next((a for a in store.anchors if a.id == beacon), None)
        if anchor is None:
            known = ", ".join(a.id for a in store.anchors) or "none"
            raise _error(web.HTTPBadRequest, f"no beacon {beacon!r} on the map (known: {known})")
        receiver = receiver or nearest_receiver(store, anchor) or ""
        if receiver not in store.receivers:
            known = ", ".join(store.receivers) or "none"
            raise _error(
                web.HTTPBadRequest, f"no receiver {receiver!r} on the map (known: {known})"
            )
        if not MIN_DISTANCE_M <= distance <= MAX_DISTANCE_M:
            raise _error(
                web.HTTPBadRequest,
                f"distance must be between {MIN_DISTANCE_M:g} and {MAX_DISTANCE_M:g} m",
            )
        need = self.min_seconds(anchor)
        if not math.isfinite(seconds) or seconds < need or seconds > MAX_SECONDS:
            if need > MAX_SECONDS:
                message = (
                    f"{anchor.id} advertises only every {self.interval_s(anchor):.1f} s: "
                    f"{MIN_SAMPLES} readings would take more than {MAX_SECONDS} s"
                )
            elif seconds > MAX_SECONDS:
                message = f"at most {MAX_SECONDS} s"
            else:
                message = (
                    f"{anchor.id} advertises about every {self.interval_s(anchor):.1f} s: "
                    f"{MIN_SAMPLES} readings need at least {need} s. Choose {need} s or more."
                )
            raise _error(web.HTTPBadRequest, message, min_seconds=min(need, MAX_SECONDS))
        profile = load_beacon_profile(anchor.profile)
        expected = profile.measured_power_dbm - 10 * profile.path_loss_exponent * math.log10(
            distance
        )
        clock = self.gateway.clock
        self.run = Run(
            calibration.Calibrator(
                anchor.id, distance, profile.measured_power_dbm, profile.path_loss_exponent
            ),
            anchor.identity,
            receiver,
            round(expected, 1),
            clock,
            clock.monotonic(),
            seconds,
        )
        return web.json_response(
            {
                "started": True,
                "beacon": anchor.id,
                "receiver": receiver,
                "where": where_on_plan(store, receiver),
                "seconds": seconds,
            }
        )

    async def save(self, request: web.Request) -> web.Response:
        run = self.run
        result = None if run is None else run.calibrator.result(run.receiver)
        if run is None or not run.done or result is None:
            raise _error(web.HTTPConflict, "no finished measurement to save")
        problems = run.problems(result)
        if problems:
            raise _error(web.HTTPConflict, "; ".join(problems))
        path = calibration_file.save(
            self.gateway.config.state_path, result, self.gateway.clock.wall()
        )
        run.saved = str(path)
        return web.json_response({"saved": str(path), "offset_db": result.offset_db})

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/calibration", self.status)
        r.add_get("/api/calibration/options", self.options)
        r.add_post("/api/calibration", self.start)
        r.add_post("/api/calibration/save", self.save)
