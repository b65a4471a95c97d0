"""Replay source: feeds a recorded trace into the pipeline, paced or as fast as possible."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..model import Advert, Tap
from .trace import TraceError, parse_line

Item = Advert | Tap


async def replay(
    path: Path,
    speed: float,
    emit: Callable[[Item], Awaitable[None]],
    on_error: Callable[[TraceError], None],
) -> int:
    """Read `path` line by line and `emit` each item. `speed` 0 means no pacing.

    Returns the number of items emitted. File reading is line-buffered, so a long trace
    costs no more memory than a short one.
    """
    emitted = 0
    start_wall = time.monotonic()
    start_t: float | None = None
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            item = parse_line(text, number)
            if item is None:
                continue
            if isinstance(item, TraceError):
                on_error(item)
                continue
            if speed > 0:
                if start_t is None:
                    start_t = item.t
                due = start_wall + (item.t - start_t) / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await emit(item)
            emitted += 1
            if emitted % 256 == 0:
                await asyncio.sleep(0)  # let the consumer run when unpaced
    return emitted
