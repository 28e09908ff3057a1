"""Evaluation Data's gallery of validation images in the Voila app, in Debian's chromium: a text-to-image
run's pictures by step, the slider moving between them; then its Evaluation section, base and tuned
pictures of the held-out captions side by side."""

import re
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.training


def _rendered_run(tmp_path: Path) -> int:
    """A finished SD-Demo training of a tiny pipeline (4 steps, 32x32 pictures) with validation images
    at steps 0, 2 and 4, and the evaluations it queued (its pipeline's and its base's on the two
    held-out images), run by a worker as a user's would be."""
    from deepe_widgets import jobs, models, worker
    from deepe_widgets.testing import make_tiny_sd_pipeline

    models.add_model("tiny-sd", make_tiny_sd_pipeline(tmp_path / "tiny-sd"))
    job = jobs.submit_training("SD-Demo", "tiny-sd", "demo-sd", name="train1", params={
        "MAX_STEPS": 4, "LEARNING_RATE": 5e-2, "RESOLUTION": 32, "LORA_RANK": 8, "LORA_ALPHA": 8, "SAVE_STEPS": 0,
        "VALIDATION_STEPS": 2, "VALIDATION_INFERENCE_STEPS": 3, "GUIDANCE_SCALE": 1.0, "EVAL_STEPS": 2,
        "VALIDATION_PROMPTS": ["a zqx badge on a teal background", "a zqx badge on a white background"]})
    worker.Worker(idle_exit=0.5, poll_seconds=0.1).run()  # the training, then the two evaluations it queued
    finished = [jobs.get_job(j.id) for j in jobs.list_jobs()]
    assert [(j.kind, j.status) for j in sorted(finished, key=lambda j: j.id)] == \
        [("train", "succeeded"), ("evaluate", "succeeded"), ("evaluate", "succeeded")], [j.error for j in finished]
    return job.id


def test_evaluation_data_shows_the_validation_images_by_step(start_app, page, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPE_EVALUATE_AFTER_TRAINING", "1")
    job_id = _rendered_run(tmp_path)
    app = start_app(admin=False)
    page.goto(app.url)
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile("^Trainings$")).first.click()
    page.locator(f"button[title^='job {job_id}:']").first.click()
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile("^Evaluation Data$")).first.click()
    gallery = page.locator(".deepe-gallery").first
    gallery.locator("img").nth(1).wait_for()
    assert gallery.locator("img").count() == 2  # one per validation prompt
    assert "a zqx badge on a white background" in gallery.inner_text()
    assert gallery.locator(".widget-readout").first.inner_text().strip() == "4"  # the newest step first
    newest = gallery.locator("img").first.get_attribute("src")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery-step-4.png"), full_page=True)
    handle = gallery.locator(".ui-slider-handle, .noUi-handle").first
    handle.focus()
    for _ in range(2):  # back to step 0: same prompts, same seed, before training
        page.keyboard.press("ArrowLeft")
        page.wait_for_timeout(200)
    deadline = time.monotonic() + 20
    while gallery.locator(".widget-readout").first.inner_text().strip() != "0":
        assert time.monotonic() < deadline, "the slider did not move to step 0"
        page.wait_for_timeout(200)
    while gallery.locator("img").first.get_attribute("src") == newest:
        assert time.monotonic() < deadline, "the picture did not change with the step"
        page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / "gallery-step-0.png"), full_page=True)

    # the Evaluation section: the held-out images' denoising loss, base beside tuned, and the pictures
    section = page.locator(".deepe-evaluation").first
    section.locator(".deepe-eval-scores").wait_for()
    assert "tuned: " in section.inner_text() and "base: tiny-sd" in section.inner_text()
    table = section.locator("table.deepe-predictions")
    table.wait_for()
    assert table.locator("tbody tr").count() == 2  # the two held-out images of demo-sd's 16
    assert table.locator("tbody img").count() == 6  # each: the held-out image, the base's and the tuned picture
    assert "denoising loss" in section.inner_text()
    section.scroll_into_view_if_needed()
    section.screenshot(path=str(ARTIFACTS / "evaluation-images.png"))
    assert "Traceback" not in page.inner_text("body")
