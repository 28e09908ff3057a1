"""Comparing trainings: configuration differences, final / best value of each metric, the evaluation
scores of the models they made (and their predictions joined on the prompt) and, for two jobs, the
largest difference between their curves at the steps both logged."""

from __future__ import annotations

import math

from . import evaluations, jobs, models, store, trainings
from .errors import DeepeError
from .metrics import metric_series, metric_stats
from .store import Job, ModelKind

__all__ = ["compare_jobs", "compare_evaluations", "compare_predictions", "curve_differences", "metric_stats"]


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


def _model_of(job_id: int) -> str | None:
    """The model a training made (its Customized Model), or None."""
    made = [m for m in models.models_of_job(int(job_id)) if m.kind != ModelKind.LIVE]
    return made[0].name if made else None


def compare_evaluations(ids: list, suite: str | None = None) -> dict:
    """`{"suite", "models": {job id: model name|None}, "results": {job id: result|None},
    "metrics": {name: {job id: value}}, "base": result|None}`: the newest succeeded evaluation (of
    `suite`; by default the first run's training type's default suite) of the model each training made
    (`evaluations.latest`), and where the runs share a base model evaluated on the same rows, its
    evaluation; job ids are strings, as in `compare_jobs`."""
    if suite is None:
        first = store.get_one(Job, id=int(ids[0])) if ids else None
        method = store.get_one(store.Method, name=first.method) if first is not None and first.method else None
        suite = trainings.for_method(method).default_suite if method is not None else "generation"
    out = {"suite": suite, "models": {}, "results": {}, "metrics": {}, "base": None}
    for job_id in ids:
        key = str(int(job_id))
        model = _model_of(int(job_id))
        result = evaluations.latest(model, suite) if model else None
        out["models"][key], out["results"][key] = model, result
        for name, value in ((result or {}).get("metrics") or {}).items():
            out["metrics"].setdefault(name, {})[key] = value
    found = [r for r in out["results"].values() if r]
    try:
        bases = {evaluations.base_of(r["model"]) for r in found}
    except DeepeError:  # a base deleted since: no column for it
        bases = set()
    if found and len(bases) == 1 and len({r.get("row_key") for r in found}) == 1:
        out["base"] = evaluations.latest(bases.pop(), suite, found[0].get("row_key"))
    return out


def compare_predictions(evaluated: dict) -> dict:
    """The runs' predictions on the same prompts, side by side: `{"ids", "rows": [{"prompt",
    "reference", "answers": {job id: {"answer", "score"}}}], "only_some": int}` from a
    `compare_evaluations` answer; rows are joined on the prompt, and only prompts every evaluated
    run answered are kept (`only_some` counts the others)."""
    per_run: dict[str, dict[str, dict]] = {}
    for key, result in evaluated["results"].items():
        if result is None:
            continue
        answers = {}
        for row in evaluations.read_predictions(result):
            answers.setdefault(str(row.get("prompt", "")), row)  # a repeated prompt: its first answer
        per_run[key] = answers
    ids = list(per_run)
    if not ids:
        return {"ids": [], "rows": [], "only_some": 0}
    first = per_run[ids[0]]
    shared = [p for p in first if all(p in per_run[k] for k in ids[1:])]
    every = set().union(*(set(answers) for answers in per_run.values()))
    rows = []
    for prompt in shared:
        answers = {}
        for key in ids:
            row = per_run[key][prompt]
            name, score = evaluations.row_score(row)
            answers[key] = {"answer": row.get("answer"), "score": score,
                            "lower_is_better": name in evaluations.LOWER_ROW_SCORES}
        rows.append({"prompt": prompt, "reference": first[prompt].get("reference"), "answers": answers})
    return {"ids": ids, "rows": rows, "only_some": len(every) - len(shared)}
