"""Comparing jobs: differences in configuration, final and best value of each metric (on both backends)."""

import pytest

from deepe_widgets import compare, jobs, metrics
from deepe_widgets.errors import DeepeError
from deepe_widgets.runtime import MetricSink

from conftest import BOTH_BACKENDS


def _job_with(metrics: dict[int, dict[str, float]], **params):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params=params)
    sink = MetricSink(job.id)
    for step, values in metrics.items():  # written out of step order: "final" is by step, not by write
        sink.add(step, values, None)
    sink.close()
    return job


@BOTH_BACKENDS
def test_compare_reports_differences_and_final_and_best_values(workspace):
    a = _job_with({3: {"loss": 1.5, "reward": 0.2, "learning_rate": 1e-5},
                   1: {"loss": 3.0, "reward": 0.9, "learning_rate": 3e-5},
                   2: {"loss": 1.0, "reward": 0.5, "learning_rate": 2e-5}}, learning_rate="1e-3")
    b = _job_with({1: {"loss": 2.0}}, learning_rate="2e-3")
    report = compare.compare_jobs([a.id, b.id])
    assert report["differences"] == {"LEARNING_RATE": {str(a.id): 1e-3, str(b.id): 2e-3}}
    assert report["metrics"]["loss"][str(a.id)] == {"first": 3.0, "final": 1.5, "best": 1.0, "direction": "min",
                                                    "points": 3, "last_step": 3}
    reward = report["metrics"]["reward"][str(a.id)]
    assert (reward["best"], reward["direction"]) == (0.9, "max")  # higher is better
    rate = report["metrics"]["learning_rate"][str(a.id)]
    assert (rate["best"], rate["direction"]) == (1e-5, None)  # no better way: "best" is the final value
    assert report["metrics"]["loss"][str(b.id)] == {"first": 2.0, "final": 2.0, "best": 2.0, "direction": "min",
                                                    "points": 1, "last_step": 1}
    assert str(b.id) not in report["metrics"]["reward"]
    series = metrics.metric_series([a.id, b.id])
    assert series[a.id]["loss"] == ([1, 2, 3], [3.0, 1.0, 1.5]) and series[b.id]["loss"] == ([1], [2.0])
    assert metrics.last_metrics([a.id, b.id], "loss") == {a.id: 1.5, b.id: 2.0}


def test_compare_needs_two_different_jobs(workspace):
    a = _job_with({1: {"loss": 1.0}})
    with pytest.raises(DeepeError, match="two or more"):
        compare.compare_jobs([a.id, a.id])
