"""Evaluation Data's gallery of validation images in the Voila app, in Debian's chromium: a text-to-image
run's pictures by step, the slider moving between them."""

import re
import time
from pathlib import Path

import pytest

from deepe_widgets import store

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.training


def _rendered_run(workspace: Path, tmp_path: Path) -> int:
    """A finished SD-Demo job whose run folder holds validation images at steps 0, 2 and 4, made by
    the real training loop on a tiny pipeline (in this process: the gallery is what is tested)."""
    import torch
    from diffusers import DiffusionPipeline

    from deepe_widgets import datasets, models
    from deepe_widgets.runtime.image_generation import (
        DiffusionLoRATrainer,
        DiffusionTrainingArguments,
        add_unet_lora,
        read_image_rows,
    )
    from deepe_widgets.testing import make_tiny_sd_pipeline

    pipeline_dir = make_tiny_sd_pipeline(tmp_path / "tiny-sd")
    models.add_model("tiny-sd", pipeline_dir)
    with store.session() as s:
        job = store.Job(kind=store.JobKind.TRAIN, method="SD-Demo", base_model="tiny-sd", dataset="demo-sd",
                        status=store.JobStatus.SUCCEEDED, name="train1", stage="training")
        s.add(job)
        s.flush()
        job.run_dir = str(workspace / "runs" / str(job.id))
        s.add(job)
        job_id, run_dir = job.id, Path(job.run_dir)
    torch.manual_seed(0)
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir)
    add_unet_lora(pipe, 8, 8)
    rows = read_image_rows(datasets.get_dataset("demo-sd").path)
    trainer = DiffusionLoRATrainer(pipe, rows, DiffusionTrainingArguments(
        output_dir=str(run_dir / "output"), max_steps=4, learning_rate=5e-2, resolution=32, validation_steps=2,
        validation_prompts=["a zqx badge on a teal background", "a zqx badge on a white background"],
        validation_inference_steps=3, guidance_scale=1.0, validation_dir=str(run_dir / "validation")))
    trainer.train()
    return job_id


def test_evaluation_data_shows_the_validation_images_by_step(start_app, page, workspace, tmp_path):
    job_id = _rendered_run(workspace, tmp_path)
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
