"""Times for people: the store's time zone, ISO dates, durations in words.

Machines get UTC (RFC 3339 in events, Unix seconds in metrics and JSON status); anything a
person reads — the console, the CLI, the demo, doctor — goes through these helpers, so a
shop in Berlin reads Berlin time whatever the box's own TZ is.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def local(t: float, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(t, tz)


def local_datetime(t: float, tz: ZoneInfo) -> str:
    """'2026-12-02 10:00:03 CET': date, time and zone abbreviation, store-local."""
    return local(t, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def local_time(t: float, tz: ZoneInfo) -> str:
    """'10:00:03': for lines whose date is said once at the top."""
    return local(t, tz).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """'0 s', '42 s', '5 min 3 s', '3 h 12 min', '2 d 4 h': two units at most, rounded down."""
    if math.isnan(seconds):
        return "unknown"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        text = f"{days} d" + (f" {hours} h" if hours else "")
    elif hours:
        text = f"{hours} h" + (f" {minutes} min" if minutes else "")
    elif minutes:
        text = f"{minutes} min" + (f" {s} s" if s else "")
    else:
        text = f"{s} s"
    return sign + text


def parse_instant(text: str, tz: ZoneInfo, now: float) -> float:
    """A replay start typed by a person → Unix seconds.

    'HH:MM' or 'HH:MM:SS': the latest such store-local time not after `now` (today, or
    yesterday if it has not come yet today); an ISO 8601 date-time: that instant, read in
    the store's zone when it names none. Raises ValueError with what was expected."""
    text = text.strip()
    parts = text.split(":")
    if 2 <= len(parts) <= 3 and all(p.isdigit() and len(p) == 2 for p in parts):
        hour, minute = int(parts[0]), int(parts[1])
        second = int(parts[2]) if len(parts) == 3 else 0
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"{text!r} is not a time of day")
        today = local(now, tz)
        wanted = today.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if wanted.timestamp() > now:
            wanted = (today - timedelta(days=1)).replace(
                hour=hour, minute=minute, second=second, microsecond=0
            )
            # fold/gap at a DST change: normalise through UTC
            wanted = datetime.fromtimestamp(wanted.timestamp(), tz)
        return wanted.timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r}: give HH:MM (store-local, the latest one not in the future) or an "
            "ISO 8601 date-time such as 2026-03-02T10:00:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()
