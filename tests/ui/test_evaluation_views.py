"""The evaluation where users read it: Evaluation Data, Compare and the model card, on real trainings
and real evaluate jobs of the tiny model (no browser: widgets in plain Python)."""

import asyncio
import json
import re
import socket
import threading
import time

import pytest

from deepe_widgets import datasets, evaluations, jobs, models, worker
from deepe_widgets.ui import ModelsView, TrainingCompare, TrainingDetail
from deepe_widgets.ui import detail as detail_module
from deepe_widgets.ui.evaluation_view import change_words, predictions_html, score_text, sort_rows
from deepe_widgets.ui.labels import metric_label

pytestmark = pytest.mark.training

FAST = {"MAX_STEPS": 6, "BATCH_SIZE": 4, "LEARNING_RATE": 5e-3, "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 0}


def run_queue() -> None:
    """Run every queued job here, until the queue is empty (a worker as `deepe worker` runs it)."""
    worker.Worker(idle_exit=0.5, poll_seconds=0.1).run()


def train(**params):
    """A succeeded SFT-Demo training of the tiny model, and the Customized Model it made."""
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={**FAST, **params})
    run_queue()
    job = jobs.get_job(job.id)
    assert job.status == "succeeded", job.error
    [model] = models.models_of_job(job.id)
    return job, model.name


def evaluate_jobs() -> list:
    return [j for j in jobs.list_jobs() if j.kind == "evaluate"]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def small_dataset(folder) -> str:
    """A dataset of four capital questions the trainings never saw (a quick evaluation on another dataset)."""
    path = folder / "capitals.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is the capital of {country}?", "answer": capital}) + "\n"
                            for country, capital in (("Chile", "Santiago"), ("Kenya", "Nairobi"),
                                                     ("Norway", "Oslo"), ("Egypt", "Cairo"))))
    datasets.add_dataset("capitals", path)
    return "capitals"


