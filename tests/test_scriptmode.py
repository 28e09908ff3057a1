"""Script mode: a user's own training script (TRL's sft.py / dpo.py, a peft example with its own
flags, a notebook) runs unchanged in a stage kernel, with the platform's parameters as its flags,
the platform's callback in its Trainer, and its saved model registered.

The scripts under tests/scripts/ are shaped like the public ones they are named after."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from deepe_widgets import scriptmode, stagefiles
from deepe_widgets.errors import DeepeError
from deepe_widgets.runtime import script as runtime_script

from helpers import (
    OLORA_TEMPLATE,
    SCRIPT_FAST,
    SCRIPTS,
    alpaca_rows,
    argv_lines,
    chat_rows,
    package_imports,
    run_script,
    write_jsonl,
)

FAST = SCRIPT_FAST


# ---------------------------------------------------------------- datasets

def write_preferences_csv(path: Path, n: int = 20) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerows({"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.",
                          "rejected": f"It is {2 * i + 1}."} for i in range(n))
    return path


# ---------------------------------------------------------------- running a script notebook

def logged_losses(text: str) -> list[float]:
    return [json.loads(m.group(1))["loss"] for m in re.finditer(r"^\[deepe\] step \d+/\d+ (\{.*\})$", text, re.M)
            if '"loss"' in m.group(1)]


def script_cell(executed) -> nbformat.NotebookNode:
    return next(c for c in executed.cells if scriptmode.SCRIPT_TAG in c.metadata.get("tags", []))


# ---------------------------------------------------------------- what is a script

def test_is_script_tells_scripts_from_stage_notebooks(tmp_path):
    assert scriptmode.is_script("import trl\nprint('train')\n")
    assert not scriptmode.is_script(f"import os\n{stagefiles.BEGIN_MARKER}\nx = 1\n{stagefiles.END_MARKER}\n")
    assert not scriptmode.is_script('# %% tags=["parameters"]\nMODEL_PATH = ""\n# %%\nprint(MODEL_PATH)\n')
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("trainer.train()")])
    assert scriptmode.is_script(plain) and scriptmode.is_script(nbformat.writes(plain))
    assert not scriptmode.is_script(nbformat.read(stagefiles.template_notebook_path(), as_version=4))
    assert scriptmode.is_script(SCRIPTS / "sft_trl.py") and scriptmode.is_script(SCRIPTS / "trainer_notebook.ipynb")


def test_script_notebook_wraps_the_unchanged_script_in_platform_cells():
    nb = scriptmode.script_notebook(SCRIPTS / "olora_argparse.py", "python3", OLORA_TEMPLATE)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags == [["parameters"], [stagefiles.SETUP_TAG], [scriptmode.SCRIPT_TAG], [stagefiles.TRAIN_TAG]]
    assert nb.cells[2].source == "%%deepe_script olora_argparse.py\n" + (SCRIPTS / "olora_argparse.py").read_text()
    assert "deepe_widgets.runtime.script.prepare(" in nb.cells[1].source
    assert "deepe_widgets.runtime.script.finish(OUTPUT_DIR, MODEL_PATH)" in nb.cells[3].source
    parameters = stagefiles.notebook_parameters(nb)
    assert set(scriptmode.STANDARD_PARAMETERS) <= set(parameters)
    assert parameters["ARGS_TEMPLATE"]["default"] == repr(OLORA_TEMPLATE)
    assert parameters["MAX_STEPS"]["default"] == "-1" and parameters["JOB_ID"]["default"] == "0"
    # the stage runner adds no platform cells of its own around a script
    assert len(stagefiles.with_platform_cells(nb, "training").cells) == len(nb.cells)
    nbformat.validate(nb)


def test_a_notebook_script_keeps_its_cells():
    original = nbformat.read(SCRIPTS / "trainer_notebook.ipynb", as_version=4)
    nb = scriptmode.script_notebook(SCRIPTS / "trainer_notebook.ipynb")
    assert [c.source for c in nb.cells[2:-1]] == [c.source for c in original.cells]
    assert nb.metadata["deepe"]["script"]["format"] == "ipynb"
    nbformat.validate(nb)


def test_load_stage_notebook_takes_scripts_and_leaves_stage_notebooks_alone(tmp_path):
    assert scriptmode.is_script_notebook(scriptmode.load_stage_notebook(SCRIPTS / "dpo_trl.py"))
    template = scriptmode.load_stage_notebook(stagefiles.template_notebook_path())
    assert not scriptmode.is_script_notebook(template) and stagefiles.find_parameters_cell(template) is not None
    with pytest.raises(DeepeError, match="does not exist"):
        scriptmode.load_stage_notebook(tmp_path / "missing.py")
    # one public loader: the stage-notebook reader beneath it refuses a script rather than losing script mode
    assert not hasattr(stagefiles, "load_stage_notebook")
    with pytest.raises(DeepeError, match="no cell tagged 'parameters'"):
        stagefiles.read_stage_file(SCRIPTS / "dpo_trl.py")


# ---------------------------------------------------------------- args templates

def test_an_args_template_naming_an_unknown_parameter_is_refused():
    known = scriptmode.STANDARD_PARAMETERS
    scriptmode.check_args_template(OLORA_TEMPLATE + " --train_file {DATASET_FILE}", known)
    with pytest.raises(DeepeError, match=r"\{MODEL_PATHH\}, which is not a parameter") as caught:
        scriptmode.check_args_template("--base_model {MODEL_PATHH} --output_dir {OUTPUT_DIR}", known)
    assert caught.value.field == "args_template"
    with pytest.raises(DeepeError, match="cannot be split"):
        scriptmode.check_args_template("--base_model '{MODEL_PATH}", known)
    with pytest.raises(DeepeError, match="BATCH"):
        scriptmode.script_notebook(SCRIPTS / "olora_argparse.py", "python3", "--batch_size {BATCH}")


def test_args_template_is_split_before_it_is_filled():
    argv = runtime_script.render_args_template(
        "--base_model {MODEL_PATH} --targets '[q_proj, v_proj]' --json '{\"a\": 1}' --fp16 {LOAD_IN_4BIT}",
        {"MODEL_PATH": "/models/my base", "LOAD_IN_4BIT": False})
    assert argv == ["--base_model", "/models/my base", "--targets", "[q_proj, v_proj]", "--json", '{"a": 1}',
                    "--fp16", "false"]
    with pytest.raises(ValueError, match="NOPE"):
        runtime_script.render_args_template("--x {NOPE}", {})


def test_the_workbench_accepts_the_templates_the_kernel_renders_and_reads_what_it_writes(tmp_path):
    """An args template checked at registration is one the kernel can fill, placeholder for placeholder,
    and the record `finish` writes is the one the worker reads: one definition, the kernel's."""
    assert scriptmode.PLACEHOLDER is runtime_script.PLACEHOLDER
    assert scriptmode.DERIVED_PLACEHOLDERS is runtime_script.DERIVED_PLACEHOLDERS
    assert scriptmode.OUTPUT_RECORD is runtime_script.OUTPUT_RECORD
    template = "--data {DATASET_FILE} --base {MODEL_PATH} --json '{\"a\": 1}' --lr {LEARNING_RATE}"
    scriptmode.check_args_template(template, scriptmode.STANDARD_PARAMETERS)
    names = scriptmode.template_placeholders(template)
    assert names == ["DATASET_FILE", "MODEL_PATH", "LEARNING_RATE"]
    assert runtime_script.render_args_template(template, {n: n.lower() for n in names}) == \
        ["--data", "dataset_file", "--base", "model_path", "--json", '{"a": 1}', "--lr", "learning_rate"]
    (tmp_path / runtime_script.OUTPUT_RECORD).write_text('{"kind": "adapter"}')
    assert scriptmode.read_script_output(tmp_path) == {"kind": "adapter"}


