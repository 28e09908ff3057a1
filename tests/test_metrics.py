"""metrics: which way a metric is better, and the per-job summaries and curves read from the database."""

from __future__ import annotations

import nbformat
import pytest

from deepe_widgets import metrics, store


def _job(method: str = "sft-demo") -> int:
    with store.session() as s:
        job = store.Job(method=method, status=store.JobStatus.SUCCEEDED)
        s.add(job)
        s.flush()
        return int(job.id)


def _log(job_id: int, name: str, points: list[tuple[int, float]]) -> None:
    with store.session() as s:
        for step, value in points:
            s.add(store.Metric(job_id=job_id, step=step, name=name, value=value))


@pytest.mark.parametrize("name, way", [
    ("loss", "min"), ("eval_loss", "min"), ("train/perplexity", "min"), ("eval_wer", "min"),
    ("rewards/accuracies", "max"), ("eval_rewards/margins", "max"), ("eval_heldout_cosine_ndcg@10", "max"),
    ("bench_mmlu_acc", "max"), ("eval_score", "max"),
    # spreads and standard errors say how sure a value is, not how good
    ("reward_std", None), ("eval_reward_std", None), ("bench_mmlu_acc_stderr", None),
    # no quality at all: no "best"
    ("learning_rate", None), ("grad_norm", None), ("epoch", None),
    # "wer" counts only as a whole word
    ("answer_length", None),
])
def test_direction_by_name(name, way):
    assert metrics.direction(name) == way


def test_declared_direction_wins_over_the_name():
    assert metrics.direction("loss", {"loss": "max"}) == "max"
    assert metrics.direction("my_thing", {"my_thing": "min"}) == "min"
    assert metrics.direction("loss", {"other": "max"}) == "min"


def test_metric_stats_first_final_best_with_a_declared_direction(home, tmp_path):
    notebook = tmp_path / "training.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["deepe"] = {"metrics": {"my_score": "min", "ignored": "sideways"}}
    nbformat.write(nb, notebook)
    with store.session() as s:
        s.add(store.Method(name="scorer", stages={"training": {"file": str(notebook), "kernel": "python3"}}))
    job = _job("scorer")
    _log(job, "loss", [(1, 2.0), (2, 0.5), (3, 0.9)])
    _log(job, "accuracy", [(1, 0.2), (2, 0.8), (3, 0.6)])
    _log(job, "my_score", [(1, 5.0), (2, 1.0), (3, 3.0)])  # would be "max" by its name
    _log(job, "learning_rate", [(1, 1e-3), (3, 1e-4)])
    _log(job, "ignored", [(1, 1.0), (2, 9.0), (3, 5.0)])

    stats = metrics.metric_stats([job])[job]

    assert stats["loss"] == {"first": 2.0, "final": 0.9, "best": 0.5, "direction": "min", "points": 3,
                             "last_step": 3}
    assert (stats["accuracy"]["best"], stats["accuracy"]["direction"]) == (0.8, "max")
    assert (stats["my_score"]["best"], stats["my_score"]["direction"]) == (1.0, "min")
    # no direction: "best" is the final value
    assert (stats["learning_rate"]["best"], stats["learning_rate"]["direction"]) == (1e-4, None)
    # a declaration that is neither min nor max is no declaration
    assert (stats["ignored"]["best"], stats["ignored"]["direction"]) == (5.0, None)


def test_metric_stats_of_a_job_without_rows_is_empty(home):
    job = _job()
    assert metrics.metric_stats([job]) == {job: {}}


def test_metric_series_is_ordered_by_step_per_job(home):
    first, second = _job(), _job()
    _log(first, "loss", [(3, 0.3), (1, 1.0), (2, 0.5)])  # logged out of order
    _log(second, "loss", [(1, 9.0)])
    _log(second, "accuracy", [(2, 0.4), (1, 0.1)])

    series = metrics.metric_series([first, second])

    assert series[first] == {"loss": ([1, 2, 3], [1.0, 0.5, 0.3])}
    assert series[second] == {"loss": ([1], [9.0]), "accuracy": ([1, 2], [0.1, 0.4])}


def test_last_metrics_and_metrics_for_read_the_newest_and_after_an_id(home):
    job = _job()
    _log(job, "loss", [(1, 1.0), (2, 0.5)])
    _log(job, "accuracy", [(1, 0.1)])
    assert metrics.last_metrics([job], "loss") == {job: 0.5}
    assert metrics.last_metrics([], "loss") == {}
    rows = metrics.metrics_for(job)
    assert [(r.step, r.name) for r in rows] == [(1, "loss"), (2, "loss"), (1, "accuracy")]
    # a poller passes the last id it saw and gets only what came after
    assert [(r.step, r.name) for r in metrics.metrics_for(job, after_id=rows[0].id)] == [(2, "loss"), (1, "accuracy")]
    assert [r.value for r in metrics.metrics_for(job, name="loss")] == [1.0, 0.5]
