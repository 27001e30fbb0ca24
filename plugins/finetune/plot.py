"""Loss curves without matplotlib: a PNG from a tiny pure-Python writer, and a terminal chart.

matplotlib is not a dependency of chatcli, so :func:`write_png` draws the train
(blue) and validation (orange) curves on a white canvas with axes and writes the PNG
itself (zlib + CRC chunks, 8-bit RGB). :func:`terminal_plot` draws the same curves
in text, one column per bucket of steps ('•' train, 'o' validation).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

Series = list[tuple[float, float]]  # (step, value)

TRAIN_RGB = (31, 119, 180)
VAL_RGB = (255, 127, 14)


def _png(width: int, height: int, pixels: list[bytearray]) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _bounds(series: list[Series]) -> tuple[float, float, float, float]:
    pts = [p for s in series for p in s]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    return x0, x1, y0, y1


def write_png(path: Path, train: Series, val: Series, width: int = 640, height: int = 360) -> Path | None:
    """Draw the curves; returns the path, or None when there is nothing to draw."""
    if not train and not val:
        return None
    px = [bytearray(b"\xff" * (3 * width)) for _ in range(height)]
    left, right, top, bottom = 40, width - 15, 15, height - 30
    x0, x1, y0, y1 = _bounds([s for s in (train, val) if s])

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            px[y][3 * x : 3 * x + 3] = bytes(rgb)

    def to_xy(p: tuple[float, float]) -> tuple[int, int]:
        x = left + (p[0] - x0) / (x1 - x0) * (right - left)
        y = bottom - (p[1] - y0) / (y1 - y0) * (bottom - top)
        return round(x), round(y)

    for y in range(top, bottom + 1):  # axes and light grid
        put(left, y, (0, 0, 0))
    for x in range(left, right + 1):
        put(x, bottom, (0, 0, 0))
        for k in (1, 2, 3):
            put(x, top + k * (bottom - top) // 4, (225, 225, 225))
    for series, rgb in ((train, TRAIN_RGB), (val, VAL_RGB)):
        pts = [to_xy(p) for p in series]
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            n = max(abs(bx - ax), abs(by - ay), 1)
            for i in range(n + 1):
                x, y = round(ax + (bx - ax) * i / n), round(ay + (by - ay) * i / n)
                for dx, dy in ((0, 0), (0, 1), (1, 0)):
                    put(x + dx, y + dy, rgb)
        for x, y in pts if len(pts) < 40 else pts[-1:]:
            for dx in (-2, -1, 0, 1, 2):
                for dy in (-2, -1, 0, 1, 2):
                    put(x + dx, y + dy, rgb)
    for i, rgb in enumerate((TRAIN_RGB, VAL_RGB)):  # legend swatches (train, validation) top right
        for dx in range(14):
            for dy in range(6):
                put(right - 40 + dx, top + 4 + 12 * i + dy, rgb)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(_png(width, height, px))
    tmp.replace(path)
    return path


def terminal_plot(train: Series, val: Series, width: int = 60, height: int = 12) -> str:
    """A text chart of the curves (rows: loss from high to low; columns: steps)."""
    if not train:
        return ""
    x0, x1, y0, y1 = _bounds([s for s in (train, val) if s])
    grid = [[" "] * width for _ in range(height)]

    def cell(p: tuple[float, float]) -> tuple[int, int]:
        c = min(width - 1, int((p[0] - x0) / (x1 - x0) * (width - 1) + 0.5))
        r = min(height - 1, int((y1 - p[1]) / (y1 - y0) * (height - 1) + 0.5))
        return r, c

    for p in train:
        r, c = cell(p)
        grid[r][c] = "•"
    for p in val:
        r, c = cell(p)
        grid[r][c] = "o"
    lines = []
    for i, row in enumerate(grid):
        label = f"{y1:8.3f} " if i == 0 else (f"{y0:8.3f} " if i == height - 1 else " " * 9)
        lines.append(label + "│" + "".join(row))
    lines.append(" " * 9 + "└" + "─" * width)
    lines.append(" " * 10 + f"step {x0:g}".ljust(width - 12) + f"step {x1:g}")
    legend = "• train" + ("   o validation" if val else "")
    return "\n".join([*lines, " " * 10 + legend])