def test_suggested_template_for_a_script_with_its_own_flags():
    suggested = scriptmode.suggest_args_template((SCRIPTS / "olora_argparse.py").read_text())
    for part in ("--base_model {MODEL_PATH}", "--data_path {DATASET_PATH}", "--output_dir {OUTPUT_DIR}",
                 "--num_epochs {EPOCHS}", "--cutoff_len {MAX_SEQ_LENGTH}", "--lora_r {LORA_RANK}"):
        assert part in suggested
    scriptmode.check_args_template(suggested, scriptmode.STANDARD_PARAMETERS)
    assert scriptmode.suggest_args_template((SCRIPTS / "sft_trl.py").read_text()) == ""


# ---------------------------------------------------------------- offline checks

OFFLINE_SCRIPT = '''from huggingface_hub import login, notebook_login
from transformers import AutoModelForCausalLM, TrainingArguments
import argparse

notebook_login()
parser = argparse.ArgumentParser()
parser.add_argument("--push_to_hub", action="store_true", default=True)
model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.1-8B")
args = TrainingArguments(output_dir="out", push_to_hub=True)
if args.push_to_hub:
    trainer.push_to_hub()
trainer.push_to_hub()
login()
local = AutoModelForCausalLM.from_pretrained("./my-model")
'''


