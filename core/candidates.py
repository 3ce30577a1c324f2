"""Distillation against pruning and quantization: every candidate model on one Pareto front.

A candidate is a model one could deploy: the teacher, its compressed forms, the labels-only
baseline, the student and its compressed forms. Each has a test top-1, a size in bytes and, where
speed is measured, a CPU latency at batch 1. ``pareto_front`` names the ones no other candidate
beats; ``candidates_svg`` draws accuracy against size and against latency. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Point:
    name: str
    top1: float
    size_bytes: int
    latency_ms: float | None


# Latencies within this fraction of each other are a tie: batch-1 CPU timings of two copies of one
# architecture differ by a few percent from run to run, and that must not decide the front.
LATENCY_TIE = 0.10


def dominates(a: Point, b: Point, *, latency: bool) -> bool:
    """``a`` is at least as accurate, as small and (with ``latency``) as fast as ``b``, and
    strictly better in one of them; latencies within ``LATENCY_TIE`` of each other are equal."""
    if a.top1 < b.top1 or a.size_bytes > b.size_bytes:
        return False
    strict = a.top1 > b.top1 or a.size_bytes < b.size_bytes
    if latency:
        assert a.latency_ms is not None and b.latency_ms is not None
        if a.latency_ms > b.latency_ms * (1 + LATENCY_TIE):
            return False
        strict = strict or a.latency_ms * (1 + LATENCY_TIE) < b.latency_ms
    return strict


def pareto_front(points: Sequence[Point]) -> list[bool]:
    """For each point, whether it is on the Pareto front: not dominated by any other point on the
    three objectives jointly (higher test top-1, fewer bytes, lower CPU latency, latencies within
    ``LATENCY_TIE`` counting as equal). When a latency is
    missing (``runtime.measure_speed: false``) the front is over accuracy and size alone. Equal
    points do not dominate each other: both are on the front."""
    latency = all(p.latency_ms is not None for p in points)
    return [not any(dominates(q, p, latency=latency) for q in points if q is not p) for p in points]


# ---------------------------------------------------------------- the plot

_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 380, 300, 56, 16, 30, 44


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between ``lo`` and ``hi`` (a log axis), at most about 8 of them."""
    ticks: list[float] = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**exp for m in (1, 2, 5) if lo <= m * 10.0**exp <= hi]
    while len(ticks) > 8:
        ticks = ticks[::2]
    return ticks


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        for suffix, size in (("MB", 1e6), ("kB", 1e3)):
            if value >= size:
                return f"{value / size:g} {suffix}"
        return f"{value:g} B"
    return f"{value:g} ms"


def label_row(placed: list[tuple[float, float, float]], x0: float, x1: float, y: float) -> float:
    """A baseline for a name spanning ``x0..x1`` at or below ``y`` that overlaps no name in
    ``placed`` (12 px rows), which it is added to: close points get their names one under another."""
    while any(a < x1 and x0 < b and abs(y - row) < 12 for a, b, row in placed):
        y += 12
    placed.append((x0, x1, y))
    return y


def _panel(points: Sequence[Point], front: Sequence[bool], x_of: str, title: str, unit: str, dx: int) -> str:
    """One scatter panel (a log x axis, top-1 in percent up), offset ``dx`` to the right."""
    xs = [float(getattr(p, x_of)) for p in points]
    lo, hi = min(xs) / 1.3, max(xs) * 1.3
    tops = [p.top1 for p in points]
    y_lo, y_hi = max(0.0, min(tops) - 0.05), min(1.0, max(tops) + 0.03)
    if y_hi - y_lo < 0.02:
        y_lo, y_hi = y_lo - 0.01, y_hi + 0.01
    inner_w, inner_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def px(x: float) -> float:
        return dx + _PAD_L + inner_w * (math.log10(x) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    def py(y: float) -> float:
        return _PAD_T + inner_h * (1 - (y - y_lo) / (y_hi - y_lo))

    out = [
        f'<text x="{dx + _W / 2:.1f}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{dx + _PAD_L}" y="{_PAD_T}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#999"/>',
    ]
    for t in _log_ticks(lo, hi):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{_PAD_T}" x2="{x:.1f}" y2="{_PAD_T + inner_h}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{_H - _PAD_B + 16}" text-anchor="middle">{_fmt(t, unit)}</text>')
    for i in range(5):
        y = y_lo + (y_hi - y_lo) * i / 4
        out.append(f'<text x="{dx + _PAD_L - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{100 * y:.1f}%</text>')
    label = "size (bytes, log scale)" if unit == "B" else "CPU latency, batch 1 (ms, log scale)"
    out.append(f'<text x="{dx + _PAD_L + inner_w / 2:.1f}" y="{_H - 8}" text-anchor="middle">{label}</text>')
    placed: list[tuple[float, float, float]] = []  # the names written so far: (left, right, baseline)
    for p, x, on in zip(points, xs, front, strict=True):
        cx, cy = px(x), py(p.top1)
        fill = "#2563eb" if on else "#fff"
        stroke = "#2563eb" if on else "#94a3b8"
        out.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{fill}" stroke="{stroke}" stroke-width="2">'
            f"<title>{escape(p.name)}: {100 * p.top1:.2f}%, {_fmt(x, unit)}</title></circle>"
        )
        if on:  # named right of the point, or left of it where the name (~6.5 px a letter) overflows
            width = 6.5 * len(p.name)
            left = cx + 7 + width > dx + _PAD_L + inner_w
            tx, anchor = (cx - 7, "end") if left else (cx + 7, "start")
            x0, y = (tx - width, cy - 7) if left else (tx, cy - 7)
            y = label_row(placed, x0, x0 + width, y)
            label = f'<text x="{tx:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="pareto">'
            out.append(f"{label}{escape(p.name)}</text>")
    return "\n".join(out)


def candidates_svg(points: Sequence[Point], front: Sequence[bool]) -> str:
    """Accuracy against size and (where measured) against CPU latency, as a standalone SVG: every
    candidate a point, those on the Pareto front filled and named (the others named on hover)."""
    if not points:
        raise ValueError("no candidates to plot")
    panels = [_panel(points, front, "size_bytes", "Test top-1 against size", "B", 0)]
    if all(p.latency_ms is not None for p in points):
        panels.append(_panel(points, front, "latency_ms", "Test top-1 against CPU latency", "ms", _W))
    width = _W * len(panels)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_H}" '
        f'viewBox="0 0 {width} {_H}" font-family="sans-serif" font-size="11">\n'
        f'<rect width="{width}" height="{_H}" fill="#fff"/>\n' + "\n".join(panels) + "\n</svg>\n"
    )
