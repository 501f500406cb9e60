"""A tiny PNG writer (zlib + struct) and a histogram chart: no plotting library is installed.

The chart draws one panel per series: a histogram of the values in fixed-width bins, with a
light vertical grid line every ``grid`` units and a dark line at each series' target.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
GRID: Color = (225, 225, 225)
AXIS: Color = (90, 90, 90)
TARGET: Color = (200, 30, 30)


def write_png(path: Path, pixels: list[list[Color]]) -> None:
    """Write an RGB image given as rows of (r, g, b)."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(c for pixel in row for c in pixel) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


@dataclass
class Series:
    values: Sequence[float]
    color: Color
    target: float | None = None


def histogram_chart(
    path: Path,
    series: Sequence[Series],
    *,
    x_max: float,
    bin_width: float = 0.1,
    grid: float = 1.0,
    width: int = 800,
    panel_height: int = 160,
) -> None:
    """One histogram panel per series, all on the same x axis from 0 to ``x_max``."""
    margin = 10
    height = panel_height * len(series) + margin * (len(series) + 1)
    pixels = [[WHITE] * width for _ in range(height)]
    plot_w = width - 2 * margin
    bins = max(1, math.ceil(x_max / bin_width))

    def x_of(value: float) -> int:
        return margin + min(plot_w - 1, int(value / x_max * plot_w))

    for index, one in enumerate(series):
        top = margin + index * (panel_height + margin)
        bottom = top + panel_height - 1
        counts = [0] * bins
        for value in one.values:
            counts[min(bins - 1, int(value / bin_width))] += 1
        tallest = max(counts) or 1
        for step in range(int(x_max / grid) + 1):
            x = x_of(step * grid)
            for y in range(top, bottom + 1):
                pixels[y][x] = GRID
        for number, count in enumerate(counts):
            if not count:
                continue
            left, right = x_of(number * bin_width), x_of((number + 1) * bin_width) - 1
            bar_top = bottom - max(1, int(count / tallest * (panel_height - 4)))
            for y in range(bar_top, bottom + 1):
                for x in range(left, max(left, right) + 1):
                    pixels[y][x] = one.color
        for x in range(margin, margin + plot_w):
            pixels[bottom][x] = AXIS
        if one.target is not None and one.target <= x_max:
            x = x_of(one.target)
            for y in range(top, bottom + 1):
                pixels[y][x] = TARGET
    write_png(path, pixels)