def test_offline_problems_name_the_line_and_the_fix():
    problems = scriptmode.offline_problems(OFFLINE_SCRIPT)
    assert problems[0].startswith("line 5: calls notebook_login()") and "HF_TOKEN" in problems[0]
    assert any(p.startswith("line 7: declares --push_to_hub with a default of True") for p in problems)
    assert any(p.startswith("line 8: loads a model from the Hugging Face Hub ('meta-llama/Llama-3.1-8B')")
               and "MODEL_PATH" in p for p in problems)
    assert any(p.startswith("line 9: passes push_to_hub=True") and "False" in p for p in problems)
    assert any(p.startswith("line 12: calls push_to_hub() unconditionally") for p in problems)
    assert any(p.startswith("line 13: calls login()") for p in problems)
    assert not any(p.startswith(("line 11:", "line 14:")) for p in problems), problems
    assert len(problems) == 6, problems


def test_offline_problems_in_a_notebook_and_in_the_sample_scripts():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# hi"),
                                         nbformat.v4.new_code_cell("!pip install trl\nimport trl"),
                                         nbformat.v4.new_code_cell("from huggingface_hub import notebook_login\n"
                                                                   "notebook_login()")])
    problems = scriptmode.offline_problems(nb)
    assert problems[0].startswith("cell 2, line 1: `!pip install trl` installs packages")
    assert problems[1].startswith("cell 3, line 2: calls notebook_login()")
    for name in ("sft_trl.py", "dpo_trl.py", "olora_argparse.py"):
        assert scriptmode.offline_problems((SCRIPTS / name).read_text()) == [], name
    assert scriptmode.offline_problems(nbformat.read(SCRIPTS / "trainer_notebook.ipynb", as_version=4)) == []


# ---------------------------------------------------------------- the kernel side, in this process

@pytest.fixture
def prepared():
    """`prepare`'s hooks in this process, undone after the test."""
    saved = list(sys.argv)
    yield runtime_script
    runtime_script.restore()
    sys.argv = saved


