"""The evaluation in the Voila app, in Debian's chromium: a training's Evaluation Data (scores side by side,
predictions, record) and a model card with its scores and Evaluate. Screenshots go to /tmp/eval-*.png
and test-artifacts/ (look at them)."""

import re
import shutil
from pathlib import Path

import pytest

from deepe_widgets import evaluations, jobs, models, worker
from deepe_widgets.ui.labels import metric_label

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SHOTS = Path("/tmp")

pytestmark = pytest.mark.training


def shot(page, name: str, locator=None) -> Path:
    """A screenshot (the page, or one element of it) as /tmp/eval-NAME.png, kept in test-artifacts/ too."""
    path = SHOTS / f"eval-{name}.png"
    if locator is not None:
        locator.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


def tab(page, title: str):
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile(f"^{re.escape(title)}$")).first.click()


def evaluate_button(card):
    return card.locator("button", has_text=re.compile(r"^\s*Evaluate\s*$"))


def run_queue() -> None:
    worker.Worker(idle_exit=0.5, poll_seconds=0.1).run()


def test_evaluation_data_and_the_model_card_in_chromium(start_app, page, workspace, monkeypatch):
    monkeypatch.setenv("DEEPE_EVALUATE_AFTER_TRAINING", "1")
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="capitals",
                               params={"MAX_STEPS": 24, "BATCH_SIZE": 4, "LEARNING_RATE": 5e-3,
                                       "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 0})
    run_queue()  # the training, then the evaluations it queues: its model's and its base model's
    job = jobs.get_job(job.id)
    assert job.status == "succeeded", job.error
    [model] = [m.name for m in models.models_of_job(job.id)]
    queued = [j for j in jobs.list_jobs() if j.kind == "evaluate"]
    assert sorted(j.base_model for j in queued) == sorted([model, "tiny"])
    assert [j.status for j in queued] == ["succeeded", "succeeded"], [j.error for j in queued]
    side = evaluations.side_by_side(model)

    app = start_app(admin=False)
    page.set_viewport_size({"width": 1400, "height": 2200})  # element screenshots need them inside the view
    page.goto(app.url)
    page.get_by_text("Training Method Management").wait_for()
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    page.locator(f"button[title^='job {job.id}:']").first.click()
    page.locator("h3", has_text=f"job {job.id}").wait_for()
    tab(page, "Evaluation Data")
    # the held-out curves: a row of their own, and drawn dashed on the training twin's chart
    page.get_by_text("On the held-out rows").wait_for()
    loss_chart = page.locator(".bqplot").filter(has=page.locator("text.mainheading", has_text=re.compile("^Loss$")))
    loss_chart.locator("path.line").nth(1).wait_for()  # the training line and the held-out one
    assert page.locator(".bqplot text.mainheading", has_text=metric_label("eval_loss")).count() == 1
    section = page.locator(".deepe-evaluation").first
    scores = section.locator(".deepe-eval-scores")
    scores.wait_for()
    text = scores.inner_text()
    assert metric_label("eval_rougeL") in text and f"tuned: {model}" in text and "base: tiny" in text
    assert "Evaluated" in section.locator(".deepe-eval-state").inner_text()
    table = section.locator("table.deepe-predictions")
    table.wait_for()
    assert table.locator("tbody tr").count() == len(side["rows"])
    assert table.locator("tr.deepe-worse-row").count() == sum(1 for r in side["rows"] if r["worse"])
    page.locator(".bqplot path.line").first.wait_for()
    page.wait_for_timeout(1500)  # the charts finish drawing
    shot(page, "data")
    shot(page, "curves", page.locator(".widget-tab-contents", has=page.get_by_text("On the held-out rows")).last)
    scores.scroll_into_view_if_needed()
    shot(page, "data-section", section)
    # another order: the prompts A to Z
    section.locator("select").filter(has=page.locator("option", has_text="prompt, A to Z")).select_option(
        label="prompt, A to Z")
    first_prompt = sorted((r["prompt"] for r in side["rows"]), key=str.casefold)[0].split("\n")[0]
    page.wait_for_function("""p => { const c = document.querySelector(
        'table.deepe-predictions tbody tr td:nth-child(2)'); return c && c.textContent.startsWith(p); }""",
                           arg=first_prompt)
    # the evaluation record, drawn in the page
    section.get_by_role("button", name="Show the evaluation record").click()
    section.locator(".deepe-record .cell").first.wait_for()
    assert section.locator(".deepe-record script").count() == 0
    shot(page, "record", section)

    # the model card: its scores with the suite and the dataset hash, the records, Evaluate
    tab(page, "Models")
    page.locator(f"button[title^='the card of {model}:']").click()
    card = page.locator(".deepe-model-card")
    card.locator(".deepe-eval-scores").wait_for()
    card_text = card.inner_text()
    assert "generation suite on demo-sft" in card_text
    assert evaluations.latest(model)["dataset_sha256"][:12] in card_text
    assert "Evaluate" in card_text and "Training metrics" in card_text
    evaluate_button(card).wait_for()
    shot(page, "model-card", card)
    # Evaluate from the card: a generation job queued, shown, then its scores
    evaluate_button(card).click()
    card.get_by_text("is queued").wait_for()
    again = max(j.id for j in jobs.list_jobs() if j.kind == "evaluate")
    card.locator(".deepe-eval-state", has_text=f"job {again}): queued").wait_for()
    shot(page, "model-card-queued", card)
    assert jobs.wait_for(again, timeout=300).status == "succeeded"  # the worker the card started runs it
    card.locator(".deepe-eval-state", has_text=f"tuned model job {again}").wait_for(timeout=30_000)

    # Compare two evaluated runs: their scores first, then their answers to the same prompts
    second = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="capitals-slower",
                                  params={"MAX_STEPS": 24, "BATCH_SIZE": 4, "LEARNING_RATE": 1e-3,
                                          "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 0})
    run_queue()
    assert jobs.wait_for(second.id, timeout=300).status == "succeeded"
    [second_model] = [m.name for m in models.models_of_job(second.id)]
    # evaluated after it trained; the worker the card started may be the one running it
    [queued] = [j for j in jobs.list_jobs() if j.kind == "evaluate" and j.base_model == second_model]
    assert jobs.wait_for(queued.id, timeout=300).status == "succeeded"
    assert evaluations.latest(second_model) is not None
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    for run in (job, second):
        page.locator(f"input[type=checkbox][title^='tick job {run.id} ']").first.check()
    page.get_by_role("button", name="Compare").click()
    page.get_by_text("Predictions on the same prompts").wait_for()
    compare = page.locator(".widget-vbox", has=page.locator("h3", has_text="Compare capitals")).last
    assert compare.locator("table.deepe-predictions tbody tr").count() == len(side["rows"])
    assert "★" in compare.inner_text() or "-" in compare.inner_text()
    shot(page, "compare", compare)
    assert "Traceback" not in page.inner_text("body")