def test_evaluation_data_compare_and_the_model_card_show_real_evaluations(workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPE_EVALUATE_AFTER_TRAINING", "1")
    monkeypatch.setattr(detail_module, "EVALUATION_EVERY", 0.0)  # every refresh looks at the evaluate jobs
    first = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params=FAST)

    # Evaluation Data follows the training, then the evaluations it queues (its model's and its base's)
    detail = TrainingDetail(first.id, start_worker=False)
    section = detail.evaluation
    assert "When the training succeeds" in section.state.value
    runner = threading.Thread(target=run_queue)  # a worker: the training, then its evaluate jobs
    runner.start()
    states, deadline = [], time.monotonic() + 900
    while not detail.refresh():
        states.append(section.state.value)
        assert time.monotonic() < deadline, states[-1]
        time.sleep(0.2)
    # followed to the end: nothing more to follow once the evaluate jobs have finished
    queued = evaluate_jobs()
    assert len(queued) == 2 and all(j.status == "succeeded" for j in queued), [(j.id, j.error) for j in queued]
    runner.join()
    assert any("Evaluating" in s and "running" in s for s in states), states
    [tuned] = [m.name for m in models.models_of_job(first.id)]
    # its held-out curves: a row of their own, and drawn dashed on the training twin's chart
    assert detail.figures["eval_loss"] in detail.held_out_charts.children
    assert detail.figures["loss"] in detail.charts.children
    assert detail.overlays["eval_loss"] in detail.figures["loss"].marks
    assert list(detail.overlays["eval_loss"].y) == list(detail.lines["eval_loss"].y)
    assert "eval_runtime" not in detail.overlays  # the evaluation's own speed is no held-out quality

    # the scores of the tuned and the base model side by side, in words
    tuned_result, base_result = evaluations.latest(tuned), evaluations.latest("tiny")
    state = section.state.value
    assert "Evaluated" in state and f"tuned model job {tuned_result['job_id']}" in state
    assert f"base model job {base_result['job_id']}" in state and tuned_result["dataset_sha256"][:12] in state
    scores = section.scores.value
    assert "base: tiny" in scores and f"tuned: {tuned}" in scores
    for name in ("eval_rougeL", "eval_chrf", "eval_bleu", "eval_exact_match"):
        label = metric_label(name)
        row = re.search(rf"<tr><td>{re.escape(label)}</td><td>([^<]*)</td><td>([^<]*)</td>", scores)
        assert row, (label, scores)
        assert row.groups() == (score_text(base_result["metrics"][name]), score_text(tuned_result["metrics"][name]))
    assert scores.index(metric_label("eval_rougeL")) < scores.index(metric_label("eval_bleu"))  # the row score first

    # the predictions table: a row per held-out prompt, with both answers and both scores
    side = evaluations.side_by_side(tuned)
    assert len(section.rows()) == len(side["rows"]) == tuned_result["rows"] > 0
    table = section.predictions.value
    assert table.count("<tr>") + table.count("<tr class='deepe-worse-row'>") == len(side["rows"]) + 1
    worse = sum(1 for r in side["rows"] if r["worse"])
    assert table.count("deepe-worse-row") == worse and f"worse on {worse}" in section.predictions_area.get_title(0)
    for row in side["rows"]:
        assert row["prompt"].split("\n")[0] in table
    section.sort.value = "prompt"
    assert [r["prompt"] for r in section.rows()] == sorted((r["prompt"] for r in side["rows"]), key=str.casefold)
    section.sort.value = "worse"
    flags = [r["worse"] for r in section.rows()]
    assert flags == sorted(flags, reverse=True)  # the rows the tuned model lost come first

    # its record: the executed evaluation notebooks of both models
    labels = [label for label, _path in section.record_choice.options]
    assert [f"job {tuned_result['job_id']}" in label for label in labels] == [True, False] and len(labels) == 2
    section.open_record()
    assert section.record.layout.display is None and "eval_rougeL" in section.record.body.value
    detail.close()

    # Compare: a second run, evaluated; its base is scored already
    second, tuned_again = train(LEARNING_RATE=2e-3)  # and its evaluation: its base is scored on these rows already
    assert [j.base_model for j in evaluate_jobs()] == [tuned_again, tuned, "tiny"]
    compare = TrainingCompare([first.id, second.id])
    children = [getattr(c, "value", "") for c in compare.children]
    evaluation_at = next(i for i, v in enumerate(children) if "<b>Evaluation</b>" in v)
    configuration_at = next(i for i, v in enumerate(children) if "<b>Configuration</b>" in v)
    assert evaluation_at < configuration_at  # evaluation metrics first
    second_result = evaluations.latest(tuned_again)
    for result in (tuned_result, second_result):
        assert score_text(result["metrics"]["eval_chrf"]) in compare.scores.value
    assert "base model tiny (before training)" in compare.scores.value  # scored on the same rows
    joined = compare.prediction_rows()
    assert len(joined) == len(side["rows"])  # the same held-out prompts (same seed and fraction)
    second_answers = {r["prompt"]: r["answer"] for r in evaluations.read_predictions(second_result)}
    for row in joined:
        assert row["answers"][str(second.id)]["answer"] == second_answers[row["prompt"]]
    assert compare.predictions.value.count("<tr>") == len(joined) + 1
    compare.close()

    # the model card: scores with the suite, the dataset hash and the records; Evaluate queues a job
    other_dataset = small_dataset(tmp_path)
    view = ModelsView(start_worker=False)
    # the list: its newest generation score beside its training's final loss
    rouge = f"{metric_label('eval_rougeL')} {score_text(tuned_result['metrics']['eval_rougeL'])}"
    assert view.rows[tuned][6].value == rouge and view.rows[tuned][5].value.startswith("loss ")
    view.open_model(tuned)
    card = view.card
    assert card.eval_dataset.value == "demo-sft"  # its training's dataset
    assert "generation suite on demo-sft" in card.evaluation.scores.value
    assert tuned_result["dataset_sha256"][:12] in card.evaluation.scores.value
    assert len(card.evaluation.record_choice.options) == 2
    card.eval_suite.value = "benchmark"
    assert card.eval_benchmark.layout.display is None and card.eval_dataset.layout.display == "none"
    card.evaluate_button.click()
    assert "Give the benchmark file" in card.evaluate_note.value
    # on another dataset: this model, and its base model on the same rows to compare with
    card.eval_suite.value = "generation"
    card.eval_dataset.value = other_dataset
    card.evaluate_button.click()
    other, other_base = card.last_evaluation, card.last_base_evaluation
    assert other is not None and other_base is not None, card.evaluate_note.value
    assert f"Evaluate jobs {other.id} (this model) and {other_base.id} (its base model)" in card.evaluate_note.value
    assert (other_base.base_model, other_base.dataset) == ("tiny", other_dataset)
    assert other_base.params["ROW_KEY"] == other.params["ROW_KEY"]
    # a judge nobody answers at: the job fails with one sentence, shown on the card; the scores stay
    monkeypatch.setenv("DEEPE_JUDGE_URL", closed_port_url())
    card.eval_suite.value = "judge"
    assert card.eval_with_base.layout.display == "none"  # the judge reads both models' answers itself
    card.evaluate_button.click()
    judged = card.last_evaluation
    assert judged is not None and f"Evaluate job {judged.id} is queued" in card.evaluate_note.value
    assert f"job {judged.id}): queued" in card.evaluation.state.value and not card.evaluation.settled
    run_queue()
    assert [jobs.get_job(j.id).status for j in (other, other_base, judged)] == ["succeeded", "succeeded", "failed"]
    asyncio.run(view.poll_once())  # the view's own poll follows the open card's evaluation
    newest = evaluations.latest(tuned)  # and redraws the list's Evaluation column with the newest score
    assert newest["job_id"] == other.id
    assert view.rows[tuned][6].value == f"{metric_label('eval_rougeL')} {score_text(newest['metrics']['eval_rougeL'])}"
    assert card.evaluation.settled and "An evaluation failed" in card.evaluation.state.value
    assert "is queued" not in card.evaluate_note.value  # the note went with the state it spoke of
    assert f"judge suite, job {judged.id}" in card.evaluation.state.value
    scores = card.evaluation.scores.value  # the newest generation scores, the base's on the same rows
    assert f"generation suite on {other_dataset}" in scores and "other rows" not in scores
    gsm = evaluations.latest("tiny")
    assert gsm["job_id"] == other_base.id and score_text(gsm["metrics"]["eval_chrf"]) in scores
    view.close()