def test_a_trl_parser_gets_the_parameters_under_hugging_face_names(prepared, tmp_path):
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    prepared.prepare(str(SCRIPTS / "sft_trl.py"), {
                                "MODEL_PATH": "/models/base", "OUTPUT_DIR": str(tmp_path / "out"), "MAX_STEPS": 7,
                                "EPOCHS": 2, "BATCH_SIZE": 3, "LEARNING_RATE": 1e-4, "LORA_RANK": 4,
                                "LORA_ALPHA": 8, "LORA_DROPOUT": 0.0, "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 0,
                                "MAX_INPUT_LENGTH": 32, "EXTRA_ARGS": "--packing true", "JOB_ID": 0})
    assert sys.argv == ["sft_trl.py", "--packing", "true"]  # the kernel's own flags are gone
    script_args, training, model = TrlParser((ScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config()
    assert (training.max_steps, training.num_train_epochs, training.per_device_train_batch_size) == (7, 2, 3)
    assert training.output_dir == str(tmp_path / "out") and training.learning_rate == 1e-4
    assert training.max_length == 64 and training.logging_steps == 1 and training.packing
    assert training.save_strategy == "no" and training.report_to in ("none", [], ["none"])
    assert not training.push_to_hub and not training.fp16
    assert (model.model_name_or_path, model.use_peft, model.lora_r, model.lora_alpha) == ("/models/base", True, 4, 8)
    assert "--max_steps" in sys.argv and prepared.script_argv() == sys.argv[1:]


def test_a_plain_argparse_parser_gets_the_flags_it_has(prepared, tmp_path, capsys):
    prepared.prepare("train.py", {"MODEL_PATH": "/models/base", "OUTPUT_DIR": "out", "MAX_STEPS": 5,
                                  "LEARNING_RATE": 3e-4, "BATCH_SIZE": 2})
    parser = argparse.ArgumentParser()
    parser.add_argument("--base_model", default="gpt2")
    parser.add_argument("--output_dir", default="elsewhere")
    parser.add_argument("--learning_rate", type=float, default=1.0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    assert (args.base_model, args.output_dir, args.learning_rate) == ("gpt2", "out", 3e-4)
    shown = capsys.readouterr().out
    assert "MODEL_PATH (--model_name_or_path)" in shown and "args template" in shown
    # a parser given its own explicit arguments is left alone
    assert parser.parse_args(["--output_dir", "mine"]).output_dir == "mine"


def test_a_template_the_parser_refuses_says_so(prepared):
    prepared.prepare("train.py", {"OUTPUT_DIR": "out", "ARGS_TEMPLATE": "--output_dir {OUTPUT_DIR} --epochs 3"})
    assert sys.argv == ["train.py", "--output_dir", "out", "--epochs", "3"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir")
    with pytest.raises(runtime_script.ScriptArgumentsRefused, match="unrecognized arguments: --epochs 3"):
        parser.parse_args()


def test_the_callback_joins_every_trainer_once_beside_the_scripts_own(prepared, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from deepe_widgets.runtime import MetricsCallback, make_callback

    prepared.prepare("train.py", {"OUTPUT_DIR": str(tmp_path / "out"), "JOB_ID": 0})

    class Mine(TrainerCallback):
        pass

    class MyTrainer(Trainer):  # what TRL's trainers are
        pass

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    mine = Mine()
    first = MyTrainer(model=model, args=args, callbacks=[mine])
    second = Trainer(model=model, args=args, callbacks=[make_callback(0)])
    for trainer in (first, second):
        ours = [c for c in trainer.callback_handler.callbacks if isinstance(c, MetricsCallback)]
        assert len(ours) == 1
    assert mine in first.callback_handler.callbacks
    assert runtime_script._state.trainers == [first, second]
    # without a progress bar the trainer prints each step's values, which the callback prints already
    from transformers.trainer_callback import PrinterCallback

    quiet = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none",
                                                        disable_tqdm=True))
    assert not [c for c in quiet.callback_handler.callbacks if isinstance(c, PrinterCallback)]
    assert [c for c in quiet.callback_handler.callbacks if isinstance(c, MetricsCallback)]


def test_a_training_that_logged_nothing_or_ran_long_is_worth_a_warning():
    assert runtime_script.warn_if_silent(logged=5, steps=5, max_steps=5) is None
    assert "logged no training metric" in runtime_script.warn_if_silent(logged=0, steps=5, max_steps=-1)
    assert "past MAX_STEPS=3" in runtime_script.warn_if_silent(logged=5, steps=8, max_steps=3)
    assert runtime_script.warn_if_silent(logged=0, steps=0) is None


def test_the_dataset_becomes_a_folder_load_dataset_reads(tmp_path):
    from datasets import load_dataset

    folder = runtime_script.dataset_folder(write_preferences_csv(tmp_path / "prefs.csv"), tmp_path / "ds",
                                           max_samples=7)
    assert (folder / "train.jsonl").is_file()
    data = load_dataset(str(folder))
    assert list(data) == ["train"] and data["train"].num_rows == 7
    assert data["train"][0] == {"prompt": "What is 0 plus 0?", "chosen": "It is 0.", "rejected": "It is 1."}
    jsonl = write_jsonl(tmp_path / "chat.jsonl", chat_rows(3))
    copied = runtime_script.dataset_folder(jsonl, tmp_path / "ds2")
    assert (copied / "train.jsonl").read_bytes() == jsonl.read_bytes()
    assert runtime_script.dataset_folder(folder, tmp_path / "ds3") == folder


def test_new_modules_import_only_down_the_floors():
    runtime_side = package_imports("runtime.script", (SCRIPTS.parent.parent / "deepe_widgets" / "runtime" /
                                                      "script.py").read_text(), False)
    assert runtime_side <= {"runtime", "runtime.devices"}, runtime_side  # devices: the precision rule
    workbench = package_imports("scriptmode", (SCRIPTS.parent.parent / "deepe_widgets" / "scriptmode.py")
                                .read_text(), False)
    assert workbench <= {"errors", "config", "params", "stagefiles", "runtime.script"}, workbench


# ---------------------------------------------------------------- real runs through papermill and a kernel

@pytest.mark.training
def test_trl_sft_script_runs_unchanged(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows())
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "sft_trl.py", tiny_model_dir, data)
    assert error is None, error
    assert script_cell(executed).source == "%%deepe_script sft_trl.py\n" + (SCRIPTS / "sft_trl.py").read_text()
    [argv] = argv_lines(text)
    for flag in (f"--model_name_or_path {tiny_model_dir}", "--max_steps 5", "--per_device_train_batch_size 2",
                 "--max_length 64", "--use_peft true", "--lora_r 8", f"--output_dir {output}", "--logging_steps 1",
                 "--dataset_name " + str(output.parent / "deepe_dataset")):
        assert flag in argv, (flag, argv)
    losses = logged_losses(text)
    assert len(losses) == 5, text
    assert scriptmode.read_script_output(output)["kind"] == "adapter"
    assert (output / "adapter_model.safetensors").is_file() and (output / "tokenizer.json").is_file()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), output)
    assert any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.training
