"""Real trainings of a tiny model through the CLI, the worker, papermill and a kernel."""

import shutil
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import stagefiles

from helpers import FAST_PARAMS, deepe, deepe_json

pytestmark = pytest.mark.training


def _check_trained(summary: dict, tiny_model_dir: Path, steps: int = 6) -> list[dict]:
    assert summary["status"] == "succeeded", summary["error"]
    metrics = deepe_json("jobs", "metrics", str(summary["id"]), "--all", "--json")
    keys = [(m["step"], m["name"]) for m in metrics]
    assert len(keys) == len(set(keys)), "one row per (step, name)"
    losses = [m["value"] for m in metrics if m["name"] == "loss"]
    assert [m["step"] for m in metrics if m["name"] == "loss"] == list(range(1, steps + 1))
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"
    # The adapter loads with peft on top of the base model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output = Path(summary["run_dir"]) / "output"
    assert (output / "adapter_config.json").is_file() and (output / "tokenizer.json").is_file()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), output)
    assert any("lora" in name for name, _ in model.named_parameters())
    return metrics


def test_sft_demo_trains_end_to_end(workspace, tiny_model_dir):
    summary = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
                         "--name", "first", *FAST_PARAMS, "--param", "system_prompt=Answer with a card.",
                         "--wait", "--json")
    metrics = _check_trained(summary, tiny_model_dir)
    assert {"loss", "learning_rate", "grad_norm"} <= {m["name"] for m in metrics}
    shown = deepe_json("jobs", "show", str(summary["id"]), "--json")
    assert set(shown) >= {"id", "name", "status", "method", "base_model", "dataset", "params", "run_dir",
                          "records", "artifacts", "error", "attempt", "copied_from"}
    assert shown["params"]["MAX_STEPS"] == 6 and shown["params"]["SYSTEM_PROMPT"] == "Answer with a card."
    record_path = Path(summary["run_dir"]) / "training.ipynb"
    assert shown["records"] == [str(record_path)]
    [artifact] = shown["artifacts"]
    assert artifact["kind"] == "customized" and artifact["name"].startswith("tiny_first_2")
    assert artifact["name"].endswith("_" + shown["uuid"][:4])
    # The record holds the injected parameters and the platform cells' outputs.
    record = nbformat.read(record_path, as_version=4)
    injected = next(c for c in record.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "MAX_STEPS = 6" in injected.source and f'MODEL_PATH = "{tiny_model_dir}"' in injected.source
    # The log streams the stage events, progress and metrics.
    log = deepe("jobs", "logs", str(summary["id"])).stdout
    for event in ("initialising model", "initialising dataset", "configuring trainer", "training started",
                  "training succeeded", "saving", "saved to", "step 6/6"):
        assert event in log, event
    # each step once: the [deepe] line, not the trainer's own printed dict of the same values besides
    steps = [line for line in log.splitlines() if line.startswith("[deepe] step ")]
    assert len(steps) == len(set(steps)) and '"epoch": ' in steps[0]
    assert not [line for line in log.splitlines() if line.startswith(("{'loss'", "{'eval_loss'"))], \
        "a step was printed twice"
    # Copy the Train with another learning rate, then compare the two.
    copy = deepe_json("jobs", "copy", str(summary["id"]), "--param", "learning_rate=1e-3", "--wait", "--json")
    assert copy["status"] == "succeeded" and copy["copied_from"] == summary["id"]
    assert copy["params"]["LEARNING_RATE"] == 1e-3 and copy["params"]["MAX_STEPS"] == 6
    report = deepe_json("compare", str(summary["id"]), str(copy["id"]), "--json")
    assert report["differences"] == {"LEARNING_RATE": {str(summary["id"]): 0.005, str(copy["id"]): 0.001}}
    assert report["metrics"]["loss"][str(copy["id"])]["points"] == 6
    text = deepe("compare", str(summary["id"]), str(copy["id"])).stdout
    assert "LEARNING_RATE" in text and "loss" in text
    listing = deepe("jobs", "list").stdout
    assert "succeeded" in listing and "6/6" in listing


def _template_copy_with(tmp_path: Path, code: str | None = None) -> Path:
    path = tmp_path / "my_method.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), path)
    return path


def test_method_from_a_template_notebook_trains_via_cli(workspace, tiny_model_dir, tmp_path):
    notebook = _template_copy_with(tmp_path)
    deepe("methods", "add", "--name", "my-method", "--type", "chat", "--lifecycle", "customized",
          "--stage", f"training={notebook}@python3")
    shown = deepe_json("methods", "show", "my-method", "--json")
    assert shown["stages"]["training"]["kernel"] == "python3" and not shown["builtin"]
    summary = deepe_json("train", "--method", "my-method", "--base-model", "tiny", "--dataset", "demo-sft",
                         *FAST_PARAMS, "--wait", "--json")
    _check_trained(summary, tiny_model_dir)


DEEPEXTENSION_SCRIPT = f'''# A DeepExtension-style custom01.py: only the code between the markers is used.
import json, sys

{stagefiles.BEGIN_MARKER}
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from transformers import DataCollatorForLanguageModeling
from peft import LoraConfig, get_peft_model

tokenizer = AutoTokenizer.from_pretrained(MODEL_PATH)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(MODEL_PATH),
                       LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules="all-linear",
                                  task_type="CAUSAL_LM"))
rows = load_dataset_file(DATASET_PATH)
data = rows.map(lambda r: tokenizer(r["instruction"] + " " + r["output"], truncation=True,
                                    max_length=MAX_SEQ_LENGTH), remove_columns=rows.column_names)
trainer = Trainer(model=model, train_dataset=data,
                  args=TrainingArguments(output_dir=OUTPUT_DIR, max_steps=MAX_STEPS, learning_rate=LEARNING_RATE,
                                         per_device_train_batch_size=BATCH_SIZE, logging_steps=1,
                                         save_strategy="no", report_to="none"),
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                  callbacks=[callback])
{stagefiles.END_MARKER}

if __name__ == "__main__":
    trainer.train()
'''


def test_method_from_a_deepextension_script_trains_via_cli(workspace, tiny_model_dir, tmp_path):
    script = tmp_path / "custom01.py"
    script.write_text(DEEPEXTENSION_SCRIPT)
    # Seed 003 steps A–D: test it locally first, without the queue.
    out = tmp_path / "local-test"
    done = deepe("methods", "test", str(script), "--base-model", str(tiny_model_dir), "--dataset", "demo-sft",
                 "--param", "max_steps=3", "--param", "max_seq_length=64", "--output", str(out))
    assert "training finished" in done.stdout and str(out / "output") in done.stdout
    assert (out / "output" / "adapter_model.safetensors").is_file() and (out / "training.ipynb").is_file()
    deepe("methods", "add", "--name", "de-script", "--stage", f"training={script}@python3")
    summary = deepe_json("train", "--method", "de-script", "--base-model", "tiny", "--dataset", "demo-sft",
                         *FAST_PARAMS, "--wait", "--json")
    _check_trained(summary, tiny_model_dir)


def test_methods_test_reports_a_failure(workspace, tiny_model_dir, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text(f"{stagefiles.BEGIN_MARKER}\nraise ValueError('my code is broken')\n{stagefiles.END_MARKER}\n")
    done = deepe("methods", "test", str(script), "--base-model", str(tiny_model_dir), "--dataset", "demo-sft",
                 "--output", str(tmp_path / "t"), check=False)
    assert done.returncode == 1
    assert "training FAILED" in done.stdout and "ValueError: my code is broken" in done.stdout
