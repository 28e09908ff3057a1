"""Held-out rows while training (issue 27, part 1): the chat built-ins and the template hold rows out
(a `split` column's validation/test rows, else EVAL_FRACTION of them), score them before the first
step and every EVAL_STEPS steps, and say so in the log when there are none; script mode hands them
to the script as validation.jsonl with the evaluation flags its parser has.

Notebooks run as the platform runs them (papermill in the `python3` kernel, a real job id, metrics
read back from the database) on the tiny model, a few steps each."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest

from deepe_widgets import metrics
from deepe_widgets.runtime import script as runtime_script
from deepe_widgets.ui.labels import metric_label, metric_order

from helpers import REPO, running_job, write_jsonl

TEMPLATES = REPO / "method_templates"
SFT = TEMPLATES / "sft_demo" / "training.ipynb"
DPO = TEMPLATES / "dpo_demo" / "training.ipynb"
GRPO = TEMPLATES / "grpo_demo" / "training.ipynb"
TEMPLATE = TEMPLATES / "custom_template" / "training.ipynb"
# Few, large steps on the tiny model: the held-out loss falls clearly within seconds.
FAST = {"BATCH_SIZE": 4, "LEARNING_RATE": 5e-3, "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 0}


def _train(notebook: Path, tmp_path: Path, rows: list[dict], **parameters) -> tuple[str, dict[str, dict[int, float]]]:
    """Run a training notebook like the worker does: (its log, metric name -> step -> value)."""
    from deepe_widgets.errors import StageFailed
    from deepe_widgets.runner import execute_stage
    from deepe_widgets.scriptmode import load_stage_notebook

    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    job_id = running_job(notebook.parent.name, run_dir)
    values = {"MODEL_PATH": parameters.pop("MODEL_PATH"), "OUTPUT_DIR": str(run_dir / "output"), "JOB_ID": job_id,
              "DATASET_PATH": str(write_jsonl(tmp_path / "data.jsonl", rows)), **FAST, **parameters}
    log_path = run_dir / "training.log"
    try:
        execute_stage(load_stage_notebook(notebook, "training"), stage="training", kernel="python3",
                      parameters=values, output_path=run_dir / "training.ipynb", log_path=log_path, cwd=run_dir)
    except StageFailed as exc:
        log = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
        pytest.fail(f"stage failed: {exc}\n--- log ---\n{log[-6000:]}")
    found: dict[str, dict[int, float]] = {}
    for row in metrics.metrics_for(job_id):
        found.setdefault(row.name, {})[row.step] = row.value
    return log_path.read_text(encoding="utf-8"), found


def _held_out_names(series: dict) -> list[str]:
    return sorted(name for name in series if name.startswith("eval_"))


# ---------------------------------------------------------------- the built-ins on the tiny model

@pytest.mark.training
def test_sft_held_out_loss_is_logged_before_training_and_every_eval_steps_and_falls(home, tiny_model_dir, tmp_path):
    from deepe_widgets.demo_data import demo_sft_rows

    rows = demo_sft_rows()
    held = round(len(rows) * 0.1)
    # MAX_SAMPLES caps the training rows only: the held-out rows are drawn from every row first
    log, series = _train(SFT, tmp_path, rows, MODEL_PATH=str(tiny_model_dir), MAX_STEPS=12, EVAL_STEPS=4,
                         MAX_SAMPLES=40, LEARNING_RATE=3e-2)

    assert f"{held} held-out rows (EVAL_FRACTION 0.1), {len(rows) - held} training rows" in log
    assert set(series["eval_loss"]) == {0, 4, 8, 12}, series["eval_loss"]  # before the first step, then every 4
    assert set(series["loss"]) == set(range(1, 13))
    for step, loss in series["eval_loss"].items():
        assert series["eval_perplexity"][step] == pytest.approx(math.exp(loss), rel=1e-6)
    # the card format is learnt: the held-out countries' answers get likelier at every evaluation
    # (5.99, 5.90, 5.79, 5.75 on 2 CPU cores: the tiny model starts near ln(vocabulary) and moves slowly)
    held_out = [series["eval_loss"][step] for step in (0, 4, 8, 12)]
    assert all(later < earlier for earlier, later in zip(held_out, held_out[1:])), held_out
    assert held_out[-1] < held_out[0] - 0.1, held_out
    print(f"SFT-Demo eval_loss by step: {series['eval_loss']}")


@pytest.mark.training
def test_no_held_out_rows_is_said_in_the_log_and_trains_without_evaluation(home, tiny_model_dir, tmp_path):
    from deepe_widgets.demo_data import demo_sft_rows

    log, series = _train(SFT, tmp_path, demo_sft_rows(), MODEL_PATH=str(tiny_model_dir), MAX_STEPS=2,
                         EVAL_FRACTION=0.0)
    assert "no held-out rows (EVAL_FRACTION is 0): no evaluation" in log
    assert "training succeeded: 2 steps" in log
    assert _held_out_names(series) == [] and set(series["loss"]) == {1, 2}


@pytest.mark.training
def test_the_template_holds_out_the_rows_a_split_column_names(home, tiny_model_dir, tmp_path):
    rows = [{"instruction": f"Add {i} and {i}.", "output": str(2 * i),
             "split": "validation" if i < 3 else "test" if i == 3 else "train"} for i in range(24)]
    # the column decides, whatever EVAL_FRACTION says
    log, series = _train(TEMPLATE, tmp_path, rows, MODEL_PATH=str(tiny_model_dir), MAX_STEPS=3, EVAL_STEPS=3,
                         EVAL_FRACTION=0.5)
    assert "4 held-out rows (the `split` column), 20 training rows" in log
    assert set(series["eval_loss"]) == {0, 3} and set(series["eval_perplexity"]) == {0, 3}

    log, series = _train(TEMPLATE, tmp_path / "none", [{**r, "split": "train"} for r in rows],
                         MODEL_PATH=str(tiny_model_dir), MAX_STEPS=1)
    assert "no held-out rows (the `split` column marks no row as validation or test): no evaluation" in log
    assert _held_out_names(series) == []


@pytest.mark.training
def test_dpo_logs_rewards_margins_and_accuracies_on_held_out_pairs(home, tiny_model_dir, tmp_path):
    from deepe_widgets.demo_data import demo_dpo_rows

    log, series = _train(DPO, tmp_path, demo_dpo_rows(), MODEL_PATH=str(tiny_model_dir), MAX_STEPS=6,
                         EVAL_STEPS=3, MAX_SEQ_LENGTH=96)
    assert "6 held-out rows (EVAL_FRACTION 0.1), 54 training rows" in log
    for name in ("eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins", "eval_rewards/accuracies",
                 "eval_loss"):
        assert set(series.get(name, {})) == {0, 3, 6}, (name, sorted(series))
    margins = series["eval_rewards/margins"]
    # the adapter starts at zero: the policy is the reference, no margin; then the held-out pairs are won too
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and margins[6] > margins[0], margins
    assert series["eval_rewards/accuracies"][6] > series["eval_rewards/accuracies"][0]


@pytest.mark.training
def test_grpo_scores_rewards_on_a_capped_number_of_held_out_prompts(home, tiny_model_dir, tmp_path):
    from deepe_widgets.demo_data import demo_gsm_rows

    log, series = _train(GRPO, tmp_path, demo_gsm_rows(), MODEL_PATH=str(tiny_model_dir), MAX_STEPS=2,
                         EVAL_STEPS=2, EVAL_FRACTION=0.5, NUM_GENERATIONS=4, MAX_CONTENT_LENGTH=8,
                         MAX_INPUT_LENGTH=128, LEARNING_RATE=1e-3)
    assert "32 held-out rows (EVAL_FRACTION 0.5), 32 training rows" in log
    assert "scoring 16 of the 32 held-out prompts at each evaluation" in log
    for name in ("eval_reward", "eval_rewards/correctness_reward/mean", "eval_rewards/xmlcount_reward/mean"):
        assert set(series.get(name, {})) == {0, 2}, (name, sorted(series))
    assert set(series["reward"]) == {1, 2}


# ---------------------------------------------------------------- what the views read

def test_held_out_metrics_read_in_words_and_chart_beside_their_training_twins():
    assert metric_label("eval_loss") == "Held-out loss"
    assert metric_label("eval_perplexity") == "Held-out perplexity"
    assert metric_label("eval_rewards/margins") == "Held-out reward: margins"
    assert metric_label("eval_kl") == "Held-out KL divergence"
    assert metric_label("eval_heldout_cosine_mrr@10") == "Held-out cosine mrr@10"  # sentence-transformers' name
    assert metric_order(["grad_norm", "eval_perplexity", "eval_loss", "loss", "eval_reward", "reward",
                         "rewards/margins", "eval_rewards/margins"]) == [
        "loss", "eval_loss", "eval_perplexity", "reward", "eval_reward", "grad_norm", "rewards/margins",
        "eval_rewards/margins"]
    assert [metrics.direction(n) for n in ("eval_loss", "eval_perplexity", "eval_rewards/margins",
                                           "eval_rewards/accuracies", "eval_reward")] == [
        "min", "min", "max", "max", "max"]
    # a spread or a length is no quality ("answer" is no word error rate)
    assert metrics.direction("eval_reward_std") is None and metrics.direction("eval_answer_length") is None


def test_the_form_takes_the_new_parameters_as_numbers_and_refuses_a_whole_share():
    from deepe_widgets import params
    from deepe_widgets.errors import DeepeError
    from deepe_widgets.scriptmode import load_stage_notebook
    from deepe_widgets.stagefiles import notebook_parameters

    for notebook in (SFT, DPO, GRPO, TEMPLATE):
        found = notebook_parameters(load_stage_notebook(notebook))
        # the form types a field by its default's value, and shows the comment as its help
        fraction, steps = (params.default_value(found[n]["default"]) for n in ("EVAL_FRACTION", "EVAL_STEPS"))
        assert (fraction, type(fraction), steps, type(steps)) == (0.1, float, 0, int), notebook
        assert "0: none" in found["EVAL_FRACTION"]["help"] and "about 10" in found["EVAL_STEPS"]["help"]
    defaults = {"EVAL_FRACTION": "0.1", "EVAL_STEPS": "0"}
    assert params.resolve({"eval_fraction": "0", "eval_steps": "25"}, defaults) == {"EVAL_FRACTION": 0.0,
                                                                                  "EVAL_STEPS": 25}
    with pytest.raises(DeepeError, match="EVAL_FRACTION must be below 1"):
        params.resolve({"EVAL_FRACTION": "1"}, defaults)
    with pytest.raises(DeepeError, match="EVAL_STEPS must not be negative"):
        params.resolve({"EVAL_STEPS": "-5"}, defaults)


# ---------------------------------------------------------------- script mode

@pytest.fixture
def prepared():
    """`prepare`'s hooks in this process, undone after the test."""
    saved = list(sys.argv)
    yield runtime_script
    runtime_script.restore()
    sys.argv = saved


