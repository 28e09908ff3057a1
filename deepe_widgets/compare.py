"""Comparing trainings: configuration differences and final / best value of each metric."""

from __future__ import annotations

from . import jobs
from .errors import DeepeError

# Metrics where higher is better; for the rest (loss, grad_norm, …) lower is.
HIGHER_IS_BETTER = ("reward", "accuracy", "acc", "f1", "rewards")


def _better(name: str):
    return max if any(token in name.lower() for token in HIGHER_IS_BETTER) else min


def metric_stats(rows) -> dict[str, dict]:
    """name -> {final, best, points} over metric rows ordered by step."""
    series: dict[str, list[float]] = {}
    for m in sorted(rows, key=lambda m: m.step):
        series.setdefault(m.name, []).append(m.value)
    return {name: {"final": values[-1], "best": _better(name)(values), "points": len(values)}
            for name, values in series.items()}


def compare_jobs(ids: list) -> dict:
    """`{"ids", "config", "differences", "metrics"}` for two or more jobs."""
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
    for job in rows:
        for name, stats in metric_stats(jobs.metrics_for(job.id)).items():
            metrics.setdefault(name, {})[str(job.id)] = stats
    return {"ids": [j.id for j in rows], "config": config, "differences": differences, "metrics": metrics}
