"""The GRPO-Demo and MLX-Demo stage notebooks, run as the platform runs them (papermill in the
`python3` kernel, a real job id, metrics read back from the database) on the tiny model."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import REPO, metric_steps, run_stage, running_job, write_jsonl

GRPO = REPO / "method_templates" / "grpo_demo" / "training.ipynb"
MLX = REPO / "method_templates" / "mlx_demo" / "training.ipynb"


def _contract(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    tags = [cell.metadata.get("tags", []) for cell in nb.cells if cell.cell_type == "code"]
    assert tags[0] == ["parameters"] and tags[1] == ["deepe-setup"] and tags[-1] == ["deepe-train"]
    assert nb.cells[-1].source.splitlines()[-1] == "train_and_save(trainer, model, tokenizer, OUTPUT_DIR)"
    user_code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code"
                          and not cell.metadata.get("tags"))
    assert ".train(" not in user_code and "save_pretrained" not in user_code
    from deepe_widgets.scriptmode import load_stage_notebook
    from deepe_widgets.stagefiles import notebook_parameters

    sft = notebook_parameters(load_stage_notebook(REPO / "method_templates" / "sft_demo" / "training.ipynb"))
    params = notebook_parameters(load_stage_notebook(notebook))
    assert set(sft) <= set(params), set(sft) - set(params)


@pytest.mark.parametrize("notebook", [GRPO, MLX], ids=["grpo", "mlx"])
def test_demo_notebooks_follow_the_stage_contract(notebook):
    _contract(notebook)


# ---------------------------------------------------------------------------------------------
# GRPO-Demo


def test_grpo_demo_logs_rewards_and_kl_and_saves_an_adapter(home, tiny_model_dir, tmp_path):
    from deepe_widgets import jobs
    from deepe_widgets.demo_data import demo_gsm_rows

    run_dir = tmp_path / "run"
    job_id = running_job("GRPO-Demo", run_dir)
    output = run_dir / "output"
    log = run_stage(GRPO, run_dir, {
        "MODEL_PATH": str(tiny_model_dir), "DATASET_PATH": str(write_jsonl(tmp_path / "gsm.jsonl", demo_gsm_rows())),
        "OUTPUT_DIR": str(output), "JOB_ID": job_id, "MAX_STEPS": 2, "BATCH_SIZE": 4, "NUM_GENERATIONS": 4,
        "MAX_CONTENT_LENGTH": 16, "MAX_INPUT_LENGTH": 128, "SAVE_STEPS": 0, "BETA": 0.04, "LEARNING_RATE": 1e-3})

    metrics = metric_steps(job_id)
    functions = ["xmlcount_reward", "soft_format_reward", "strict_format_reward", "int_reward", "correctness_reward"]
    for name in ["reward", "reward_std", "kl", "loss", "learning_rate", "completions/mean_length",
                 *(f"rewards/{f}/mean" for f in functions)]:
        assert set(metrics.get(name, {})) == {1, 2}, (name, sorted(metrics))
    assert all(math.isfinite(v) for values in metrics.values() for v in values.values())
    assert "training succeeded: 2 steps" in log
    assert not re.search(r"^\[deepe\] \S+ \S+ WARNING", log, re.MULTILINE), log  # nothing adjusted or cut
    assert jobs.get_job(job_id).progress_step == 2

    # the adapter alone (no copy of a reference adapter), loadable by PEFT on the base model
    assert (output / "adapter_model.safetensors").is_file() and not (output / "ref").exists()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(output))
    record = nbformat.read(run_dir / "training.ipynb", as_version=4)
    assert record.metadata["deepe"]["status"] == "succeeded"


def test_grpo_demo_adjusts_the_generation_batch_instead_of_failing(home, tiny_model_dir, tmp_path):
    from deepe_widgets.demo_data import demo_gsm_rows

    run_dir = tmp_path / "run"
    job_id = running_job("GRPO-Demo", run_dir)
    log = run_stage(GRPO, run_dir, {
        "MODEL_PATH": str(tiny_model_dir), "DATASET_PATH": str(write_jsonl(tmp_path / "gsm.jsonl", demo_gsm_rows())),
        "OUTPUT_DIR": str(run_dir / "output"), "JOB_ID": job_id, "MAX_STEPS": 1, "MAX_SAMPLES": 8,
        "BATCH_SIZE": 3, "NUM_GENERATIONS": 2, "MAX_CONTENT_LENGTH": 8, "SAVE_STEPS": 0, "BETA": 0.0,
        # the tiny tokenizer spends 90 tokens on template and system prompt: 10 are left per question
        "MAX_INPUT_LENGTH": 100})
    assert "is not a multiple of NUM_GENERATIONS 2: generating 6 completions (3 prompts x 2)" in log
    assert "8 questions were cut to fit MAX_INPUT_LENGTH 100" in log
    metrics = metric_steps(job_id)
    assert 1 in metrics["reward"] and 1 in metrics["rewards/correctness_reward/mean"]
    assert "kl" not in metrics  # BETA 0: no reference pass


def _reward_functions() -> dict:
    """The notebook's reward cell, executed on its own (it needs only `re` and `math`)."""
    nb = nbformat.read(GRPO, as_version=4)
    source = next(cell.source for cell in nb.cells if "def correctness_reward" in cell.source)
    namespace = {"re": re, "math": math}
    exec(compile(source, str(GRPO), "exec"), namespace)
    return namespace


