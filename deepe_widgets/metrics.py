"""Reading the metric rows trainings log: one job's rows, several jobs' curves, summaries.

Rows are read as plain tuples, not ORM objects: a chart may read 100,000 of them, and
summaries are aggregated by the database.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
from sqlalchemy import and_, func
from sqlalchemy import select as core_select

from . import store
from .config import StageName


def _read():
    return store.get_engine().execution_options(deepe_read=True).connect()


def metrics_for(job_id: int, after_id: int = 0, name: str | None = None) -> list:
    """Metric rows (id, job_id, step, name, value, epoch, wall_time) of a job with id > after_id,
    oldest first; pollers pass the last id they saw. Plain rows, not ORM objects: a chart
    may read 100,000 of them."""
    table = store.Metric.__table__
    stmt = core_select(table).where(table.c.job_id == job_id, table.c.id > after_id).order_by(table.c.id)
    if name is not None:
        stmt = stmt.where(table.c.name == name)
    with _read() as conn:
        return list(conn.execute(stmt))


def metric_series(job_ids: list[int]) -> dict[int, dict[str, tuple[list, list]]]:
    """job id -> metric name -> (steps, values), ordered by step: the curves of several jobs
    in one query, reading only the columns a chart needs."""
    table = store.Metric.__table__
    stmt = (core_select(table.c.job_id, table.c.name, table.c.step, table.c.value)
            .where(table.c.job_id.in_([int(i) for i in job_ids]))
            .order_by(table.c.job_id, table.c.name, table.c.step))
    out: dict[int, dict[str, tuple[list, list]]] = {int(i): {} for i in job_ids}
    with _read() as conn:
        for job_id, name, step, value in conn.execute(stmt):
            xs, ys = out[job_id].setdefault(name, ([], []))
            xs.append(step)
            ys.append(value)
    return out


def last_metrics(job_ids: list[int], name: str) -> dict[int, float]:
    """The newest value of one metric for each job (the list's "last loss" column), in one query."""
    if not job_ids:
        return {}
    table = store.Metric.__table__
    newest = (core_select(table.c.job_id, func.max(table.c.step).label("step"))
              .where(table.c.job_id.in_(job_ids), table.c.name == name).group_by(table.c.job_id).subquery())
    stmt = core_select(table.c.job_id, table.c.value).join(
        newest, and_(table.c.job_id == newest.c.job_id, table.c.step == newest.c.step)).where(table.c.name == name)
    with _read() as conn:
        return {job_id: value for job_id, value in conn.execute(stmt)}


# Which way is better, by a word in the metric's name (the one rule: the CLI's "best" and the
# widgets' agree). A spread (`reward_std`) is no quality, and metrics with neither direction
# (learning_rate, epoch, num_tokens, grad_norm …) have no "best": it is reported as the final value.
# A held-out metric (`eval_loss`, `eval_rewards/margins`) goes the way of its training twin.
HIGHER_IS_BETTER = ("reward", "accuracy", "acc", "f1", "ndcg", "mrr", "recall", "precision", "map@", "bleu",
                    "rouge", "margins", "score", "auc", "tokens_per_second", "samples_per_second", "exact_match",
                    "chrf", "win_rate")
LOWER_IS_BETTER = ("loss", "perplexity", "error")
LOWER_IS_BETTER_WORDS = ("wer", "cer")  # whole words only: "answer_length" is no word error rate
NOT_A_QUALITY = ("reward_std", "frac_reward_zero_std")
# spreads and standard errors (`bench_mmlu_acc_stderr`) say how sure a value is, not how good
NOT_A_QUALITY_ENDINGS = ("_std", "/std", "_stderr")


def direction(name: str, declared: dict | None = None) -> str | None:
    """"max", "min" or None (no better direction) for a metric name; `declared` (a method's own
    directions, from its training notebook's metadata) wins, for the metric and its held-out twin
    (`margin` declared: `eval_margin` goes the same way)."""
    if declared:
        for key in (name, name.removeprefix("eval_")):
            if key in declared:
                return declared[key]
    lowered = name.lower()
    if lowered.removeprefix("eval_") in NOT_A_QUALITY or lowered.endswith(NOT_A_QUALITY_ENDINGS):
        return None
    if any(token in lowered for token in HIGHER_IS_BETTER):
        return "max"
    if any(token in lowered for token in LOWER_IS_BETTER) or \
            set(re.split(r"[^a-z0-9]+", lowered)) & set(LOWER_IS_BETTER_WORDS):
        return "min"
    return None


@functools.lru_cache(maxsize=64)
def _declared_in(path: str, _mtime: float) -> dict[str, str]:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # unreadable, or a .py script: it declares nothing
        return {}
    declared = dict(nb.metadata.get("deepe", {}).get("metrics", {}))
    return {name: way for name, way in declared.items() if way in ("min", "max")}


# The directions a method's training type declares (`TrainingType.metric_directions`): the
# training-type registry, a floor above, hands its lookup here when it is imported.
_type_directions: Callable[[store.Method], dict[str, str]] | None = None


def use_type_directions(lookup: Callable[[store.Method], dict[str, str]]) -> None:
    """Take the training types' directions from `lookup(method)` (called by `deepe_widgets.trainings`)."""
    global _type_directions
    _type_directions = lookup


def method_directions(method: store.Method | None) -> dict[str, str]:
    """Directions a method's metrics go: its training type's, under those it declares in its training
    notebook's metadata, `{"deepe": {"metrics": {"my_score": "max"}}}` (both win over the rule by
    name); the notebook's are cached by its path and modification time."""
    if method is None:
        return {}
    typed = _type_directions(method) if _type_directions is not None else {}
    path = ((getattr(method, "stages", None) or {}).get(StageName.TRAINING) or {}).get("file")
    if not path or not str(path).endswith(".ipynb") or not Path(path).is_file():
        return dict(typed)
    return {**typed, **_declared_in(str(path), Path(path).stat().st_mtime)}


def declared_directions(job_ids: list[int]) -> dict[str, str]:
    """The directions the methods of these jobs declare, together (a method deleted since: none)."""
    with store.read_session() as s:
        names = {m for (m,) in s.execute(core_select(store.Job.method).where(store.Job.id.in_(
            [int(i) for i in job_ids])))}
    declared: dict[str, str] = {}
    for name in sorted(n for n in names if n):
        declared.update(method_directions(store.get_one(store.Method, name=name)))
    return declared


def metric_stats(job_ids: list[int]) -> dict[int, dict[str, dict]]:
    """job id -> metric name -> {first, final, best, direction, points, last_step}, aggregated by
    the database (a run may have 100,000 rows: none of them is read into Python). The direction
    is `direction`'s, with what the jobs' methods declare."""
    table = store.Metric.__table__
    first_row, last_row = table.alias("first_row"), table.alias("last_row")
    per_series = (core_select(table.c.job_id, table.c.name, func.count().label("points"),
                              func.min(table.c.value).label("low"), func.max(table.c.value).label("high"),
                              func.min(table.c.step).label("first_step"), func.max(table.c.step).label("last_step"))
                  .where(table.c.job_id.in_([int(i) for i in job_ids]))
                  .group_by(table.c.job_id, table.c.name).subquery())
    stmt = (core_select(per_series, first_row.c.value, last_row.c.value)
            .join(first_row, and_(first_row.c.job_id == per_series.c.job_id, first_row.c.name == per_series.c.name,
                                  first_row.c.step == per_series.c.first_step))
            .join(last_row, and_(last_row.c.job_id == per_series.c.job_id, last_row.c.name == per_series.c.name,
                                 last_row.c.step == per_series.c.last_step)))
    out: dict[int, dict[str, dict]] = {int(i): {} for i in job_ids}
    declared = declared_directions(job_ids)
    with _read() as conn:
        for job_id, name, points, low, high, _first_step, last_step, first, final in conn.execute(stmt):
            way = direction(name, declared)
            best = high if way == "max" else low if way == "min" else final
            out[job_id][name] = {"first": first, "final": final, "best": best, "direction": way,
                                 "points": points, "last_step": last_step}
    return out
