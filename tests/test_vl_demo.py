"""VL-Demo: a tiny LLaVA (CLIP vision tower + small Llama, processor built offline without
torchvision) trained through `deepe train --wait` on the shapes-and-colours demo, its held-out exact
match measured before training and rising; saved, and asked about an image with `deepe infer`;
bad images refused at registration naming the row, a text-only model refused at submit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepe_widgets import jobs, metrics, vision_language
from deepe_widgets.errors import DeepeError

from helpers import deepe, deepe_json


@pytest.fixture(scope="module")
def tiny_vl_dir(tmp_path_factory) -> Path:
    from deepe_widgets.testing import make_tiny_vl_model

    return make_tiny_vl_model(tmp_path_factory.mktemp("models") / "tiny-vl")


def test_demo_images_show_what_their_answers_say(tmp_path):
    from PIL import Image

    path = vision_language.write_demo_vl(tmp_path, variants=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2 * 3 * 4 * 2 and {r["split"] for r in rows} == {"train", "test"}
    for row in rows:
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        with Image.open(tmp_path / row["image"]) as image:
            colours = image.convert("RGB").getcolors()  # (count, colour): background, shape, edges
        if question == vision_language.QUESTIONS["colour"]:  # the shape is drawn in the answer's colour
            assert vision_language.COLOURS[answer] in {c for _n, c in colours}, row
            others = set(vision_language.COLOURS.values()) - {vision_language.COLOURS[answer]}
            assert not others & {c for _n, c in colours}, row
        else:
            assert answer in vision_language.SHAPES and answer in row["image"]


def test_the_kernel_trains_on_the_picture_column_the_workbench_checks():
    """The kernel's picture column (runtime.vision_language) is the one registration checks (images): a dataset
    whose images were checked is never one the kernel reads another column of."""
    from deepe_widgets import images
    from deepe_widgets.runtime import vision_language as vision

    assert vision.IMAGE_COLUMNS == images.IMAGE_COLUMNS
    for columns in (["images", "question", "answer"], ["image", "images", "messages"], ["picture", "messages"]):
        assert images.image_column(columns) == next((c for c in vision.IMAGE_COLUMNS if c in columns), None)


def test_missing_or_broken_image_is_refused_at_registration_naming_the_row(home, tmp_path):
    from deepe_widgets.vision_language import draw_shape

    (tmp_path / "img").mkdir()
    draw_shape("circle", "red").save(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "notes.png").write_text("not a picture")
    good = {"image": "img/ok.png", "messages": [{"role": "user", "content": "Colour?"},
                                                {"role": "assistant", "content": "red"}]}
    for bad, reason in (("img/gone.png", "does not exist"), ("img/notes.png", "is not a readable image")):
        data = tmp_path / "vl.jsonl"
        data.write_text(json.dumps(good) + "\n" + json.dumps({**good, "image": bad}) + "\n", encoding="utf-8")
        done = deepe("datasets", "add", "shapes", str(data), check=False)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "row 2" in errors[0] and bad in errors[0] and reason in errors[0], done.stderr
    data.write_text(json.dumps(good) + "\n", encoding="utf-8")
    assert "registered dataset shapes: 1 rows" in deepe("datasets", "add", "shapes", str(data)).stdout


def test_text_only_model_or_data_is_refused_at_submit(workspace, tiny_vl_dir):
    from deepe_widgets.models import add_model

    with pytest.raises(DeepeError) as caught:
        jobs.submit_training("VL-Demo", "tiny", "demo-vl")  # `tiny` is a text-only Llama
    assert caught.value.field == "base_model" and "VL-Demo needs an image + text model" in caught.value.message
    assert "tiny is a text-only chat model" in caught.value.message
    add_model("tiny-vl", tiny_vl_dir)
    with pytest.raises(DeepeError, match="has no image column"):
        jobs.submit_training("VL-Demo", "tiny-vl", "demo-sft")
    assert jobs.list_jobs() == []
    done = deepe("train", "--method", "VL-Demo", "--base-model", "tiny", "--dataset", "demo-vl", check=False)
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "text-only" in done.stderr
    assert jobs.list_jobs() == []


@pytest.mark.training
def test_vl_demo_trains_saves_and_answers_about_an_image(workspace, tiny_vl_dir):
    deepe("models", "add", "tiny-vl", str(tiny_vl_dir))
    fast = {"max_steps": "30", "learning_rate": "2e-2", "lora_rank": "16", "batch_size": "8", "eval_steps": "15",
            "save_steps": "0"}
    trained = deepe_json("train", "--method", "VL-Demo", "--base-model", "tiny-vl", "--dataset", "demo-vl",
                         *[arg for key, value in fast.items() for arg in ("--param", f"{key}={value}")],
                         "--wait", "--json", timeout=500)
    assert trained["status"] == "succeeded", trained["error"]
    series = {}
    for row in metrics.metrics_for(trained["id"]):
        series.setdefault(row.name, {})[row.step] = row.value
    exact = series["eval_exact_match"]
    assert sorted(exact) == [0, 15, 30] and exact[0] == 0.0  # before training it answers nothing right
    assert exact[30] >= exact[0] + 0.15, exact  # held-out questions about unseen images
    loss = series["loss"]
    assert sorted(loss) == list(range(1, 31))  # measuring exact match never swallows a step's loss
    assert loss[30] < loss[1] - 1.0, loss  # on the answers' tokens only
    [customized] = trained["artifacts"]
    assert (Path(customized["path"]) / "adapter_config.json").is_file()
    image = workspace / "datasets" / "demo-vl" / "images" / "circle-red-4.png"

    saved = deepe_json("save", customized["name"], "--wait", "--json", timeout=300)
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
    answer = deepe_json("infer", complete["name"], "--image", str(image), "--prompt", "What colour is the shape?",
                        "--param", "max_new_tokens=4", "--json", timeout=300)
    assert answer["error"] is None, answer["error"]
    assert answer["responses"][0]["image"] == str(image) and isinstance(answer["responses"][0]["response"], str)
    # The evaluation stage asks the held-out questions about their images again, scored like chat answers.
    from deepe_widgets import evaluations

    evaluated = deepe_json("evaluate", customized["name"], "--param", "max_new_tokens=4", "--wait", "--json",
                           timeout=300)
    assert evaluated["status"] == "succeeded", evaluated["error"]
    result = evaluations.latest(customized["name"])
    assert 0 <= result["metrics"]["eval_exact_match"] <= 1 and 0 <= result["metrics"]["eval_rougeL"] <= 1
    assert len(evaluations.read_predictions(result)) == result["rows"] > 0
    done = deepe("infer", customized["name"], "--prompt", "What colour is the shape?", check=False)
    assert done.returncode == 2 and "--image FILE" in done.stderr and "Traceback" not in done.stderr


def test_the_train_form_previews_an_image_per_row_and_names_each_types_columns(workspace):
    from deepe_widgets.ui import TrainingLauncher

    launcher = TrainingLauncher(start_worker=False)
    launcher.method.value = "VL-Demo"
    assert launcher.dataset.value == "demo-vl"  # the demo method brings its demo data
    assert launcher.preview.value.count("<img src='data:image/png;base64,") == 3  # one thumbnail per row
    assert launcher.input_column.options[0][0] == "(standard: messages, or question/answer beside image)"
    launcher.method.value = "Embedding-Demo"
    assert launcher.dataset.value == "demo-embed" and "zorbix" in launcher.preview.value
    assert launcher.input_column.options[0][0] == "(standard: anchor or query)"


def test_try_it_takes_an_image_for_a_vision_language_model_only(workspace, tiny_vl_dir):
    import datetime
    import io

    from deepe_widgets import models
    from deepe_widgets.ui.models_view import ModelCard
    from deepe_widgets.vision_language import draw_shape

    models.add_model("tiny-vl", tiny_vl_dir)
    text_card, vl_card = ModelCard(models.get_model("tiny")), ModelCard(models.get_model("tiny-vl"))
    assert text_card.image.layout.display == "none" and vl_card.image.layout.display is None
    vl_card.prompt.value = "What colour is the shape?"
    assert vl_card.try_it() is None and "Choose an image first" in vl_card.try_status.value
    picture = io.BytesIO()
    draw_shape("square", "blue").save(picture, format="PNG")
    vl_card.image.value = ({"name": "../blue.png", "type": "image/png", "size": len(picture.getvalue()),
                            "content": memoryview(picture.getvalue()),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    saved = Path(vl_card._uploaded_image())
    assert saved.parent == workspace / "inference" / "uploads" and saved.name.endswith("-blue.png")
    assert saved.read_bytes() == picture.getvalue()


def _train_save_infer(workspace, name: str, model_dir) -> dict:
    """A tiny VL model through the real path: `deepe train --wait` (loss falling over 4 steps), `deepe save`,
    `deepe infer --image`; returns the training job."""
    deepe("models", "add", name, str(model_dir))
    fast = {"max_steps": "4", "learning_rate": "2e-2", "lora_rank": "8", "batch_size": "4", "eval_steps": "4",
            "save_steps": "0"}
    trained = deepe_json("train", "--method", "VL-Demo", "--base-model", name, "--dataset", "demo-vl",
                         *[arg for key, value in fast.items() for arg in ("--param", f"{key}={value}")],
                         "--wait", "--json", timeout=500)
    assert trained["status"] == "succeeded", trained["error"]
    loss = {row.step: row.value for row in metrics.metrics_for(trained["id"]) if row.name == "loss"}
    assert sorted(loss) == [1, 2, 3, 4] and loss[4] < loss[1], loss
    [customized] = trained["artifacts"]
    saved = deepe_json("save", customized["name"], "--wait", "--json", timeout=300)
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
    image = workspace / "datasets" / "demo-vl" / "images" / "circle-red-4.png"
    answer = deepe_json("infer", complete["name"], "--image", str(image), "--prompt", "What colour is the shape?",
                        "--param", "max_new_tokens=4", "--json", timeout=300)
    assert answer["error"] is None, answer["error"]
    assert answer["responses"][0]["image"] == str(image) and isinstance(answer["responses"][0]["response"], str)
    return trained


@pytest.mark.training
def test_vl_demo_on_a_tiny_idefics3_smolvlm_without_torchvision(workspace, tmp_path):
    """SmolVLM's architecture (Idefics3) through the real path: train → save → infer --image."""
    from deepe_widgets.testing import make_tiny_idefics3_model

    _train_save_infer(workspace, "tiny-idefics3", make_tiny_idefics3_model(tmp_path / "tiny-idefics3"))


@pytest.mark.training
@pytest.mark.parametrize("version", ["2", "2.5"])
def test_vl_demo_on_a_tiny_qwen_vl_whose_processor_wants_torchvision(workspace, tmp_path, version):
    """Qwen2-VL / Qwen2.5-VL: transformers' processor always builds a video processor that needs
    torchvision; the workbench loads it for images only, and the whole path runs: train → save → infer."""
    from deepe_widgets.testing import make_tiny_qwen2vl_model

    name = f"tiny-qwen{version}-vl"
    trained = _train_save_infer(workspace, name, make_tiny_qwen2vl_model(tmp_path / name, version=version))
    log = Path(trained["run_dir"], "training.log").read_text()
    assert "video processor needs torchvision: loading it for images only" in log
