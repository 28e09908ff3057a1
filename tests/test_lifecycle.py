"""Customized → Complete models: model card, saving (merge), inference, names, deletion."""

import json
import re
from pathlib import Path

import pytest

from helpers import FAST_PARAMS, deepe, deepe_json

pytestmark = pytest.mark.training


def test_train_save_infer_and_delete(workspace, tiny_model_dir):
    trained = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
                         "--name", "cards", *FAST_PARAMS, "--wait", "--json")
    assert trained["status"] == "succeeded", trained["error"]
    [customized] = trained["artifacts"]
    assert re.fullmatch(r"tiny_cards_\d{8}_" + trained["uuid"][:4], customized["name"])
    card = json.loads((Path(customized["path"]) / "model_card.json").read_text())
    assert card["base_model"] == "tiny" and card["method"] == "SFT-Demo" and card["dataset"] == "demo-sft"
    assert card["parameters"]["MAX_STEPS"] == 6 and card["metrics"]["loss"]["best"] <= card["metrics"]["loss"]["final"]
    assert card["record"].endswith("training.ipynb")
    assert "| LEARNING_RATE | 0.005 |" in (Path(customized["path"]) / "README.md").read_text()
    listed = deepe_json("models", "list", "--kind", "customized", "--json")
    assert [m["name"] for m in listed] == [customized["name"]]

    saved = deepe_json("save", customized["name"], "--wait", "--json")
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
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

    for name in (customized["name"], complete["name"]):
        answer = deepe_json("infer", name, "--prompt", "What is the capital of Peru?", "--prompt", "Hello",
                            "--param", "max_new_tokens=8", "--json")
        assert answer["error"] is None and len(answer["responses"]) == 2
        assert all(isinstance(r["response"], str) for r in answer["responses"])
        assert Path(answer["record"]).is_file()
    assert "> Hello" in deepe("infer", complete["name"], "--prompt", "Hello", "--param", "max_new_tokens=4").stdout

    refused = deepe("models", "delete", customized["name"], check=False)
    assert refused.returncode == 2 and complete["name"] in refused.stderr
    deepe("models", "delete", complete["name"])
    assert not Path(complete["path"]).exists()
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