def test_grpo_demo_rewards_score_format_and_correctness():
    ns = _reward_functions()
    perfect = [{"role": "assistant", "content": "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>\n"}]
    loose = [{"role": "assistant", "content": "<reasoning>think</reasoning> <answer>7.0</answer>"}]
    wrong = [{"role": "assistant", "content": "<reasoning>\nguess\n</reasoning>\n<answer>\n1,000\n</answer>\n"}]
    plain = "the answer is eight"
    completions = [perfect, loose, wrong, plain]
    answers = ["7", "7", "7", "8"]
    assert ns["correctness_reward"](prompts=[None] * 4, completions=completions, answer=answers) == [2.0, 2.0, 0.0, 0.0]
    assert ns["int_reward"](completions=completions) == [0.5, 0.0, 0.5, 0.0]
    assert ns["strict_format_reward"](completions=completions) == [0.5, 0.0, 0.5, 0.0]
    assert ns["soft_format_reward"](completions=completions) == [0.5, 0.5, 0.5, 0.0]
    xml = ns["xmlcount_reward"](completions=completions)
    assert xml[0] == pytest.approx(0.5) and xml[3] == 0.0 and 0 <= xml[1] < xml[0]


# ---------------------------------------------------------------------------------------------
# MLX-Demo


def test_runtime_mlx_imports_without_mlx():
    code = ("import sys, deepe_widgets.runtime.mlx as r; "
            "assert not [m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_lm'))]; "
            "print(r.MLXTrainingArguments().output_dir)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "output"


def test_runtime_mlx_says_how_to_install_mlx(monkeypatch):
    from deepe_widgets.runtime import mlx as runtime_mlx

    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # as if mlx-lm were not installed
    with pytest.raises(ImportError, match=r"pip install mlx-lm.*mlx\[cpu\]"):
        runtime_mlx.require_mlx()


def test_mlx_demo_streams_losses_saves_a_loadable_adapter_and_resumes(home, tiny_model_dir, tmp_path):
    pytest.importorskip("mlx_lm")  # `pip install mlx-lm 'mlx[cpu]'` provides it on Linux
    from deepe_widgets import jobs
    from deepe_widgets.demo_data import demo_sft_rows

    run_dir = tmp_path / "run"
    output = run_dir / "output"
    dataset = write_jsonl(tmp_path / "sft.jsonl", demo_sft_rows())
    params = {"MODEL_PATH": str(tiny_model_dir), "DATASET_PATH": str(dataset), "OUTPUT_DIR": str(output),
              "MAX_STEPS": 3, "BATCH_SIZE": 4, "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 2, "LEARNING_RATE": 5e-3}
    job_id = running_job("MLX-Demo", run_dir)
    log = run_stage(MLX, run_dir, {**params, "JOB_ID": job_id})

    metrics = metric_steps(job_id)
    for name in ["loss", "learning_rate", "grad_norm", "tokens_per_second"]:
        assert set(metrics.get(name, {})) == {1, 2, 3}, (name, sorted(metrics))
    assert 0 in metrics["eval_loss"] and 2 in metrics["eval_loss"]
    assert 3 in metrics["train_loss"]
    assert all(math.isfinite(v) for values in metrics.values() for v in values.values())
    assert "training succeeded: 3 steps" in log
    job = jobs.get_job(job_id)
    assert (job.progress_step, job.progress_total) == (3, 3)
    assert (output / "checkpoint-2" / "trainer_state.json").is_file()

    # the adapter loads with mlx-lm onto the base model, and holds what was trained
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import generate, load

    saved = mx.load(str(output / "adapters.safetensors"))
    assert saved and all(name.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for name in saved)
    model, tokenizer = load(str(tiny_model_dir), adapter_path=str(output))
    loaded = dict(tree_flatten(model.parameters()))
    for name, value in saved.items():
        assert mx.array_equal(loaded[name], value), name
    assert any(mx.abs(value).sum().item() > 0 for name, value in saved.items() if name.endswith("lora_b"))
    assert isinstance(generate(model, tokenizer, "What is the capital of France?", max_tokens=3), str)

    # a later run into the same folder resumes from checkpoint-2 and trains steps 3 and 4 only
    resumed = running_job("MLX-Demo", tmp_path / "run2")
    log = run_stage(MLX, tmp_path / "run2", {**params, "MAX_STEPS": 4, "JOB_ID": resumed})
    assert f"resuming from {output / 'checkpoint-2'}" in log
    assert set(metric_steps(resumed)["loss"]) == {3, 4}
