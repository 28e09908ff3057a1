"""Comparing trainings: configuration differences and final / best value of each metric."""

from __future__ import annotations

from . import jobs
from .errors import DeepeError
from .metrics import metric_stats

__all__ = ["compare_jobs", "metric_stats"]


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
    for job_id, per_name in metric_stats([j.id for j in rows]).items():
        for name, stats in per_name.items():
            metrics.setdefault(name, {})[str(job_id)] = stats
    return {"ids": [j.id for j in rows], "config": config, "differences": differences, "metrics": metrics}
