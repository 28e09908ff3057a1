"""Evaluate jobs: a training that held rows out is evaluated with its base model beside it; `deepe
evaluate` on demand; scores, predictions and records; re-runs; bad input refused in one sentence."""

import json
import socket
from pathlib import Path

import pytest

from deepe_widgets import datasets, evaluations, jobs

from helpers import FAST_PARAMS, deepe, deepe_json

pytestmark = pytest.mark.training


def _evaluate_jobs() -> list[dict]:
    return [j for j in deepe_json("jobs", "list", "--json") if j["kind"] == "evaluate"]


def _wait_all(ids: list[int]) -> list:
    return [jobs.wait_for(i, timeout=600) for i in ids]


def test_a_training_that_held_rows_out_is_evaluated_beside_its_base(workspace, monkeypatch):
    # An SFT-Demo training of the tiny model that held 10% of demo-sft out queues two evaluations:
    # its model, and its base on the same rows.
    monkeypatch.setenv("DEEPE_EVALUATE_AFTER_TRAINING", "1")
    summary = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
                         *FAST_PARAMS, "--param", "eval_steps=3", "--wait", "--json")
    assert summary["status"] == "succeeded", summary["error"]
    queued = _evaluate_jobs()
    assert len(queued) == 2, queued
    finished = _wait_all([j["id"] for j in queued])
    assert all(j.status == "succeeded" for j in finished), [(j.id, j.error) for j in finished]
    [model] = deepe_json("jobs", "show", str(summary["id"]), "--json")["artifacts"]
    model = model["name"]
    by_model = {j.base_model: j for j in finished}
    assert set(by_model) == {model, "tiny"}
    tuned = evaluations.latest(model)
    base = evaluations.latest("tiny")
    assert tuned["row_key"] == base["row_key"], "the base is scored on the same rows"
    for result in (tuned, base):
        for name in ("eval_exact_match", "eval_rougeL", "eval_chrf", "eval_bleu"):
            assert 0 <= result["metrics"][name] <= 1, (name, result["metrics"])
        assert Path(result["record"]).is_file()
        # the metrics are the workbench's too, at step 0 under the evaluate job
        rows = deepe_json("jobs", "metrics", str(result["job_id"]), "--all", "--json")
        assert {r["name"] for r in rows} >= {"eval_rougeL", "eval_chrf"} and {r["step"] for r in rows} == {0}
    # a row per held-out prompt (10% of demo-sft, the training's seed), joined with the base's answers
    side = evaluations.side_by_side(model)
    predictions = evaluations.read_predictions(tuned)
    assert len(side["rows"]) == len(predictions) == tuned["rows"] == round(datasets.get_dataset("demo-sft").rows * 0.1)
    assert all(r["base_answer"] is not None and r["tuned_score"] is not None and r["base_score"] is not None
               for r in side["rows"])
    assert {r["prompt"] for r in side["rows"]} == {r["prompt"] for r in evaluations.read_predictions(base)}
    # models show prints the scores with their suite, dataset hash and record
    shown = deepe("models", "show", model).stdout
    assert "eval     job" in shown and "generation on demo-sft" in shown and tuned["record"] in shown
    assert deepe_json("models", "show", model, "--json")["evaluations"][0]["job_id"] == tuned["job_id"]
    # and the model's own card, beside its weights, carries them with its base model's
    folder = Path(deepe_json("models", "show", model, "--json")["path"])
    card = json.loads((folder / "model_card.json").read_text())["evaluations"]["generation"]
    assert card["metrics"] == tuned["metrics"] and card["dataset_sha256"] == tuned["dataset_sha256"]
    assert card["base_metrics"] == base["metrics"]  # the base's evaluation was queued first
    readme = (folder / "README.md").read_text()
    assert "## Evaluation" in readme and "| eval_rougeL |" in readme and readme.count("## Evaluation") == 1

    # Re-running the record gives the same scores and answers.
    first = tuned
    again = deepe_json("jobs", "rerun", str(first["job_id"]), "--wait", "--json")
    assert again["status"] == "succeeded", again["error"]
    assert again["kind"] == "evaluate" and again["copied_from"] == first["job_id"]
    second = evaluations.latest(model)
    assert second["job_id"] == again["id"]
    assert second["metrics"] == pytest.approx(first["metrics"], abs=1e-9)
    assert [r["answer"] for r in evaluations.read_predictions(second)] == \
        [r["answer"] for r in evaluations.read_predictions(first)]

    # A judge nobody answers at fails that evaluation in one sentence; the training and the scores stand.
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = deepe_json("evaluate", model, "--suite", "judge", "--param", "max_rows=2", "--param", "max_new_tokens=4",
                      "--wait", "--json", env={"DEEPE_JUDGE_URL": f"http://127.0.0.1:{port}"}, check=False)
    assert done["status"] == "failed" and f"127.0.0.1:{port}" in done["error"], done["error"]
    assert jobs.get_job(summary["id"]).status == "succeeded"
    assert evaluations.latest(model)["job_id"] == second["job_id"]


