"""What a chart is sent: at most MAX_POINTS points per line, decimated so that spikes survive."""

from __future__ import annotations

MAX_POINTS = 2000  # per line: the browser never gets more than this


def decimate(xs: list[float], ys: list[float], max_points: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most `max_points` points: each bucket keeps its min and max, so spikes survive."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    buckets = max_points // 2
    size = n / buckets
    out_x, out_y = [], []
    for b in range(buckets):
        lo, hi = int(b * size), min(n, int((b + 1) * size))
        if lo >= hi:
            continue
        seg = range(lo, hi)
        i_min = min(seg, key=ys.__getitem__)
        i_max = max(seg, key=ys.__getitem__)
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    if out_x[-1] != xs[-1]:  # always show the newest point
        out_x.append(xs[-1])
        out_y.append(ys[-1])
    return out_x, out_y