def test_trl_dpo_script_trains_on_preference_pairs_from_a_csv(tmp_path, tiny_model_dir):
    data = write_preferences_csv(tmp_path / "prefs.csv")
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "dpo_trl.py", tiny_model_dir, data)
    assert error is None, error
    assert len(logged_losses(text)) == 5
    assert "rewards/margins" in text  # DPO's own metrics reach the callback too
    record = scriptmode.read_script_output(output)
    assert record["kind"] == "adapter" and record["steps"] == 5 and record["warning"] is None
    assert "--max_steps" in record["argv"]


@pytest.mark.training
def test_argparse_script_with_its_own_flags_runs_from_an_args_template(tmp_path, tiny_model_dir):
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(alpaca_rows()))  # a JSON array: converted to train.jsonl
    template = OLORA_TEMPLATE + " --logging_steps 1"
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "olora_argparse.py", tiny_model_dir, data,
                                               template, EPOCHS=1)
    assert error is None, error
    argv = argv_lines(text)[0]
    assert f"--base_model {tiny_model_dir}" in argv and "--data_path " + str(output.parent / "deepe_dataset") in argv
    assert "--model_name_or_path" not in argv  # a template replaces name matching
    assert len(logged_losses(text)) >= 3
    record = scriptmode.read_script_output(output)
    assert record["kind"] == "adapter" and record["trained_by"] == "script"
    # the script saves only the adapter: the base model's tokenizer is copied in
    assert "tokenizer.json" in record["tokenizer_copied"] and (output / "tokenizer.json").is_file()


@pytest.mark.training
def test_the_form_wins_where_the_scripts_flags_cannot_carry_it(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows())
    # no --logging_steps in the template (the script logs every 10 steps) and no max-steps flag at all:
    # the platform's callback logs every step and stops the run at MAX_STEPS
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "olora_argparse.py", tiny_model_dir, data,
                                               OLORA_TEMPLATE, MAX_STEPS=3)
    assert error is None, error
    record = scriptmode.read_script_output(output)
    assert record["steps"] == 3 and record["warning"] is None
    assert len(logged_losses(text)) == 3
    assert "the platform stops it at MAX_STEPS=3" in text


@pytest.mark.training
def test_a_notebook_that_trains_and_saves_itself(tmp_path, tiny_model_dir):
    from datasets import Dataset

    data = tmp_path / "alpaca.parquet"
    Dataset.from_list(alpaca_rows()).to_parquet(str(data))
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "trainer_notebook.ipynb", tiny_model_dir, data)
    assert error is None, error
    original = nbformat.read(SCRIPTS / "trainer_notebook.ipynb", as_version=4)
    ran = [c.source for c in executed.cells if scriptmode.SCRIPT_TAG in c.metadata.get("tags", [])]
    assert ran == [c.source for c in original.cells if c.cell_type == "code"]
    assert "--max_length 64" in argv_lines(text)[0]  # HfArgumentParser(args=[]) still gets the parameters
    assert len(logged_losses(text)) == 5
    assert scriptmode.read_script_output(output)["kind"] == "adapter"