def test_evaluate_on_demand_on_a_dataset_and_with_a_local_benchmark(workspace, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(6)))
    deepe("datasets", "add", "qa", str(data))
    done = deepe_json("evaluate", "tiny", "--dataset", "qa", "--param", "max_new_tokens=8", "--wait", "--json")
    assert done["status"] == "succeeded", done["error"]
    result = evaluations.latest("tiny")
    assert result["job_id"] == done["id"] and result["rows"] == 6  # every row: no split column
    text = deepe("evaluate", "tiny", "--dataset", "qa", "--param", "max_rows=2", "--wait").stdout
    assert "generation on qa" in text and "eval_rougeL" in text and "record:" in text
    assert evaluations.latest("tiny")["rows"] == 2

    bench = tmp_path / "capitals.jsonl"
    bench.write_text("".join(json.dumps({"question": f"Which number is {i}?", "choices": [str(i), str(i + 1)],
                                         "answer": 0}) + "\n" for i in range(10)))
    done = deepe_json("evaluate", "tiny", "--suite", "benchmark", "--param", f"benchmark_file={bench}",
                      "--wait", "--json")
    assert done["status"] == "succeeded", done["error"]
    metrics = evaluations.latest("tiny", "benchmark")["metrics"]
    assert 0 <= metrics["bench_capitals_acc"] <= 1 and metrics["bench_capitals_acc_stderr"] >= 0


def test_bad_evaluations_are_refused_in_one_sentence(workspace, tmp_path):
    unknown = deepe("evaluate", "tiny", "--dataset", "demo-sft", "--suite", "vibes", check=False)
    assert unknown.returncode == 2 and "generation, benchmark, judge" in unknown.stderr
    no_rows = deepe("evaluate", "tiny", check=False)
    assert no_rows.returncode == 2 and "--dataset" in no_rows.stderr
    bench = tmp_path / "broken.jsonl"
    bench.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n" +
                     json.dumps({"question": "q", "choices": ["a", "b"]}) + "\n")
    broken = deepe("evaluate", "tiny", "--suite", "benchmark", "--param", f"benchmark_file={bench}", check=False)
    assert broken.returncode == 2 and "line 2" in broken.stderr and "answer" in broken.stderr
    judged = deepe("evaluate", "tiny", "--dataset", "demo-sft", "--suite", "judge", check=False)
    assert judged.returncode == 2 and "tuned model" in judged.stderr
    odd = deepe("evaluate", "tiny", "--dataset", "demo-sft", "--param", "colour=red", check=False)
    assert odd.returncode == 2 and "max_rows" in odd.stderr
    assert all(len(r.stderr.strip().splitlines()) == 1 for r in (unknown, no_rows, broken, judged, odd))
    assert _evaluate_jobs() == [], "nothing queued"
