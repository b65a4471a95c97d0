"""Shop-floor insights, aggregated as they happen: the funnel, the dwell heat map and the
occupancy per zone. Nothing here is kept per person: the heat map is seconds per square metre
and store day, occupancy is seconds per zone and hour; the funnel keeps the distinct
pseudonymous devices per stage and store day (so one shopper passing twice counts once) and
they are forgotten with the decisions (`gateway.retention_days`).

Funnel stages: `window` (entered a zone some campaign lists in `pass_zones`), `entered` (any
other zone entered), `dwelled` (dwelled in a zone where stock lies).
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.model import Position, ZoneEvent, ZoneEventKind

CELL_M = 1.0
MAX_GAP_S = 5.0  # a device unseen longer than this is not counted for the gap
FLUSH_EVERY_S = 30.0
STAGES = ("window", "entered", "dwelled")


class FloorInsights:
    def __init__(
        self,
        conn: sqlite3.Connection,
        key: bytes,
        tz: ZoneInfo,
        pass_zones: Callable[[], set[str]],
        stocked_zones: Callable[[], set[str]],
    ) -> None:
        self.conn, self.key, self.tz = conn, key, tz
        self.pass_zones, self.stocked_zones = pass_zones, stocked_zones
        self._last: dict[str, Position] = {}
        self._heat: dict[tuple[str, int, int], float] = defaultdict(float)
        self._inside: dict[tuple[str, str], float] = {}
        self._flushed_at = 0.0
        self._day: tuple[float, float, str] = (0.0, -1.0, "")  # [start, end) of a store day

    def set_timezone(self, tz: ZoneInfo) -> None:
        self.tz, self._day = tz, (0.0, -1.0, "")

    def _day_hour(self, t: float) -> tuple[str, int]:
        local = datetime.fromtimestamp(t, self.tz)
        return local.date().isoformat(), local.hour

    def _store_day(self, t: float) -> str:
        """The store day of `t`, computed once per day (positions come many per second)."""
        start, end, name = self._day
        if start <= t < end:
            return name
        local = datetime.fromtimestamp(t, self.tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        begin = midnight.timestamp()
        nxt = midnight + timedelta(days=1)  # wall-clock arithmetic: the next midnight
        self._day = (begin, nxt.timestamp(), local.date().isoformat())
        return self._day[2]

    def position(self, position: Position) -> None:
        last = self._last.get(position.device)
        self._last[position.device] = position
        if last is not None and 0 < position.t - last.t <= MAX_GAP_S:
            day = self._store_day(last.t)
            cell = (day, int(last.x // CELL_M), int(last.y // CELL_M))
            self._heat[cell] += position.t - last.t
        if position.t - self._flushed_at >= FLUSH_EVERY_S:
            self.flush(position.t)

    def zone_event(self, event: ZoneEvent) -> None:
        day, _hour = self._day_hour(event.t)
        stage = ""
        if event.kind == ZoneEventKind.ENTER:
            self._inside[(event.device, event.zone)] = event.t
            stage = "window" if event.zone in self.pass_zones() else "entered"
        elif event.kind == ZoneEventKind.EXIT:
            since = self._inside.pop((event.device, event.zone), event.entered_at)
            self._occupy(event.zone, since, event.t)
        elif event.kind == ZoneEventKind.DWELL and event.zone in self.stocked_zones():
            stage = "dwelled"
        if stage:
            self.conn.execute(
                "INSERT OR IGNORE INTO funnel_marks (store_day, stage, device) VALUES (?,?,?)",
                (day, stage, self._pseudonym(event.device)),
            )

    def _pseudonym(self, device: str) -> str:
        digest = hmac.new(self.key, f"funnel|{device}".encode(), hashlib.sha256).hexdigest()
        return digest[:16]

    def _occupy(self, zone: str, start: float, end: float) -> None:
        """Seconds inside `zone` from start to end, split at the hour boundaries."""
        t = start
        while t < end:
            next_hour = (int(t // 3600) + 1) * 3600.0
            stop = min(end, next_hour)
            day, hour = self._day_hour(t)
            self.conn.execute(
                "INSERT INTO zone_occupancy (store_day, zone, hour, seconds) VALUES (?,?,?,?) "
                "ON CONFLICT DO UPDATE SET seconds = seconds + excluded.seconds",
                (day, zone, hour, stop - t),
            )
            t = stop

    def flush(self, now: float) -> None:
        """Write the heat accumulated since the last flush; forget devices long gone."""
        self._flushed_at = now
        if self._heat:
            self.conn.executemany(
                "INSERT INTO heat_cells (store_day, cx, cy, seconds) VALUES (?,?,?,?) "
                "ON CONFLICT DO UPDATE SET seconds = seconds + excluded.seconds",
                [(d, x, y, s) for (d, x, y), s in self._heat.items()],
            )
            self._heat.clear()
        for device in [d for d, p in self._last.items() if now - p.t > 60]:
            del self._last[device]