@pytest.mark.training
def test_an_untrained_trainer_is_trained_by_the_platform(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows())
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "untrained_trainer.py", tiny_model_dir, data)
    assert error is None, error
    assert "the platform trains and saves it" in text and "training succeeded: 5 steps" in text
    assert len(logged_losses(text)) == 5
    record = scriptmode.read_script_output(output)
    assert record["trained_by"] == "platform" and record["kind"] == "adapter"


@pytest.mark.training
def test_a_script_that_raises_fails_the_stage_with_its_own_error(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "broken.py", tiny_model_dir, data)
    assert isinstance(error, PapermillExecutionError)
    assert error.ename == "ValueError" and error.evalue == f"my script is broken (output_dir={output})"
    failed = [c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert [c.metadata["tags"] for c in failed] == [[scriptmode.SCRIPT_TAG]]


@pytest.mark.training
def test_a_script_with_no_trainer_and_no_model_fails_clearly(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "no_trainer.py", tiny_model_dir, data)
    assert isinstance(error, PapermillExecutionError) and error.ename == "ScriptProducedNoModel"
    assert "the script produced no model in OUTPUT_DIR and created no Trainer" in error.evalue
    assert f"nothing to train into {output}" in text
    # its sys.exit(0) ended the script cell quietly: only the platform's last cell failed
    failed = [c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert [c.metadata["tags"] for c in failed] == [[stagefiles.TRAIN_TAG]]


def test_offline_problems_follow_bare_ids_and_variables_across_notebook_cells():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('model_checkpoint = "distilgpt2"'),
        nbformat.v4.new_markdown_cell("Load the data"),
        nbformat.v4.new_code_cell('datasets = load_dataset("wikitext", "wikitext-2-raw-v1")\n'
                                  'local = load_dataset("json", data_files=DATASET_PATH)'),
        nbformat.v4.new_code_cell("model = AutoModelForCausalLM.from_pretrained(model_checkpoint)\n"
                                  "mine = AutoModelForCausalLM.from_pretrained(MODEL_PATH)"),
    ])
    found = scriptmode.offline_problems(nb)
    assert len(found) == 2, found
    assert found[0].startswith("cell 3, line 1") and "'wikitext'" in found[0]
    assert found[1].startswith("cell 4, line 1") and "'distilgpt2'" in found[1]


# ---------------------------------------------------------------- LoRA task types

def test_the_lora_task_type_is_read_from_the_trainer_or_model_class_a_script_builds():
    task = runtime_script.lora_task_type
    assert task((SCRIPTS / "reward_trl.py").read_text())[0] == "SEQ_CLS"
    assert task((SCRIPTS / "sft_trl.py").read_text())[0] == "CAUSAL_LM"
    assert task((SCRIPTS / "dpo_trl.py").read_text())[0] == "CAUSAL_LM"
    assert task(runtime_script.script_source(SCRIPTS / "trainer_notebook.ipynb"))[0] == "CAUSAL_LM"
    # the trainer decides: a PPO script loads a sequence classifier as its reward model
    ppo = ("policy = AutoModelForCausalLM.from_pretrained(p)\n"
           "reward = AutoModelForSequenceClassification.from_pretrained(p)\n")
    assert task(ppo + "PPOTrainer(policy, reward)")[0] == "CAUSAL_LM"
    none, why = task(ppo)
    assert none is None and "different kinds" in why
    assert task((SCRIPTS / "unplaced_model.py").read_text())[0] is None


def test_an_unplaceable_script_gets_no_peft_flags_and_the_log_says_so(prepared, tmp_path, capsys):
    from transformers import TrainingArguments
    from trl import ModelConfig, ScriptArguments, TrlParser

    values = {"MODEL_PATH": "/models/base", "OUTPUT_DIR": str(tmp_path / "out"), "MAX_STEPS": 3, "LORA_RANK": 4,
              "LORA_ALPHA": 8, "LORA_DROPOUT": 0.0, "JOB_ID": 0}
    prepared.prepare(str(SCRIPTS / "unplaced_model.py"), values)
    _, training, model = TrlParser((ScriptArguments, TrainingArguments, ModelConfig)).parse_args_and_config()
    argv = prepared.script_argv()
    assert not {"--use_peft", "--lora_r", "--lora_alpha", "--lora_dropout", "--lora_task_type"} & set(argv), argv
    assert model.use_peft is False and training.max_steps == 3
    [line] = [line for line in capsys.readouterr().out.splitlines() if "LoRA" in line]
    assert "no LoRA flags for the script: the platform cannot tell which kind of model it trains" in line
    # a reward script on the same parser gets them, with its task type
    prepared.prepare(str(SCRIPTS / "reward_trl.py"), values)
    _, _, model = TrlParser((ScriptArguments, TrainingArguments, ModelConfig)).parse_args_and_config()
    assert (model.use_peft, model.lora_r, model.lora_task_type) == (True, 4, "SEQ_CLS")
    assert "LoRA on the SEQ_CLS task type (the script builds RewardTrainer)" in capsys.readouterr().out


