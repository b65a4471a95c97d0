"""The one clock: every read of the time goes through a `Clock` handed in by the caller.

Two time bases, never mixed (docs/decisions.md, "Time"):

* *wall time* (`Clock.wall`, Unix seconds, UTC) — when this box does something: queue an
  event, retry it, expire it, purge old data, stamp a log line, check a nonce;
* *monotonic time* (`Clock.monotonic`, seconds from an arbitrary origin) — how long
  something took or how long to wait: deadlines, pacing, watchdogs, rates. It never jumps
  when NTP corrects the wall clock.

An event's *occurrence time* (`Advert.t`, `ZoneEvent.t`…) is a third thing: what the radio
or the recorded trace says happened. The pipeline moves only on occurrence time; the shell
and the sinks use the clock.

`SystemClock` is the real one. Tests pin the wall clock with `PinnedClock` (a chosen instant
that then ticks at the real rate) or drive both by hand with `ManualClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Unix seconds (UTC) now."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations and deadlines)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


class PinnedClock:
    """Wall time that starts at `start` and then advances with the real monotonic clock.

    Time-of-day and date are what the test chose, durations and asyncio timeouts are real,
    so code that waits on the event loop behaves as in production."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._origin = time.monotonic()

    def wall(self) -> float:
        return self.start + (time.monotonic() - self._origin)

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return f"PinnedClock({self.start!r})"


class ManualClock:
    """Both clocks stand still until `advance` moves them (pure unit tests only: anything
    awaiting a real timeout would never see this clock move)."""

    def __init__(self, wall: float, monotonic: float = 1000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards; use set_wall for a step")
        self._wall += seconds
        self._monotonic += seconds

    def set_wall(self, wall: float) -> None:
        """A wall-clock step (NTP correction, RTC-less boot): monotonic time is unaffected."""
        self._wall = wall

    def __repr__(self) -> str:
        return f"ManualClock({self._wall!r}, {self._monotonic!r})"
