"""Small server-rendered SVG charts (no JS build): learning curve, precision/recall, histogram."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Chart:
    width: int = 360
    height: int = 180
    pad: int = 28

    def x(self, v: float, lo: float, hi: float) -> float:
        return self.pad + (v - lo) / ((hi - lo) or 1) * (self.width - 2 * self.pad)

    def y(self, v: float) -> float:
        return self.height - self.pad - v * (self.height - 2 * self.pad)


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str = "",
    intervals: dict[str, list[tuple[float, float, float]]] | None = None,
    x_digits: int = 2,
) -> dict:
    """Points for polylines of 0..1 values over an x range, plus axis ticks.

    ``intervals``: per series name, (x, low, high) drawn as whiskers in the series' colour;
    ``x_digits``: the decimals the x range is written with (0 for counts).
    """
    c = Chart()
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    lo, hi = min(xs), max(xs)
    lines = {
        name: " ".join(f"{c.x(x, lo, hi):.1f},{c.y(max(0.0, min(1.0, y))):.1f}" for x, y in pts)
        for name, pts in series.items()
    }
    dots = {
        name: [(round(c.x(x, lo, hi), 1), round(c.y(max(0.0, min(1.0, y))), 1), x, y) for x, y in pts]
        for name, pts in series.items()
    }
    names = list(series)
    whiskers = [
        (
            names.index(name) + 1,
            round(c.x(x, lo, hi), 1),
            round(c.y(min(1.0, max(0.0, a))), 1),
            round(c.y(min(1.0, max(0.0, b))), 1),
            a,
            b,
        )
        for name, rows in (intervals or {}).items()
        if name in names
        for x, a, b in rows
    ]
    return {
        "w": c.width,
        "h": c.height,
        "pad": c.pad,
        "whiskers": whiskers,
        "lines": lines,
        "dots": dots,
        "x_label": x_label,
        "y_label": y_label,
        "x_lo": lo,
        "x_hi": hi,
        "x_range": f"{lo:.{x_digits}f}–{hi:.{x_digits}f}",
        "y_ticks": [(c.y(t), t) for t in (0, 0.5, 1)],
        "x0": c.pad,
        "x1": c.width - c.pad,
        "y0": c.y(0),
        "y1": c.y(1),
    }


def histogram(counts: list[int], threshold: float | None) -> dict:
    """Bars of texts per score bin over 0..1, on a square-root scale (a few texts above the
    threshold stay visible beside thousands below it), the bins at or above the threshold marked,
    with x ticks and the largest count to read the scale by."""
    c = Chart()
    top = max(counts or [1]) or 1
    n = len(counts) or 1
    bw = (c.width - 2 * c.pad) / n
    bars = []
    for i, v in enumerate(counts):
        share = (v / top) ** 0.5 if v else 0.0
        height = max(c.y(0) - c.y(share), 1.5 if v else 0.0)
        above = threshold is not None and (i + 1) / n > threshold
        bars.append(
            (
                round(c.pad + i * bw, 1),
                round(c.y(0) - height, 1),
                round(bw - 1, 1),
                round(height, 1),
                v,
                above,
            )
        )
    return {
        "w": c.width,
        "h": c.height,
        "bars": bars,
        "y0": c.y(0),
        "y1": c.y(1),
        "x0": c.pad,
        "x1": c.width - c.pad,
        "x_ticks": [(round(c.x(t, 0, 1), 1), t) for t in (0, 0.25, 0.5, 0.75, 1)],
        "threshold_x": round(c.x(threshold, 0, 1), 1) if threshold is not None else None,
        "top": top,
    }


def label_bars(values: list[tuple[str, float]], *, scale: float = 1.0) -> dict:
    """Horizontal bars, one per label: (label, value) with values from 0 to ``scale``."""
    c = Chart()
    row = 22
    label_w = 120
    span = c.width - label_w - 48
    bars = [
        (label, label_w, i * row + 4, round(span * max(0.0, min(1.0, v / (scale or 1))), 1), v)
        for i, (label, v) in enumerate(values)
    ]
    return {
        "w": c.width,
        "h": max(row, len(values) * row + 8),
        "bars": bars,
        "label_w": label_w - 6,
        "row": row - 6,
    }


def stacked_bars(
    columns: list[tuple[str, list[float], str]],
    *,
    classes: list[str],
    width: int = 300,
    height: int = 80,
    ticks_every: int = 1,
    marks: dict[int, str] | None = None,
) -> dict:
    """Vertical bars, one per column, each a stack of series values from the bottom (the first
    series lowest, drawn with the first of ``classes``): ``columns`` are (tick label, values,
    tooltip). Every ``ticks_every``-th column is labelled; ``marks`` puts a short note above some
    columns (by index: "v3" where version 3 went live)."""
    n = len(columns) or 1
    gap = 2 if n > 12 else 5
    bar = (width - gap * (n - 1)) / n
    top = max([sum(values) for _, values, _ in columns] + [1])
    bars = []
    for i, (label, values, title) in enumerate(columns):
        parts, y = [], float(height)
        for s, v in enumerate(values, start=1):
            h = height * v / top
            y -= h
            parts.append({"y": round(y, 1), "h": round(h, 1), "cls": classes[s - 1]})
        bars.append(
            {
                "x": round(i * (bar + gap), 1),
                "w": round(bar, 1),
                "parts": parts,
                "label": label if i % ticks_every == 0 else "",
                "title": title,
                "mark": (marks or {}).get(i, ""),
                "mark_x": round(i * (bar + gap) + bar, 1),
            }
        )
    return {"w": width, "h": height, "bars": bars, "top": top, "marked": bool(marks)}


def scaled_lines(
    columns: list[str], series: dict[str, list[float | None]], *, width: int = 300, height: int = 80
) -> dict:
    """Lines over ``columns`` on a scale from 0 to the largest value (gaps where a value is None),
    with the top of the scale to label the chart."""
    top = max([v for values in series.values() for v in values if v is not None] + [0.0]) or 1.0
    n = len(columns)
    step = width / max(1, n - 1)
    lines: dict[str, list[str]] = {}
    dots: dict[str, list[tuple[float, float, float, str]]] = {}
    for name, values in series.items():
        dots[name] = [
            (round(i * step, 1), round(height - height * v / top, 1), v, columns[i])
            for i, v in enumerate(values)
            if v is not None
        ]
        runs: list[str] = []
        run: list[str] = []
        for i, v in enumerate(values):
            if v is None:
                if run:
                    runs.append(" ".join(run))
                run = []
                continue
            run.append(f"{i * step:.1f},{height - height * v / top:.1f}")
        if run:
            runs.append(" ".join(run))
        lines[name] = runs
    return {
        "w": width,
        "h": height,
        "top": top,
        "lines": lines,
        "first": columns[0] if columns else "",
        "last": columns[-1] if columns else "",
    }


def paired_bars(columns: list[tuple[str, float, float, str]], *, width: int = 300, height: int = 80) -> dict:
    """Two bars side by side per column (the first value, then the second), on a scale from 0 to
    the largest: ``columns`` are (tick label, first, second, tooltip)."""
    n = len(columns) or 1
    gap = 4
    bar = (width - gap * (n - 1)) / n / 2
    top = max([max(a, b) for _, a, b, _ in columns] + [1e-9])
    bars = [
        {
            "x": round(i * (2 * bar + gap), 1),
            "w": round(bar, 1),
            "x2": round(i * (2 * bar + gap) + bar, 1),
            "a_y": round(height - height * a / top, 1),
            "a_h": round(height * a / top, 1),
            "b_y": round(height - height * b / top, 1),
            "b_h": round(height * b / top, 1),
            "label": label,
            "title": title,
        }
        for i, (label, a, b, title) in enumerate(columns)
    ]
    return {"w": width, "h": height, "bars": bars, "top": top}