@pytest.mark.training
def test_trl_reward_script_runs_unchanged_with_lora_on_a_sequence_classifier(tmp_path, tiny_model_dir):
    data = write_preferences_csv(tmp_path / "prefs.csv", 24)
    executed, output, text, error = run_script(tmp_path, SCRIPTS / "reward_trl.py", tiny_model_dir, data,
                                               MAX_STEPS=4, EVAL_STEPS=2, EVAL_FRACTION=0.25)
    assert error is None, error
    [argv] = argv_lines(text)
    for flag in ("--use_peft true", "--lora_task_type SEQ_CLS", "--lora_r 8", "--dataset_test_split validation",
                 "--eval_strategy steps", "--eval_steps 2"):
        assert flag in argv, (flag, argv)
    assert len(logged_losses(text)) == 4
    assert re.search(r'"eval_accuracy"', text), text[-3000:]  # the held-out pairs, scored while training
    record = scriptmode.read_script_output(output)
    assert record["kind"] == "adapter" and record["steps"] == 4
    assert json.loads((output / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"


def test_a_parser_that_reads_a_validation_file_gets_the_held_out_rows_by_it(prepared, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)])
    prepared.prepare("run_clm.py", {"DATASET_PATH": str(data), "OUTPUT_DIR": str(tmp_path / "run" / "output"),
                                    "EVAL_FRACTION": 0.1, "EVAL_STEPS": 5, "BATCH_SIZE": 2})
    parser = argparse.ArgumentParser()  # transformers' examples (run_clm.py) read the rows from files
    for flag in ("--train_file", "--validation_file", "--eval_strategy", "--eval_steps"):
        parser.add_argument(flag)
    parser.add_argument("--do_eval", action="store_true")
    args = parser.parse_args()
    assert args.validation_file == str(tmp_path / "run" / "deepe_dataset" / "validation.jsonl")
    assert len(Path(args.validation_file).read_text().splitlines()) == 2
    assert args.do_eval and (args.eval_strategy, args.eval_steps) == ("steps", "5")


def test_extra_arguments_reach_a_script_as_flags_in_the_form_its_parser_takes(prepared, tmp_path):
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    prepared.prepare(str(SCRIPTS / "sft_trl.py"), {
        "MODEL_PATH": "/models/base", "OUTPUT_DIR": str(tmp_path / "out"), "LORA_RANK": 4, "JOB_ID": 0,
        "EXTRA_ARGS": {"packing": True, "neftune_noise_alpha": 5, "lora_target_modules": ["q_proj", "v_proj"]}})
    _, training, model = TrlParser((ScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config()
    assert training.packing is True and training.neftune_noise_alpha == 5
    assert model.lora_target_modules == ["q_proj", "v_proj"]
    argv = prepared.script_argv()
    assert argv[-7:] == ["--packing", "true", "--neftune_noise_alpha", "5", "--lora_target_modules", "q_proj",
                         "v_proj"]  # after the platform's flags: they win


def test_a_parser_whose_task_type_flag_allows_one_choice_places_the_model(prepared, capsys):
    prepared.prepare("train.py", {"OUTPUT_DIR": "out", "LORA_RANK": 4})  # no source to read
    parser = argparse.ArgumentParser()
    parser.add_argument("--lora_task_type", choices=["SEQ_CLS"], default="SEQ_CLS")
    parser.add_argument("--lora_r", type=int, default=16)
    args = parser.parse_args()
    assert (args.lora_r, args.lora_task_type) == (4, "SEQ_CLS")
    assert "its parser's --lora_task_type allows only SEQ_CLS" in capsys.readouterr().out