def test_script_mode_writes_the_held_out_rows_as_validation_jsonl(tmp_path):
    from datasets import load_dataset

    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(30)]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    folder = runtime_script.dataset_folder(source, tmp_path / "ds", max_samples=10, eval_fraction=0.1, seed=7)
    data = load_dataset(str(folder))
    assert sorted(data) == ["train", "validation"]
    assert data["train"].num_rows == 10 and data["validation"].num_rows == 3  # MAX_SAMPLES caps training only
    held = {r["prompt"] for r in data["validation"]}
    assert not held & {r["prompt"] for r in data["train"]}
    # the same rows every run with the seed, the rows the evaluation stage's split_held_out picks
    from datasets import Dataset

    from deepe_widgets.runtime import split_held_out

    assert held == set(split_held_out(Dataset.from_list(rows), 0.1, 7)[1]["prompt"])

    with_split = [{**r, "split": "validation" if i % 10 == 0 else "train"} for i, r in enumerate(rows)]
    folder = runtime_script.dataset_folder(write_jsonl(tmp_path / "split.jsonl", with_split), tmp_path / "ds2",
                                           eval_fraction=0.0)
    data = load_dataset(str(folder))
    assert data["validation"]["prompt"] == ["q0", "q10", "q20"] and "split" not in data["train"].column_names

    # none held out: no validation file (and none left from an earlier attempt)
    folder = runtime_script.dataset_folder(source, tmp_path / "ds2", eval_fraction=0.0)
    assert not (folder / "validation.jsonl").exists() and list(load_dataset(str(folder))) == ["train"]


