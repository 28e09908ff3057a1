"""The CLI contract: one `error: …` line and exit 2 for bad input, JSON on read verbs."""

import pytest

from conftest import deepe, deepe_json


@pytest.mark.parametrize("args,message", [
    (["train", "--method", "Nope", "--base-model", "tiny", "--dataset", "demo-sft"], "no method named 'Nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "nope", "--dataset", "demo-sft"], "no model named 'nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "nope"], "no dataset named 'nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft", "--param", "max_steps=x"],
     "MAX_STEPS must be a whole number"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-gsm", "--param",
      "prompt_input_column=nope", "--param", "prompt_output_column=answer"], "has no column 'nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft", "--name", "../x"],
     "may only use letters"),
    (["methods", "delete", "SFT-Demo"], "built in and cannot be deleted"),
    (["methods", "add", "--name", "x", "--stage", "training=nonexistent.ipynb@python3"], "does not exist"),
    (["methods", "add", "--name", "x", "--lifecycle", "complete", "--stage",
      "training=method_templates/custom_template/training.ipynb@python3"], "needs its saving code file"),
    (["models", "add", "m", "/tmp"], "is not a model folder"),
    (["datasets", "add", "d", "nonexistent.jsonl"], "does not exist"),
    (["datasets", "add", "d", "/etc/passwd"], "outside the allowed folders"),
    (["jobs", "show", "999"], "no job with id 999"),
    (["jobs", "show", "abc"], "job id must be a number"),
])
def test_bad_input_exits_2_with_one_line(workspace, args, message):
    done = deepe(*args, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_read_verbs_speak_json(workspace):
    methods = deepe_json("methods", "list", "--json")
    assert {m["name"] for m in methods} >= {"SFT-Demo", "Custom01", "Custom02"}
    assert [d["name"] for d in deepe_json("datasets", "list", "--json")] == [
        "demo-dpo", "demo-embed", "demo-gsm", "demo-sd", "demo-sft", "demo-vl"]
    preview = deepe_json("datasets", "preview", "demo-sft", "--json", "--rows", "2")
    assert preview["columns"] == ["instruction", "input", "output"] and len(preview["rows"]) == 2
    models = deepe_json("models", "list", "--json", "--kind", "base")
    assert "tiny" in {m["name"] for m in models}
    assert deepe_json("jobs", "list", "--json") == []
    text = deepe("methods", "show", "SFT-Demo").stdout
    assert "MAX_STEPS = -1" in text and "kernel python3" in text
