"""SD-Demo: image datasets checked at registration; a LoRA trained on a tiny Stable Diffusion 1.x pipeline
(built here, nothing downloaded) through `deepe train --wait`, with validation images by step that change
after training (same seed); the record shows them, Evaluation Data's gallery steps through them; then
`deepe save` fuses the LoRA and `deepe infer` renders PNGs with the base, the adapter and the fused model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import jobs, metrics
from deepe_widgets.errors import DeepeError

from helpers import deepe, deepe_json

PROMPT = "a zqx badge on a teal background"
# 32x32 pictures, 4 denoising steps, large LoRA steps: the tiny pipeline changes visibly in 8 steps.
TRAIN_PARAMS = {"max_steps": "8", "resolution": "32", "learning_rate": "5e-2", "lora_rank": "8", "lora_alpha": "8",
                "save_steps": "4", "validation_steps": "4", "validation_inference_steps": "4", "snr_gamma": "5.0",
                "guidance_scale": "1.0", "eval_steps": "4"}
INFER_PARAMS = ["--param", "seed=0", "--param", "num_inference_steps=4", "--param", "guidance_scale=1.0",
                "--param", "height=32", "--param", "width=32"]


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    from deepe_widgets.testing import make_tiny_sd_pipeline

    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def sd_workspace(workspace, tiny_sd_dir):
    from deepe_widgets import models

    models.add_model("tiny-sd", tiny_sd_dir)
    return workspace


def _pixels(path: str):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def _difference(a: str, b: str) -> float:
    """Mean absolute difference of two PNGs, 0–255."""
    return float(abs(_pixels(a) - _pixels(b)).mean())


def _image_folder(root: Path, lines: list[dict], images: dict[str, bytes | None]) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for name, content in images.items():
        if content is None:
            Image.new("RGB", (8, 8), (200, 10, 10)).save(root / name)
        else:
            (root / name).write_bytes(content)
    (root / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


# ---------------------------------------------------------------------------------------------
# Datasets: checked when registered, refused naming the file


def test_demo_image_dataset_is_registered_with_its_images(sd_workspace):
    from deepe_widgets import datasets, image_data

    record = datasets.get_dataset("demo-sd")
    assert record.format == "jsonl" and record.rows == 16 and {"file_name", "text"} <= set(record.columns)
    columns, rows = datasets.preview("demo-sd", rows=3)
    assert all(PROMPT.split(" on ")[0] in row["text"] for row in rows)
    thumbs = image_data.thumbnails(Path(record.path), rows)
    assert len(thumbs) == 3 and all(len(t) > 100 for t in thumbs)  # base64 PNGs for the preview

    from deepe_widgets.ui.launcher import TrainingLauncher

    form = TrainingLauncher(start_worker=False)
    form.dataset.value = "demo-sd"  # the form's preview: the pictures beside their captions
    assert form.preview.value.count("<img src='data:image/png;base64,") == 3 and PROMPT in form.preview.value
    form.close()


@pytest.mark.parametrize("lines,images,message", [
    ([{"file_name": "a.png", "text": "red"}, {"file_name": "b.png", "text": ""}], {"a.png": None, "b.png": None},
     "line 2 (b.png) has no caption"),
    ([{"file_name": "a.png", "text": "red"}, {"file_name": "gone.png", "text": "x"}], {"a.png": None},
     "gone.png (line 2 of metadata.jsonl) does not exist"),
    ([{"file_name": "a.png", "text": "red"}], {"a.png": b"not a png at all"},
     "a.png (line 1 of metadata.jsonl) cannot be read"),
])
def test_bad_image_folder_is_refused_at_registration_naming_the_file(home, tmp_path, lines, images, message):
    from deepe_widgets import datasets

    folder = _image_folder(tmp_path / "pics", lines, images)
    with pytest.raises(DeepeError) as caught:
        datasets.add_dataset("pics", folder)
    assert message in caught.value.message
    assert datasets.list_datasets() == []


def test_the_workbench_registers_every_image_and_caption_column_the_kernel_reads(home, tmp_path):
    """Registration (the workbench) and training (the kernel) read one list of column names: a
    folder the first accepts is one the second can train on, and a column neither knows is refused."""
    from deepe_widgets import datasets, image_data
    from deepe_widgets.runtime import image_generation as diffusion

    for number, (image, caption) in enumerate(zip(diffusion.IMAGE_COLUMNS, diffusion.CAPTION_COLUMNS * 2)):
        folder = _image_folder(tmp_path / f"pics{number}", [{image: "a.png", caption: "red"}], {"a.png": None})
        record = datasets.add_dataset(f"pics{number}", folder)
        image_data.check_image_dataset(record)
        assert diffusion.read_image_rows(str(folder)) == [{"image": str(folder / "a.png"), "text": "red"}]
    folder = _image_folder(tmp_path / "odd", [{"picture": "a.png", "text": "red"}], {"a.png": None})
    with pytest.raises(DeepeError, match="is not an image dataset"):  # a text dataset to the workbench
        image_data.check_image_dataset(datasets.add_dataset("odd", folder))
    with pytest.raises(ValueError, match="needs an image path"):
        diffusion.read_image_rows(str(folder))


def test_cli_refuses_a_folder_without_metadata_and_accepts_a_jsonl_of_image_paths(home, tmp_path):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    done = deepe("datasets", "add", "nothing", str(tmp_path / "empty"), check=False)
    assert done.returncode == 2 and "has no metadata.jsonl" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    image = tmp_path / "elsewhere" / "one.png"
    image.parent.mkdir()
    Image.new("RGB", (8, 8)).save(image)
    listing = tmp_path / "list.jsonl"
    listing.write_text(json.dumps({"image": str(image), "caption": "a black square"}) + "\n")
    assert "1 rows" in deepe("datasets", "add", "paths", str(listing)).stdout


def test_keep_adapter_is_refused_for_a_method_that_always_merges(sd_workspace, tmp_path):
    from deepe_widgets import models

    models.add_model("sft-adapter", tmp_path, kind="customized", parent="tiny", method="SFT-Demo")
    with pytest.raises(DeepeError, match="'SFT-Demo' always merges the adapter"):
        jobs.submit_save("sft-adapter", keep_adapter=True)
    assert jobs.list_jobs() == []


def test_sd_demo_refuses_text_data_and_a_chat_model_at_submit(sd_workspace):
    with pytest.raises(DeepeError, match="'demo-sft' is not an image dataset"):
        jobs.submit_training("SD-Demo", "tiny-sd", "demo-sft")
    with pytest.raises(DeepeError, match=r"SD-Demo needs a text-to-image pipeline .*; tiny is a text-only "
                                         r"chat model. Choose tiny-sd instead"):
        jobs.submit_training("SD-Demo", "tiny", "demo-sd")
    assert jobs.list_jobs() == []


# ---------------------------------------------------------------------------------------------
# Train, look, save, infer


@pytest.mark.training
def test_sd_demo_trains_renders_by_step_saves_and_infers(sd_workspace):
    trained = deepe_json("train", "--method", "SD-Demo", "--base-model", "tiny-sd", "--dataset", "demo-sd",
                         *[arg for key, value in TRAIN_PARAMS.items() for arg in ("--param", f"{key}={value}")],
                         "--wait", "--json", timeout=400)
    assert trained["status"] == "succeeded", trained["error"]
    job = jobs.get_job(trained["id"])
    loss = metrics.metric_stats([job.id])[job.id]["loss"]
    assert loss["points"] == 8 and math.isfinite(loss["final"])  # streamed every step
    # two of demo-sd's 16 images held out (EVAL_FRACTION 0.1), scored before the first step and every 4
    held_out = dict(zip(*metrics.metric_series([job.id])[job.id]["eval_loss"]))
    assert sorted(held_out) == [0, 4, 8] and all(math.isfinite(v) for v in held_out.values())
    assert "2 held-out rows (EVAL_FRACTION 0.1), 14 training rows" in Path(job.run_dir, "training.log").read_text()

    from deepe_widgets.runtime.image_generation import validation_images

    run_dir = Path(job.run_dir)
    images = validation_images(run_dir / "validation")
    assert [e["step"] for e in images] == [0, 4, 8] and {e["prompt"] for e in images} == {PROMPT}
    by_step = {e["step"]: e["path"] for e in images}
    # step 0 is the base model (the LoRA starts as a no-op); same prompt, same seed: training changed the picture
    assert _difference(by_step[0], by_step[8]) > 1.0
    assert (run_dir / "output" / "checkpoint-4" / "trainer_state.json").is_file()

    record = nbformat.read(run_dir / "training.ipynb", as_version=4)
    shown = "".join(out.get("data", {}).get("text/html", "") for cell in record.cells
                    for out in cell.get("outputs", []))
    assert shown.count("data:image/png;base64,") == 3 and "step 8" in shown  # the record shows them
    from deepe_widgets.ui.record import render_notebook

    assert render_notebook(run_dir / "training.ipynb").count("data:image/png;base64,") == 3  # so does its tab

    from deepe_widgets.ui.detail import TrainingDetail

    detail = TrainingDetail(job.id)  # Evaluation Data: the gallery, its slider over the rendered steps
    gallery = detail.gallery
    assert gallery.layout.display is None and list(gallery.step.options) == [0, 4, 8] and gallery.step.value == 8
    assert gallery.pictures.children[0].children[0].value == Path(by_step[8]).read_bytes()
    gallery.step.value = 0
    assert gallery.pictures.children[0].children[0].value == Path(by_step[0]).read_bytes()
    detail.close()

    [customized] = trained["artifacts"]
    assert (Path(customized["path"]) / "pytorch_lora_weights.safetensors").is_file()

    # Evaluated beside its base on the held-out images: at the same fixed noise the evaluation stage
    # scores the trained LoRA as the training's last evaluation did, the base as its first did
    from deepe_widgets import evaluations

    done = deepe_json("evaluate", customized["name"], "--wait", "--json", timeout=300)
    assert done["status"] == "succeeded", done["error"]
    tuned, base = evaluations.latest(customized["name"], "images"), evaluations.latest("tiny-sd", "images")
    assert base is not None and base["row_key"] == tuned["row_key"]  # queued with it, on the same images
    assert tuned["metrics"]["eval_loss"] == pytest.approx(held_out[8], rel=1e-3)
    assert base["metrics"]["eval_loss"] == pytest.approx(held_out[0], rel=1e-3)
    side = evaluations.side_by_side(customized["name"], "images")
    assert len(side["rows"]) == 2 and all(r["score"] == "denoising_loss" for r in side["rows"])
    for row in side["rows"]:  # the caption, the held-out image, and each pipeline's picture of the caption
        assert row["prompt"].startswith("a zqx badge") and Path(row["reference"]).is_file()
        assert Path(row["tuned_answer"]).is_file() and Path(row["base_answer"]).is_file()
        assert row["gain"] == pytest.approx(row["base_score"] - row["tuned_score"])  # lower loss is better
        assert row["worse"] == (row["tuned_score"] > row["base_score"])
    from deepe_widgets.ui.evaluation_view import predictions_html

    table = predictions_html(side["rows"])
    assert table.count("<img src='data:image/png;base64,") == 6  # reference, base and tuned picture per row
    from deepe_widgets import models
    from deepe_widgets.ui.labels import metric_label
    from deepe_widgets.ui.models_view import key_score

    assert key_score(models.get_model(customized["name"])).startswith(metric_label("eval_loss"))  # the Models list
    saved = deepe_json("save", customized["name"], "--wait", "--json", timeout=300)
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
    assert (Path(complete["path"]) / "model_index.json").is_file()
    assert not (Path(complete["path"]) / "pytorch_lora_weights.safetensors").exists()  # fused into the UNet

    kept = deepe_json("save", customized["name"], "--keep-adapter", "--wait", "--json", timeout=300)
    assert kept["status"] == "succeeded", kept["error"]
    [with_adapter] = kept["artifacts"]  # the base pipeline, and the LoRA file beside it for inference to load
    assert {"model_index.json", "pytorch_lora_weights.safetensors"} <= {p.name for p in
                                                                         Path(with_adapter["path"]).iterdir()}

    # the validation renders' settings: the Complete Model draws what the trained LoRA drew at step 8
    shown = deepe("infer", complete["name"], "--prompt", PROMPT, *INFER_PARAMS, timeout=300).stdout
    fused_png = shown.split(f"> {PROMPT}\n")[1].splitlines()[0]  # the CLI prints each PNG's path
    assert fused_png.endswith(".png") and Path(fused_png).is_file()
    assert _difference(fused_png, by_step[8]) < 0.5  # fusing keeps what the adapter does
    assert _difference(fused_png, by_step[0]) > 1.0  # and that differs from the base model, same seed

    from deepe_widgets.ui.models_view import ModelCard

    # Try it in the Models view shows the picture (with its seed), not the path
    shown = ModelCard._answer_of(ModelCard, {"responses": [{"prompt": PROMPT, "response": fused_png,
                                                            "images": [fused_png], "seed": 0}]})
    assert "<img src='data:image/png;base64," in shown and "seed 0" in shown and fused_png not in shown


# ---------------------------------------------------------------------------------------------
# SimpleTuner: only where a kernel can run it


def test_simpletuner_is_refused_with_one_sentence_without_a_python312_kernel(home):
    from deepe_widgets import methods, simpletuner

    methods.ensure_builtins()
    if simpletuner.find_kernel() is not None:
        pytest.skip("this machine has a Python >= 3.12 kernel with simpletuner")
    assert "SimpleTuner" not in {m.name for m in methods.list_methods()}
    done = deepe("train", "--method", "SimpleTuner", "--base-model", "x", "--dataset", "y", check=False)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "SimpleTuner needs a Jupyter kernel with Python 3.12 or newer and simpletuner installed" in line


def test_a_resumed_training_continues_the_same_curve(tiny_sd_dir, tmp_path):
    """What a worker's hand-back relies on: from checkpoint-2 the loop sees the same batches and noise,
    so steps 3 and 4 log the losses an uninterrupted run logged."""
    import torch
    from diffusers import DiffusionPipeline

    from deepe_widgets.image_data import write_demo_images
    from deepe_widgets.runtime import newest_complete_checkpoint
    from deepe_widgets.runtime.image_generation import (
        DiffusionLoRATrainer,
        DiffusionTrainingArguments,
        add_unet_lora,
        read_image_rows,
    )

    rows = read_image_rows(str(write_demo_images(tmp_path / "data") / "metadata.jsonl"), max_samples=6)

    def run(output: Path, resume: str | None = None) -> list[float]:
        torch.manual_seed(1)
        pipe = DiffusionPipeline.from_pretrained(tiny_sd_dir)
        add_unet_lora(pipe, 4, 4)
        trainer = DiffusionLoRATrainer(pipe, rows, DiffusionTrainingArguments(
            output_dir=str(output), max_steps=4, learning_rate=1e-2, resolution=32, save_steps=2,
            prediction_type="v_prediction", per_device_train_batch_size=2))
        return [e["loss"] for e in trainer.train(resume_from_checkpoint=resume).log_history]

    whole = run(tmp_path / "whole")
    assert len(whole) == 4 and all(math.isfinite(v) for v in whole)
    checkpoint = newest_complete_checkpoint(tmp_path / "whole")
    assert checkpoint.endswith("checkpoint-4")
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "whole" / "checkpoint-2"))
    assert resumed == pytest.approx(whole, rel=1e-5)  # steps 1-2 from the checkpoint's history, 3-4 trained again


def test_simpletuner_is_registered_where_a_kernel_reports_python312_and_simpletuner(home, tmp_path, monkeypatch):
    """The probe, not a guess: a kernelspec whose interpreter answers the probe with True is taken, and
    the method is registered as a built-in running in that kernel. (The interpreter here is a stand-in
    script: CI has no Python 3.12 kernel with SimpleTuner, a 7.7 GB environment.)"""
    from deepe_widgets import methods, simpletuner

    interpreter = tmp_path / "python3.12"
    interpreter.write_text("#!/bin/sh\necho True\n")
    interpreter.chmod(0o755)
    spec = tmp_path / "jupyter" / "kernels" / "st312"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [str(interpreter), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "SimpleTuner (3.12)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    assert simpletuner.find_kernel() == "st312"
    assert simpletuner.ensure_registered()
    method = methods.get_method("SimpleTuner")
    assert method.builtin and method.training_type == "image-generation"
    assert method.stages["training"]["kernel"] == "st312"
    simpletuner.check_available("SimpleTuner")  # no refusal now


def test_simpletuner_runs_its_own_entry_point_and_is_judged_by_what_it_wrote(workspace, tmp_path):
    """Where a real Python >= 3.12 kernel with simpletuner is installed (not in CI: see the README):
    the SimpleTuner method trains a tiny SDXL pipeline through `deepe train --wait`. With an accelerator
    it writes the LoRA and the job succeeds; without one SimpleTuner 4.x fails (it pins memory
    unconditionally) and the job fails with SimpleTuner's own first error, not a false success."""
    import subprocess

    from jupyter_client.kernelspec import KernelSpecManager

    from deepe_widgets import models, simpletuner
    from deepe_widgets.testing import make_tiny_sdxl_pipeline

    kernel = simpletuner.find_kernel()
    if kernel is None:
        pytest.skip("no Python >= 3.12 kernel with simpletuner here")
    assert simpletuner.ensure_registered()
    models.add_model("tiny-sdxl", make_tiny_sdxl_pipeline(tmp_path / "tiny-sdxl"))
    python = KernelSpecManager().get_kernel_spec(kernel).argv[0]
    accelerated = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available() or "
                                  "torch.backends.mps.is_available())"], capture_output=True, text=True,
                                 timeout=120).stdout.strip() == "True"
    done = deepe("train", "--method", "SimpleTuner", "--base-model", "tiny-sdxl", "--dataset", "demo-sd",
                 "--param", "max_steps=4", "--param", "resolution=32", "--param", "save_steps=2",
                 "--param", "validation_steps=2", "--wait", check=False, timeout=900)
    [job] = jobs.list_jobs()
    record = Path(job.run_dir, "training.ipynb")
    assert record.is_file()
    settings = json.loads(Path(job.run_dir, "simpletuner", "config", "config.json").read_text())
    assert settings["model_family"] == "sdxl" and settings["max_train_steps"] == 4
    if accelerated:
        assert done.returncode == 0 and job.status == "succeeded", done.stdout + done.stderr
        assert Path(job.run_dir, "output", "pytorch_lora_weights.safetensors").is_file()
        assert metrics.metrics_for(job.id, name="loss")
    else:
        assert done.returncode != 0 and job.status == "failed"
        assert "SimpleTuner exited" in job.error and "without writing pytorch_lora_weights.safetensors" in job.error
        assert "NVIDIA driver" in job.error  # SimpleTuner's own first error, named
