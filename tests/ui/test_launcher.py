"""Start a New Train asks the training-type registry as its fields change (plain Python, no browser):
each built-in method brings a base model of the kind it trains and its demo dataset, and a base model
or dataset it cannot train on is said under its field, in words, with Run the Train off."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import ipywidgets as w
import pytest

from deepe_widgets import datasets, jobs, methods, models, stagefiles, trainings
from deepe_widgets.errors import DeepeError
from deepe_widgets.ui import TrainingLauncher
from deepe_widgets.ui.launcher import COLUMN_FIELDS

from helpers import deepe


@pytest.fixture(scope="module")
def tiny_kinds(tmp_path_factory) -> dict[str, Path]:
    """A tiny model of each kind but chat (the workspace's `tiny` is the chat one), built once."""
    from deepe_widgets.testing import make_tiny_embedding_model, make_tiny_sd_pipeline, make_tiny_vl_model

    root = tmp_path_factory.mktemp("kinds")
    return {"tiny-embed": make_tiny_embedding_model(root / "tiny-embed"),
            "tiny-vl": make_tiny_vl_model(root / "tiny-vl"),
            "tiny-sd": make_tiny_sd_pipeline(root / "tiny-sd")}


@pytest.fixture
def kinds_workspace(workspace, tiny_kinds):
    """`workspace` with a base model of every kind registered."""
    for name, folder in tiny_kinds.items():
        models.add_model(name, folder)
    return workspace


def text(box: w.HTML) -> str:
    return html.unescape(box.value)


# method -> (the base model it brings, its demo dataset, a base model it cannot train and what the message
# says of it, a dataset it cannot train on and what the message says of it)
CASES = {
    "SFT-Demo": (models.DEFAULT_BASE_MODEL, "demo-sft", "tiny-embed",
                 "SFT-Demo needs a chat model (a text generator such as SmolLM2); tiny-embed is an embedding model",
                 "demo-embed", "has no prompt and response columns"),
    "GRPO-Demo": (models.DEFAULT_BASE_MODEL, "demo-gsm", "tiny-sd",
                  "GRPO-Demo needs a chat model (a text generator such as SmolLM2); tiny-sd is a text-to-image "
                  "pipeline (Stable Diffusion)", "demo-dpo", "has no prompt and response columns"),
    "DPO-Demo": (models.DEFAULT_BASE_MODEL, "demo-dpo", "tiny-vl",
                 "DPO-Demo needs a chat model (a text generator such as SmolLM2); tiny-vl is an image + text model",
                 "demo-sft", "is not a preference dataset: it has no chosen column"),
    "Embedding-Demo": ("tiny-embed", "demo-embed", "tiny",
                       "Embedding-Demo needs an embedding model (a sentence-transformers encoder such as "
                       "all-MiniLM-L6-v2); tiny is a text-only chat model. Choose tiny-embed instead",
                       "demo-dpo", "needs two text columns"),
    "VL-Demo": ("tiny-vl", "demo-vl", "tiny",
                "VL-Demo needs an image + text model (vision-language, such as SmolVLM or Qwen2.5-VL); tiny is a "
                "text-only chat model. Choose tiny-vl instead", "demo-sft", "has no image column"),
    "SD-Demo": ("tiny-sd", "demo-sd", "tiny",
                "SD-Demo needs a text-to-image pipeline (Stable Diffusion, a diffusers folder); tiny is a "
                "text-only chat model. Choose tiny-sd instead", "demo-sft", "is not an image dataset"),
    "MLX-Demo": (models.DEFAULT_BASE_MODEL, "demo-sft", "tiny-sd",
                 "MLX-Demo needs a chat model (a text generator such as SmolLM2); tiny-sd is a text-to-image "
                 "pipeline", "demo-embed", "has no prompt and response columns"),
}


@pytest.mark.parametrize("method", list(CASES))
def test_a_method_brings_its_kind_of_model_and_its_data_and_refuses_others_by_their_field(kinds_workspace,
                                                                                          method):
    model, demo, wrong_model, model_message, wrong_dataset, dataset_message = CASES[method]
    launcher = TrainingLauncher(start_worker=False)
    # from another kind's method, so that the choice has to move
    launcher.method.value = "SD-Demo" if trainings.for_method(method).training_type != "image-generation" \
        else "SFT-Demo"
    launcher.method.value = method
    assert (launcher.base_model.value, launcher.dataset.value) == (model, demo)
    assert launcher.problems == {} and not launcher.run.disabled, launcher.problems
    if model != models.DEFAULT_BASE_MODEL:  # (the default is imported on first use: chat)
        assert trainings.for_model(models.get_model(model)).training_type == trainings.for_method(method).training_type

    launcher.base_model.value = wrong_model  # a model it cannot train: said by the field, Run off
    assert model_message in text(launcher.choice_errors["base_model"])
    assert launcher.run.disabled and "Base Model" in launcher.summary.value
    launcher.base_model.value = model
    assert launcher.choice_errors["base_model"].value == "" and not launcher.run.disabled  # fixed: gone

    launcher.dataset.value = wrong_dataset  # data it cannot train on: said under Dataset, with the demo
    shown = text(launcher.choice_errors["dataset"])
    assert dataset_message in shown and f"or choose {demo}, the demo dataset made for {method}" in shown
    assert launcher.run.disabled and "Dataset" in launcher.summary.value
    for internal in ("PromptInputColumn", "PromptOutputColumn", "model_index.json", "config.json"):
        assert internal not in shown + text(launcher.choice_errors["base_model"])
    launcher.run.click()  # a click that got through anyway: nothing queued
    assert jobs.list_jobs() == []
    launcher.dataset.value = demo
    assert launcher.problems == {} and not launcher.run.disabled
    launcher.close()


def test_a_model_or_dataset_the_user_chose_stays_and_says_what_is_wrong(kinds_workspace):
    launcher = TrainingLauncher(start_worker=False)
    launcher.base_model.value = "tiny"  # chosen by hand
    launcher.method.value = "SD-Demo"
    assert launcher.base_model.value == "tiny" and launcher.dataset.value == "demo-sd"
    assert "tiny is a text-only chat model. Choose tiny-sd instead" in text(launcher.choice_errors["base_model"])
    assert launcher.run.disabled
    launcher.method.value = "DPO-Demo"  # a chat method again: the message goes with the problem
    assert launcher.base_model.value == "tiny" and launcher.choice_errors["base_model"].value == ""
    assert launcher.dataset.value == "demo-dpo" and not launcher.run.disabled
    launcher.close()


def test_a_method_whose_kind_of_model_is_not_registered_says_so(workspace):
    launcher = TrainingLauncher(start_worker=False)
    datasets.delete_dataset("demo-vl")  # (a new form registers the demo datasets again)
    launcher.reload()  # what coming back to the tab does
    launcher.method.value = "VL-Demo"
    assert launcher.base_model.value == models.DEFAULT_BASE_MODEL  # nothing of its kind to move to
    assert "None is registered yet" in text(launcher.choice_errors["base_model"]) and launcher.run.disabled
    assert "VL-Demo's demo dataset demo-vl is not registered here" in text(launcher.choice_errors["dataset"])
    launcher.close()


def test_only_the_fields_a_method_reads_are_shown_and_its_own_defaults_never_warn(kinds_workspace):
    launcher = TrainingLauncher(start_worker=False)
    launcher.method.value = "Embedding-Demo"  # it trains the whole model, with no system prompt
    assert not {"LORA_RANK", "LORA_ALPHA", "LORA_DROPOUT", "SYSTEM_PROMPT"} & set(launcher.fields)
    assert launcher.fields["MAX_SEQ_LENGTH"].value == "128"
    assert all(box.value == "" for box in launcher.field_errors.values())  # 128 is its own: no warning
    assert launcher.columns["NegativeColumn"].layout.display != "none"
    assert launcher.columns["PromptRejectedColumn"].layout.display == "none"
    assert (launcher.input_column.description, launcher.output_column.description) == \
        ("Query column", "Passage column")
    launcher.fields["MAX_SEQ_LENGTH"].value = "8192"  # past both the typical range and its default
    assert "outside the typical range 128–4096" in launcher.field_errors["MAX_SEQ_LENGTH"].value

    launcher.method.value = "SD-Demo"
    assert launcher.fields["BATCH_SIZE"].value == "1" and launcher.field_errors["BATCH_SIZE"].value == ""
    prompts = launcher.fields["VALIDATION_PROMPTS"]  # a list: one prompt a line, no Python brackets
    assert isinstance(prompts, w.Textarea) and prompts.value == "a zqx badge on a teal background"
    prompts.value = "a zqx badge on a teal background\n\na zqx mug\n"
    assert launcher.overrides()["VALIDATION_PROMPTS"] == ["a zqx badge on a teal background", "a zqx mug"]
    launcher.run.click()
    assert jobs.list_jobs()[0].params["VALIDATION_PROMPTS"] == ["a zqx badge on a teal background", "a zqx mug"]

    launcher.method.value = "DPO-Demo"  # the rejected answers: a chooser beside the prompt and chosen ones
    assert [launcher.columns[n].description for n in launcher.columns
            if launcher.columns[n].layout.display != "none"] == ["Prompt column", "Chosen column", "Rejected column"]
    assert "PromptRejectedColumn" not in launcher.fields
    assert [launcher.columns[n].options[0][0] for n in COLUMN_FIELDS[:3]] == \
        ["(standard: prompt)", "(standard: chosen)", "(standard: rejected)"]  # each its own, not the three
    launcher.columns["PromptRejectedColumn"].value = "chosen"  # named by hand: said under that chooser
    assert "same chosen and rejected response" in text(launcher.choice_errors["dataset"])
    launcher.columns["PromptRejectedColumn"].value = "rejected"
    assert launcher.problems == {}
    launcher.method.value = "SFT-Demo"
    assert launcher.columns["PromptRejectedColumn"].layout.display == "none"
    launcher.method.value = "VL-Demo"  # a chat in the preview reads as one, not as a Python list
    preview = html.unescape(launcher.preview.value)
    assert "user: What" in preview and "→ assistant:" in preview and "{'role'" not in preview
    launcher.close()


def test_the_same_check_refuses_at_submit_for_the_cli_and_the_api(kinds_workspace, tmp_path):
    for method, model, says in (("SFT-Demo", "tiny-embed", "tiny-embed is an embedding model"),
                                ("SFT-Demo", "tiny-sd", "tiny-sd is a text-to-image pipeline"),
                                ("Embedding-Demo", "tiny",
                                 "tiny is a text-only chat model. Choose tiny-embed instead")):
        with pytest.raises(DeepeError) as caught:
            jobs.submit_training(method, model, trainings.demo_dataset(method))
        assert caught.value.field == "base_model" and says in caught.value.message, caught.value.message
    done = deepe("train", "--method", "SFT-Demo", "--base-model", "tiny-embed", "--dataset", "demo-sft", check=False)
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert "SFT-Demo needs a chat model" in done.stderr and "tiny-embed is an embedding model" in done.stderr
    assert jobs.list_jobs() == []
    # a user's chat method reads whatever model its own code loads: not refused for the model's kind
    shutil.copy(stagefiles.template_notebook_path(), tmp_path / "mine.ipynb")
    methods.register_method("mine", {"training": (tmp_path / "mine.ipynb", "python3")})
    assert jobs.submit_training("mine", "tiny-embed", "demo-sft").status == "queued"
