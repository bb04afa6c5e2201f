"""Durations in the configuration: ``"90s"``, ``"5m"``, ``"1h"``, ``"5d"``, and retry lists.

A duration is a number (integer or decimal) followed by one unit: ``s``
seconds, ``m`` minutes, ``h`` hours, ``d`` days; blanks around it are ignored.
A retry schedule is a comma-separated list of durations, where ``D*N``
repeats the interval ``D`` N times: ``"1m, 5m*2, 1h"`` is 1m, 5m, 5m, 1h
(the relay repeats the last interval for ever). Every problem is a
``ValueError`` whose text is one line the config loader and the CLI print as is.
"""

from __future__ import annotations

import re

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
MAX_REPEAT = 1000


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``"2m"`` -> 120.0); ValueError when it is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration (a number and s, m, h or d): {text.strip()!r}")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be greater than zero: {text.strip()!r}")
    return seconds


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"2m, 5m*2, 1h"`` -> (120.0, 300.0, 300.0, 3600.0); ValueError on bad input."""
    intervals: list[float] = []
    for item in text.split(","):
        duration, star, count = item.partition("*")
        repeat = 1
        if star:
            if not count.strip().isdigit() or not 1 <= int(count) <= MAX_REPEAT:
                raise ValueError(f"*N needs N between 1 and {MAX_REPEAT}: {item.strip()!r}")
            repeat = int(count)
        intervals.extend([parse_duration(duration)] * repeat)
    return tuple(intervals)


def format_duration(seconds: float) -> str:
    """The shortest exact form: 7200 -> ``"2h"``, 90 -> ``"90s"``."""
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"
