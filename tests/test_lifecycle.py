"""Customized → Complete models: model card, saving (merge), inference, names, deletion (one training,
shared by the session: `trained_tiny`)."""

import json
import re
from pathlib import Path

import pytest

from helpers import deepe, deepe_json

pytestmark = pytest.mark.training


def test_a_training_makes_a_customized_model_with_its_card(trained_tiny):
    trained, customized = trained_tiny.trained, trained_tiny.customized
    assert re.fullmatch(r"tiny_cards_\d{8}_" + trained["uuid"][:4], customized["name"])
    card = json.loads((Path(customized["path"]) / "model_card.json").read_text())
    assert card["base_model"] == "tiny" and card["method"] == "SFT-Demo" and card["dataset"] == "demo-sft"
    assert card["parameters"]["MAX_STEPS"] == 6 and card["metrics"]["loss"]["best"] <= card["metrics"]["loss"]["final"]
    assert card["record"].endswith("training.ipynb")
    assert "| LEARNING_RATE | 0.005 |" in (Path(customized["path"]) / "README.md").read_text()
    listed = deepe_json("models", "list", "--kind", "customized", "--json", env=trained_tiny.env())
    assert [m["name"] for m in listed] == [customized["name"]]


def test_save_merges_the_adapter_into_a_complete_model(trained_tiny, tiny_model_dir):
    saved, customized, complete = trained_tiny.saved, trained_tiny.customized, trained_tiny.complete
    assert complete["kind"] == "complete" and complete["name"] == f"{customized['name']}_s_{saved['uuid'][:4]}"
    assert (Path(complete["path"]) / "model.safetensors").is_file()
    assert any(r.endswith("saving.ipynb") for r in saved["records"])

    # The merged model gives the logits of base + adapter.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(complete["path"])
    ids = tokenizer("CAPITAL CARD | country: France", return_tensors="pt")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), customized["path"])
    merged = AutoModelForCausalLM.from_pretrained(complete["path"])
    with torch.no_grad():
        expected, got = adapted(**ids).logits, merged(**ids).logits
    assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()
    assert not torch.allclose(AutoModelForCausalLM.from_pretrained(tiny_model_dir)(**ids).logits, got, atol=1e-4)


def test_both_models_answer_and_are_deleted_child_first(trained_workspace, default_model, trained_tiny):
    from deepe_widgets import models

    customized, complete = trained_tiny.customized, trained_tiny.complete
    for name in (customized["name"], complete["name"]):
        answer = deepe_json("infer", name, "--prompt", "What is the capital of Peru?", "--prompt", "Hello",
                            "--param", "max_new_tokens=8", "--json")
        assert answer["error"] is None and len(answer["responses"]) == 2
        assert all(isinstance(r["response"], str) for r in answer["responses"])
        assert Path(answer["record"]).is_file()
    assert "> Hello" in deepe("infer", complete["name"], "--prompt", "Hello", "--param", "max_new_tokens=4").stdout

    complete_copy = Path(models.get_model(complete["name"]).path)
    refused = deepe("models", "delete", customized["name"], check=False)
    assert refused.returncode == 2 and complete["name"] in refused.stderr
    deepe("models", "delete", complete["name"])
    assert not complete_copy.exists()
    deepe("models", "delete", customized["name"])
    assert deepe_json("models", "list", "--kind", "customized", "--json") == []
    gone = deepe("infer", customized["name"], "--prompt", "x", check=False)
    assert gone.returncode == 2 and "no model named" in gone.stderr


def test_save_refuses_what_is_not_an_adapter(workspace):
    done = deepe("save", "tiny", check=False)
    assert done.returncode == 2 and "only a customized model" in done.stderr


def test_save_in_float32_says_what_bfloat16_saves(workspace, tiny_model_dir, tmp_path, capsys):
    import shutil

    from deepe_widgets import cli, models
    from deepe_widgets.store import ModelKind

    big = tmp_path / "big-base"
    shutil.copytree(tiny_model_dir, big)
    with open(big / "model-00002.safetensors", "wb") as f:  # sparse: 300 MiB apparent, no disk used
        f.truncate(300 * 2**20)
    models.add_model("big-base", big)
    models.add_model("big-adapter", tmp_path, kind=ModelKind.CUSTOMIZED, parent="big-base")
    cli.jobs._suggest_half_precision("big-adapter")
    note = capsys.readouterr().err
    assert "about 300 MB in float32" in note and "--dtype bfloat16" in note
    models.add_model("small-adapter", tmp_path, kind=ModelKind.CUSTOMIZED, parent="tiny")
    cli.jobs._suggest_half_precision("small-adapter")
    assert capsys.readouterr().err == ""  # nothing worth saying for a small model
