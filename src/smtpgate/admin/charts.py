"""Bar charts of the overview as inline SVG geometry: no JavaScript, no library."""

from __future__ import annotations

import time
from dataclasses import dataclass

from smtpgate.admin.events import Hour

WIDTH, HEIGHT = 480, 160  # the drawing area in SVG units (about its size on screen)
LABEL = 20  # room under the bars for the hour labels


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # the CSS class that colours it
    title: str  # the tooltip: hour and count


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    bars: tuple[Bar, ...]
    labels: tuple[tuple[float, str], ...]  # x and text under every 3rd hour
    peak: int
    total: int
    width: int = WIDTH
    height: int = HEIGHT + LABEL


def hour_label(start: float) -> str:
    return time.strftime("%H:00", time.gmtime(start))


def chart(title: str, hours: list[Hour], series: tuple[tuple[str, str], ...]) -> Chart:
    """Stacked bars per hour; ``series`` names the ``Hour`` fields and their CSS classes."""
    peak = max([sum(getattr(h, field) for field, _ in series) for h in hours] + [1])
    slot = WIDTH / max(len(hours), 1)
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for i, hour in enumerate(hours):
        base = float(HEIGHT)
        for field, css in series:
            count = int(getattr(hour, field))
            if count:
                height = HEIGHT * count / peak
                base -= height
                tip = f"{hour_label(hour.start)} UTC: {count} {field.replace('_', ' ')}"
                bars.append(Bar(i * slot + 2, base, slot - 4, height, css, tip))
        if i % 3 == 2:  # every 3rd hour, none at the clipped left edge
            labels.append((i * slot + slot / 2, hour_label(hour.start)))
    total = sum(int(getattr(h, field)) for h in hours for field, _ in series)
    return Chart(title, tuple(bars), tuple(labels), peak, total)
