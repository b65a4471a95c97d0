"""Replay source: feeds a recorded trace into the pipeline, paced or as fast as possible.

A recording is moved to the present by default (`Rebase`): every item keeps its distance
from the trace's first item, and the first one lands at the chosen instant — now, unless a
start was given. A replayed shop then behaves like a live one: quiet hours and store days
are today's, and nothing looks days old to the outbox. `keep_times` replays the recorded
times unchanged (forensics: "what did the gateway decide on the 21st?").
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import Clock
from gateway.model import Advert, Tap
from gateway.trace import TraceError, parse_line

Item = Advert | Tap


@dataclass(frozen=True, slots=True)
class Rebase:
    """Where a trace's first item lands. `shift_for(first_t)` returns the seconds added to
    every item's time (0 keeps the recorded times)."""

    shift_for: Callable[[float], float]

    @staticmethod
    def keep() -> Rebase:
        return Rebase(lambda _first: 0.0)

    @staticmethod
    def to(start: float) -> Rebase:
        return Rebase(lambda first: start - first)


@dataclass(slots=True)
class ReplayProgress:
    """What the replay did, for summaries: the shift applied and the recorded first time."""

    recorded_first_t: float | None = None
    shift_s: float = 0.0


async def replay(
    path: Path,
    speed: float,
    emit: Callable[[Item], Awaitable[None]],
    on_error: Callable[[TraceError], None],
    clock: Clock,
    rebase: Rebase | None = None,
    progress: ReplayProgress | None = None,
) -> int:
    """Read `path` line by line and `emit` each item, its time moved by `rebase` (None:
    recorded times). `speed` 0 means no pacing; pacing follows `clock.monotonic`.

    Returns the number of items emitted. File reading is line-buffered, so a long trace
    costs no more memory than a short one.
    """
    emitted = 0
    start_wall = clock.monotonic()
    start_t: float | None = None
    shift = 0.0
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            item = parse_line(text, number)
            if item is None:
                continue
            if isinstance(item, TraceError):
                on_error(item)
                continue
            if start_t is None:
                start_t = item.t
                shift = rebase.shift_for(item.t) if rebase is not None else 0.0
                if progress is not None:
                    progress.recorded_first_t, progress.shift_s = item.t, shift
            if shift:
                item = dataclasses.replace(item, t=item.t + shift)
            if speed > 0:
                due = start_wall + (item.t - shift - start_t) / speed
                delay = due - clock.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await emit(item)
            emitted += 1
            if emitted % 256 == 0:
                await asyncio.sleep(0)  # let the consumer run when unpaced
    return emitted


def first_time(path: Path) -> float | None:
    """The recorded time of a trace's first valid item (None: no valid item)."""
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            item = parse_line(text, number)
            if item is not None and not isinstance(item, TraceError):
                return item.t
    return None
