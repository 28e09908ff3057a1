"""Comparing trainings: configuration differences and final / best value of each metric."""

from __future__ import annotations

from . import jobs
from .errors import DeepeError

# Metrics where higher is better; for the rest (loss, grad_norm, …) lower is.
HIGHER_IS_BETTER = ("reward", "accuracy", "acc", "f1", "rewards")


def _better(name: str):
    return max if any(token in name.lower() for token in HIGHER_IS_BETTER) else min


def metric_stats(job_ids: list[int]) -> dict[int, dict[str, dict]]:
    """job id -> metric name -> {final, best, points}, aggregated by the database (a run may have
    100,000 rows: none of them is read into Python)."""
    from sqlalchemy import and_, func, select

    from . import store

    table = store.Metric.__table__
    per_series = (select(table.c.job_id, table.c.name, func.count().label("points"),
                         func.min(table.c.value).label("low"), func.max(table.c.value).label("high"),
                         func.max(table.c.step).label("last_step"))
                  .where(table.c.job_id.in_([int(i) for i in job_ids]))
                  .group_by(table.c.job_id, table.c.name).subquery())
    stmt = select(per_series, table.c.value).join(table, and_(
        table.c.job_id == per_series.c.job_id, table.c.name == per_series.c.name,
        table.c.step == per_series.c.last_step))
    out: dict[int, dict[str, dict]] = {int(i): {} for i in job_ids}
    with store.get_engine().execution_options(deepe_read=True).connect() as conn:
        for job_id, name, points, low, high, _last_step, final in conn.execute(stmt):
            best = high if _better(name) is max else low
            out[job_id][name] = {"final": final, "best": best, "points": points}
    return out


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
