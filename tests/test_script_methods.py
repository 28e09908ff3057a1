"""Bring your own code, as a user does it: `deepe methods add` a script that trains and saves by
itself, `deepe train --wait`, read the job. The scripts under tests/scripts/ are shaped like TRL's
scripts/sft.py, peft's olora example (its own flags) and a notebook that calls train() itself."""

import json
from pathlib import Path

import nbformat
import pytest

from helpers import OLORA_TEMPLATE, SCRIPTS, alpaca_rows, chat_rows, deepe, deepe_json, write_jsonl

pytestmark = pytest.mark.training
FAST = ["--param", "max_steps=5", "--param", "batch_size=2", "--param", "max_seq_length=64",
        "--param", "learning_rate=5e-3", "--param", "save_steps=0"]


def _add(name: str, file: Path, *extra: str) -> str:
    return deepe("methods", "add", "--name", name, "--stage", f"training={file}@python3", *extra).stdout


def _train(method: str, dataset: Path, *params: str, check: bool = True) -> dict:
    done = deepe("train", "--method", method, "--base-model", "tiny", "--dataset", str(dataset), *params,
                 "--wait", "--json", check=False, timeout=600)
    summary = json.loads(done.stdout)
    if check:
        assert summary["status"] == "succeeded", (summary["error"], done.stderr[-2000:])
    return summary


def _record(summary: dict) -> nbformat.NotebookNode:
    [record] = [r for r in summary["records"] if r.endswith("training.ipynb")]
    return nbformat.read(record, as_version=4)


def test_a_trl_sft_script_runs_unchanged_as_a_method(workspace, tmp_path):
    assert "script mode" in _add("trl-sft", SCRIPTS / "sft_trl.py")
    summary = _train("trl-sft", write_jsonl(tmp_path / "chat.jsonl", chat_rows()), *FAST)
    losses = [m for m in deepe_json("jobs", "metrics", str(summary["id"]), "--name", "loss", "--json")]
    assert len(losses) >= 3  # streamed by the callback the platform put into the script's trainer
    [model] = summary["artifacts"]
    assert model["kind"] == "customized" and Path(model["path"], "adapter_model.safetensors").is_file()
    argv = "\n".join(o.get("text", "") for c in _record(summary).cells for o in c.get("outputs", []))
    assert "--model_name_or_path" in argv and "--max_steps 5" in argv  # the record shows the argv
    assert summary["warnings"] == []
    shown = deepe("methods", "show", "trl-sft").stdout
    assert "script mode" in shown and "[num_train_epochs]" in shown  # Hugging Face names work too


def test_a_script_with_its_own_flags_runs_from_an_args_template(workspace, tmp_path):
    _add("olora", SCRIPTS / "olora_argparse.py", "--args", OLORA_TEMPLATE + " --logging_steps 1")
    summary = _train("olora", write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows()), *FAST,
                     "--param", "num_train_epochs=1")  # a Hugging Face name for EPOCHS
    assert summary["params"]["EPOCHS"] == 1
    assert len(deepe_json("jobs", "metrics", str(summary["id"]), "--name", "loss", "--json")) >= 3
    [model] = summary["artifacts"]
    assert Path(model["path"], "tokenizer.json").is_file()  # the base model's, copied in


def test_the_readme_py_route_with_a_parameters_cell_runs(workspace, tmp_path):
    # a plain .py with `# %% tags=["parameters"]` and no jupytext header: it needs the kernelspec
    template = nbformat.read(Path(__file__).resolve().parents[1] / "method_templates" / "custom_template" /
                             "training.ipynb", as_version=4)
    cells = [c for c in template.cells if c.cell_type == "code" and "deepe-train" not in c.metadata.get("tags", [])]
    text = ""
    for cell in cells:
        tags = cell.metadata.get("tags", [])
        text += '# %% tags=["parameters"]\n' if "parameters" in tags else "# %%\n"
        text += cell.source + "\n\n"
    script = tmp_path / "my_training.py"
    script.write_text(text)
    assert "script mode" not in _add("percent", script)
    summary = _train("percent", Path(workspace / "datasets" / "demo-sft.jsonl"), *FAST)
    assert summary["artifacts"]


def test_a_script_that_raises_fails_the_job_with_its_exception(workspace, tmp_path):
    _add("broken", SCRIPTS / "broken.py")
    summary = _train("broken", write_jsonl(tmp_path / "chat.jsonl", chat_rows(4)), *FAST, check=False)
    assert summary["status"] == "failed"
    assert summary["error"].startswith("ValueError: my script is broken")
    assert "broken.py, line" in summary["error"]  # where in the user's own file
    assert _record(summary).metadata["deepe"]["status"] == "failed"


def test_a_script_that_makes_no_model_fails_with_one_clear_sentence(workspace, tmp_path):
    _add("nothing", SCRIPTS / "no_trainer.py")
    summary = _train("nothing", write_jsonl(tmp_path / "chat.jsonl", chat_rows(4)), *FAST, check=False)
    assert summary["status"] == "failed" and summary["artifacts"] == []
    assert "the script produced no model in OUTPUT_DIR and created no Trainer" in summary["error"]


def test_bad_scripts_and_templates_are_refused_at_registration(workspace, tmp_path):
    done = deepe("methods", "add", "--name", "bad", "--stage", f"training={SCRIPTS / 'olora_argparse.py'}@python3",
                 "--args", "--data {DATA_FILE}", check=False)
    assert done.returncode == 2 and "DATA_FILE" in done.stderr and "Traceback" not in done.stderr
    online = tmp_path / "online.py"
    online.write_text("from huggingface_hub import notebook_login\nnotebook_login()\n")
    done = deepe("methods", "add", "--name", "online", "--stage", f"training={online}@python3", check=False)
    assert done.returncode == 2 and "line 2" in done.stderr and "notebook_login" in done.stderr
    assert deepe_json("methods", "list", "--json") and "bad" not in deepe("methods", "list").stdout