def test_the_evaluation_section_says_what_comes_before_a_training_has_a_model(workspace, monkeypatch):
    monkeypatch.setattr(detail_module, "EVALUATION_EVERY", 0.0)
    queued = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params=FAST)
    detail = TrainingDetail(queued.id, start_worker=False)
    assert "When the training succeeds" in detail.evaluation.state.value
    assert detail.evaluation.scores.value == "" and detail.evaluation.predictions_area.layout.display == "none"
    jobs.cancel_job(queued.id)
    assert detail.refresh() is True and "did not succeed" in detail.evaluation.state.value
    detail.close()


def test_worse_rows_are_marked_and_changes_follow_the_metric_direction():
    rows = [{"prompt": "b", "reference": "r", "base_answer": "good", "tuned_answer": "bad", "base_score": 0.9,
             "tuned_score": 0.2, "gain": -0.7, "worse": True},
            {"prompt": "a", "reference": "r", "base_answer": "x", "tuned_answer": "y <script>", "base_score": 0.1,
             "tuned_score": 0.5, "gain": 0.4, "worse": False}]
    table = predictions_html([dict(r, index=i + 1) for i, r in enumerate(rows)])
    assert table.count("deepe-worse-row") == 1 and "▼ worse" in table and "▲ better" in table
    assert "<script>" not in table and "y &lt;script&gt;" in table
    assert [r["prompt"] for r in sort_rows(rows, "prompt")] == ["a", "b"]
    assert [r["prompt"] for r in sort_rows(rows, "gain")] == ["a", "b"]
    assert [r["prompt"] for r in sort_rows(rows, "worse")] == ["b", "a"]
    # a per-row loss (the images suite's): the lower score is the better one
    assert evaluations.gain("denoising_loss", 0.9, 0.2) == pytest.approx(0.7)
    assert evaluations.gain("rougeL", 0.9, 0.2) == pytest.approx(-0.7) and evaluations.gain("rougeL", None, 1) is None
    assert change_words("eval_loss", 1.0, 0.5)[1] == "deepe-better"  # lower is better
    assert change_words("eval_rougeL", 0.5, 0.4)[1] == "deepe-worse"
    assert change_words("eval_rougeL", 0.5, 0.5)[0] == "= same"
    assert score_text(0.41234) == "0.4123" and score_text(128.0) == "128" and score_text(None) == "-"
    assert metric_label("bench_capitals_acc") == "Benchmark capitals: accuracy"  # the benchmark suite's, in words
