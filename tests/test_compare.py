"""Comparing jobs: differences in configuration, final and best value of each metric (on both backends)."""

import pytest

from deepe_widgets import compare, jobs, metrics
from deepe_widgets.errors import DeepeError
from deepe_widgets.runtime import MetricSink

from helpers import BOTH_BACKENDS, deepe_json


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



def test_the_cli_and_the_widgets_agree_on_best(workspace):
    """The CLI's "best" (`deepe compare`, `deepe jobs metrics`) and the Compare view's follow one rule:
    highest NDCG and score, lowest loss, none for a spread (its "best" is its final value)."""
    from deepe_widgets.ui import TrainingCompare
    from deepe_widgets.ui.labels import metric_label

    names = ("eval_heldout_cosine_ndcg@10", "reward_std", "eval_score", "loss")
    steps = {1: (0.2, 0.5, 0.3, 2.0), 2: (0.8, 0.1, 0.9, 1.0), 3: (0.5, 0.3, 0.6, 1.5)}
    a = _job_with({step: dict(zip(names, values)) for step, values in steps.items()})
    b = _job_with({step: {n: 2 * v for n, v in zip(names, values)} for step, values in steps.items()})
    # name -> (direction, job a's best); job b's is twice it
    expected = {"eval_heldout_cosine_ndcg@10": ("max", 0.8), "reward_std": (None, 0.3), "eval_score": ("max", 0.9),
                "loss": ("min", 1.0)}
    cli_compare = deepe_json("compare", str(a.id), str(b.id), "--json")["metrics"]
    cli_metrics = deepe_json("jobs", "metrics", str(a.id), "--json")
    view = TrainingCompare([a.id, b.id])
    try:
        rows = {r.split("</td>")[0]: r for r in view.summary.value.split("<tr>")[2:]}
        for name, (way, best) in expected.items():
            assert metrics.direction(name) == way, name
            for stats, factor in ((cli_compare[name][str(a.id)], 1), (cli_metrics[name], 1),
                                  (cli_compare[name][str(b.id)], 2)):
                assert (stats["direction"], stats["best"]) == (way, best * factor), (name, stats)
            row = next(r for k, r in rows.items() if f">{metric_label(name)} <" in k)
            final = steps[3][names.index(name)]
            if way:  # "final / best", the CLI's best
                assert {"max": "(highest)", "min": "(lowest)"}[way] in row, row
                assert f"{final:.5g} / {best:.5g}" in row and f"{2 * final:.5g} / {2 * best:.5g}" in row, row
            else:  # the final value alone, which is what the CLI calls best
                assert "(no best)" in row and " / " not in row and f">{final:.5g}<" in row, row
    finally:
        view.close()


def test_a_direction_a_method_declares_is_the_cli_s_and_the_widgets(workspace, tmp_path):
    """A method's training notebook may say which way its own metric is better; `deepe jobs metrics`,
    `deepe compare` and the Compare view all follow it."""
    import nbformat

    from deepe_widgets import methods, stagefiles
    from deepe_widgets.ui import TrainingCompare

    nb = nbformat.read(stagefiles.template_notebook_path(), as_version=4)
    nb.metadata["deepe"] = {"metrics": {"eval_score": "min"}}  # a score where lower is better, say a distance
    nbformat.write(nb, tmp_path / "mine.ipynb")
    methods.register_method("mine", {"training": (tmp_path / "mine.ipynb", "python3")})
    jobs_ = []
    for scale in (1, 2):
        job = jobs.submit_training("mine", "tiny", "demo-sft")
        sink = MetricSink(job.id)
        for step, value in ((1, 0.5), (2, 0.2), (3, 0.4)):
            sink.add(step, {"eval_score": value * scale}, None)
        sink.close()
        jobs_.append(job)
    a, b = jobs_
    assert metrics.direction("eval_score") == "max"  # the rule by name, which the declaration overrides
    stats = deepe_json("jobs", "metrics", str(a.id), "--json")["eval_score"]
    assert (stats["direction"], stats["best"]) == ("min", 0.2)
    report = deepe_json("compare", str(a.id), str(b.id), "--json")["metrics"]["eval_score"]
    assert [(report[str(j.id)]["direction"], report[str(j.id)]["best"]) for j in jobs_] == [("min", 0.2), ("min", 0.4)]
    view = TrainingCompare([a.id, b.id])
    try:
        row = next(r for r in view.summary.value.split("<tr>")[2:] if "Held-out score" in r)
        assert "(lowest)" in row and "0.4 / 0.2" in row and "0.8 / 0.4" in row, row
    finally:
        view.close()
