"""Comparing trainings: configuration differences, final / best value of each metric and, for
two jobs, the largest difference between their curves at the steps both logged."""

from __future__ import annotations

import math

from . import jobs
from .errors import DeepeError
from .metrics import metric_series, metric_stats

__all__ = ["compare_jobs", "curve_differences", "metric_stats"]


def compare_jobs(ids: list) -> dict:
    """`{"ids", "config", "differences", "metrics"}` for two or more jobs; for exactly two, also
    `max_abs_diff` (see `curve_differences`): how far a re-run strayed from its first run."""
    rows = [jobs.get_job(i) for i in ids]
    if len({j.id for j in rows}) < 2:
        raise DeepeError("compare needs two or more different jobs")
    config = {}
    for job in rows:
        config[str(job.id)] = {"method": job.method, "base_model": job.base_model, "dataset": job.dataset,
                               **{k: v for k, v in job.params.items()}}
    keys = sorted({k for c in config.values() for k in c})
    differences = {}
    for key in keys:
        values = {jid: c.get(key, "(default)") for jid, c in config.items()}
        if len({repr(v) for v in values.values()}) > 1:
            differences[key] = values
    metrics: dict[str, dict] = {}
    for job_id, per_name in metric_stats([j.id for j in rows]).items():
        for name, stats in per_name.items():
            metrics.setdefault(name, {})[str(job_id)] = stats
    report = {"ids": [j.id for j in rows], "config": config, "differences": differences, "metrics": metrics}
    if len(rows) == 2:
        report["max_abs_diff"] = curve_differences(rows[0].id, rows[1].id)
    return report


def curve_differences(first: int, second: int) -> dict[str, dict]:
    """metric name -> `{"value", "step", "steps"}`: the largest |a - b| over the steps both jobs
    logged that metric at, the step where it is, and how many steps were compared. Metrics only
    one of them logged, or at no common step, are left out."""
    series = metric_series([first, second])
    out = {}
    for name in sorted(set(series[first]) & set(series[second])):
        a = dict(zip(*series[first][name]))
        b = dict(zip(*series[second][name]))
        common = sorted(set(a) & set(b))
        if not common:
            continue
        step = max(common, key=lambda s: (_gap(a[s], b[s]), -s))
        out[name] = {"value": _gap(a[step], b[step]), "step": step, "steps": len(common)}
    return out


def _gap(x: float, y: float) -> float:
    """|x - y|, where two NaNs agree and a NaN beside a number is infinitely far from it."""
    if math.isnan(x) or math.isnan(y):
        return 0.0 if math.isnan(x) and math.isnan(y) else math.inf
    return abs(x - y)