def test_a_trl_parser_gets_the_evaluation_flags(prepared, tmp_path):
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)])
    prepared.prepare("sft.py", {"MODEL_PATH": "/models/base", "DATASET_PATH": str(data), "JOB_ID": 0,
                                "OUTPUT_DIR": str(tmp_path / "run" / "output"), "BATCH_SIZE": 3,
                                "EVAL_FRACTION": 0.1, "EVAL_STEPS": 0, "SEED": 42})
    script_args, training, _ = TrlParser((ScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config()
    assert script_args.dataset_test_split == "validation" and training.eval_strategy == "steps"
    assert training.eval_steps == 0.1 and training.eval_on_start  # 0.1: a tenth of the run's steps
    assert training.per_device_eval_batch_size == 3 and training.eval_accumulation_steps == 4
    assert training.seed == 42
    assert (tmp_path / "run" / "deepe_dataset" / "validation.jsonl").is_file()

    runtime_script.restore()
    prepared.prepare("sft.py", {"DATASET_PATH": str(data), "OUTPUT_DIR": str(tmp_path / "run2" / "output"),
                                "EVAL_FRACTION": 0.0, "EVAL_STEPS": 5})
    script_args, training, _ = TrlParser((ScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config()
    assert training.eval_strategy == "no" and "--eval_strategy" not in runtime_script.script_argv()


def test_a_parser_without_a_test_split_flag_gets_no_evaluation_flags(prepared, tmp_path, capsys):
    import argparse

    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)])
    prepared.prepare("train.py", {"DATASET_PATH": str(data), "OUTPUT_DIR": str(tmp_path / "run" / "output"),
                                  "EVAL_FRACTION": 0.1, "EVAL_STEPS": 0})
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_name")
    parser.add_argument("--eval_strategy", default="no")
    args = parser.parse_args()
    assert args.eval_strategy == "no"  # it would ask a Trainer to evaluate with no eval dataset
    assert "no --dataset_test_split: the 2 held-out rows are in validation.jsonl" in capsys.readouterr().out


@pytest.mark.training
def test_trl_sft_script_evaluates_the_held_out_rows(tmp_path, tiny_model_dir):
    import trl

    from helpers import argv_lines, chat_rows, run_script, write_jsonl

    sft_script = Path(trl.__file__).parent / "scripts" / "sft.py"  # the installed TRL's own, unchanged
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows())
    executed, output, text, error = run_script(tmp_path, sft_script, tiny_model_dir, data,
                                               EVAL_FRACTION=0.2, EVAL_STEPS=2, MAX_STEPS=4)
    assert error is None, error
    [argv] = argv_lines(text)
    for flag in ("--dataset_test_split validation", "--eval_strategy steps", "--eval_steps 2",
                 "--eval_on_start true", "--per_device_eval_batch_size 2"):
        assert flag in argv, (flag, argv)
    assert (output.parent / "deepe_dataset" / "validation.jsonl").read_text().count("\n") == 4
    steps = [int(m.group(1)) for m in re.finditer(r'^\[deepe\] step (\d+)/\d+ \{"eval_loss"', text, re.M)]
    assert steps == [0, 2, 4], text[-3000:]
    assert (output / "adapter_model.safetensors").is_file()


def test_the_training_detail_charts_held_out_curves_beside_the_training_curves(workspace):
    from deepe_widgets import jobs
    from deepe_widgets.runtime import MetricSink
    from deepe_widgets.ui import TrainingDetail

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    sink = MetricSink(job.id)
    for step in range(0, 13):  # what SFT-Demo logs: held-out metrics before the first step and every 4
        if step:
            sink.add(step, {"loss": 6.0 - step / 20, "grad_norm": 1.0}, step / 12)
        if step % 4 == 0:
            sink.add(step, {"eval_loss": 6.0 - step / 40, "eval_perplexity": math.exp(6.0 - step / 40)}, step / 12)
    sink.close()
    detail = TrainingDetail(job.id, start_worker=False)
    try:
        # the training rows' curves, then a row of the held-out ones (each also overlaid on its twin)
        assert [figure.title for figure in detail.charts.children][:1] == ["Loss"]
        held = [figure.title for figure in detail.held_out_charts.children]
        assert held[:2] == ["Held-out loss", "Held-out perplexity"], held
        assert list(detail.lines["eval_loss"].x) == [0, 4, 8, 12]
        assert detail.figures["eval_loss"].axes[1].label == "Held-out loss"
    finally:
        detail.close()
