"""The words users read: parameter labels and values, metric names (which way a metric is better is
`metrics.direction`, the one rule the CLI reads too).

Internal names (`BATCH_SIZE`, `PromptInputColumn`, `mean_token_accuracy`) stay in the code and the
records; every view shows these instead.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import nbformat

from ..config import StageName
from ..stagefiles import find_parameters_cell, notebook_parameters

# Seed 004's form words first, then DeepExtension's other names.
PARAM_LABELS = {
    "EPOCHS": "Epochs", "BATCH_SIZE": "Batch Size", "LEARNING_RATE": "Learning Rate",
    "MAX_SEQ_LENGTH": "Max Tokens", "MAX_STEPS": "Max Steps (-1: use epochs)", "LORA_RANK": "LoRA Rank",
    "LORA_ALPHA": "LoRA Alpha", "LORA_DROPOUT": "LoRA Dropout", "SYSTEM_PROMPT": "System Prompt",
    "SAVE_STEPS": "Save Frequency (steps)",
    "GRAD_ACCUM_STEPS": "Gradient Accumulation Steps", "WARMUP_STEPS": "Warmup Steps",
    "MAX_GRAD_NORM": "Max Gradient Norm", "MAX_SAMPLES": "Max Samples (0: all rows)",
    "LOAD_IN_4BIT": "Load in 4-bit", "MAX_INPUT_LENGTH": "Max Prompt Tokens",
    "MAX_CONTENT_LENGTH": "Max Completion Tokens", "NUM_GENERATIONS": "Completions per Prompt",
    "LORA_TARGET_MODULES": "LoRA Target Modules", "BETA": "KL Penalty (beta)",
    "PromptInputColumn": "Prompt column", "PromptOutputColumn": "Response column",
    "MODEL_PATH": "Model folder", "DATASET_PATH": "Dataset file", "OUTPUT_DIR": "Output folder", "JOB_ID": "Job",
    "MAX_NEW_TOKENS": "Max New Tokens", "TEMPERATURE": "Temperature", "DTYPE": "Precision (dtype)",
    "ADAPTER_PATH": "Adapter folder", "REPORT_TO": "Also log to (trackers)", "SEED": "Seed",
    "EVAL_FRACTION": "Held-out Share (0: none)", "EVAL_STEPS": "Eval Every N Steps (0: ~10)",
    "EXTRA_ARGS": "Extra arguments",
    "ACTIVATION_CHECKPOINTING": "Activation Checkpointing (auto, true, false)", "USE_VLLM": "Generate with vLLM",
    "VLLM_GPU_MEMORY_UTILIZATION": "vLLM GPU Memory Share",
    # the job's own columns, in Compare
    "method": "Training Method", "base_model": "Base Model", "dataset": "Dataset",
}

METRIC_LABELS = {
    "loss": "Loss", "eval_loss": "Held-out loss", "train_loss": "Training loss (average)",
    "eval_perplexity": "Held-out perplexity", "perplexity": "Perplexity",
    # what an evaluation itself costs (Trainer.evaluate), and the evaluation stage's scores
    "eval_runtime": "Evaluation time (s)", "eval_samples_per_second": "Evaluation samples per second",
    "eval_steps_per_second": "Evaluation steps per second", "eval_num_tokens": "Tokens trained on (at evaluation)",
    "eval_exact_match": "Exact match",
    "eval_rougeL": "ROUGE-L", "eval_chrf": "chrF", "eval_bleu": "BLEU", "eval_answer_length": "Answer length (words)",
    "judge_win_rate": "Judge: wins over the base model", "judge_tie_rate": "Judge: ties",
    "judge_loss_rate": "Judge: losses to the base model",
    "grad_norm": "Gradient norm", "learning_rate": "Learning rate", "epoch": "Epoch", "reward": "Reward",
    "reward_std": "Reward spread (std)", "kl": "KL divergence", "mean_token_accuracy": "Token accuracy",
    "num_tokens": "Tokens seen", "entropy": "Entropy", "val_loss": "Validation loss",
    "tokens_per_second": "Tokens per second", "total_flos": "Total FLOs", "train_runtime": "Training time (s)",
    "train_samples_per_second": "Samples per second", "train_steps_per_second": "Steps per second",
    "completion_length": "Completion length", "frac_reward_zero_std": "Groups with equal rewards",
}

ACRONYMS = {"LORA": "LoRA", "KL": "KL", "LR": "LR", "GPU": "GPU", "ID": "ID", "4BIT": "4-bit", "DPO": "DPO",
            "PPO": "PPO", "GRPO": "GRPO", "SNR": "SNR"}
# shown first, in this order; a held-out metric (`eval_<name>`) right after its training twin
KEY_METRICS = ("loss", "perplexity", "reward", "val_loss")
HELD_OUT_PREFIX = "eval_"


def param_label(name: str) -> str:
    """"Batch Size" for BATCH_SIZE; an unknown name is spelled out ("MY_PARAM" -> "My Param")."""
    if name in PARAM_LABELS:
        return PARAM_LABELS[name]
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").split()
    return " ".join(ACRONYMS.get(w.upper(), w.capitalize()) for w in words) or name


def short_label(name: str) -> str:
    """The label without its hint, for sentences: "Max Steps" rather than "Max Steps (-1: use epochs)"."""
    return re.sub(r"\s*\(.*\)$", "", param_label(name))


def humanize(message: str) -> str:
    """A core message with every parameter name in it replaced by the words the form shows
    ("LEARNING_RATE must be …" -> "Learning Rate must be …")."""
    for name in sorted(PARAM_LABELS, key=len, reverse=True):
        if name.isupper() or name[0].isupper():
            message = re.sub(rf"\b{re.escape(name)}\b", short_label(name), message)
    return message


def show_value(value) -> str:
    """A parameter value as a person reads it: yes/no, 0.0002 rather than 0.00020000000000000001."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, (list, tuple)):
        return ", ".join(show_value(v) for v in value) or "(none)"
    return str(value)


def metric_label(name: str) -> str:
    """A metric in words: "Held-out loss" for eval_loss, "Reward: correctness reward mean" for a TRL
    reward function's, "Held-out reward: margins" for DPO's eval_rewards/margins."""
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    if name.startswith(HELD_OUT_PREFIX) and len(name) > len(HELD_OUT_PREFIX):  # a trainer's held-out twin
        base = re.sub(r"^held_?out_", "", name[len(HELD_OUT_PREFIX):])  # sentence-transformers' "eval_heldout_…"
        words = metric_label(base)
        lowered = words[:1].lower() + words[1:] if words[1:2].islower() else words  # "KL" stays
        return "Held-out " + lowered
    if name.startswith("bench_") and name.endswith(("_acc", "_acc_stderr")):  # the benchmark suite's, per task
        task, _sep, tail = name[len("bench_"):].rpartition("_acc")
        return f"Benchmark {task.replace('_', ' ')}: accuracy" + (" (standard error)" if tail else "")
    if name.startswith("rewards/"):  # TRL: one reward function's mean or std
        parts = name.split("/")[1:]
        return "Reward: " + " ".join(p.replace("_", " ") for p in parts)
    return name.replace("_", " ").replace("/", " / ").capitalize()


def metric_order(names) -> list[str]:
    """Key metrics (loss, perplexity, reward, validation loss) first, then the rest alphabetically;
    each held-out metric (`eval_loss`) right after its training twin (`loss`), so their charts sit
    side by side."""
    def key(name: str):
        held_out = name.startswith(HELD_OUT_PREFIX) and len(name) > len(HELD_OUT_PREFIX)
        base = name[len(HELD_OUT_PREFIX):] if held_out else name
        rank = KEY_METRICS.index(base) if base in KEY_METRICS else len(KEY_METRICS)
        return rank, base, held_out

    return sorted(names, key=key)


@functools.lru_cache(maxsize=64)
def _training_notebook(path: str, mtime: float) -> tuple[dict, str] | None:
    """(parameters with their help, the code outside the parameters cell) of a stage notebook;
    cached by path and modification time."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # unreadable or not a notebook (a .py script): nothing to say
        return None
    index = find_parameters_cell(nb)
    body = "\n".join(c.source for i, c in enumerate(nb.cells) if i != index and c.cell_type == "code")
    return notebook_parameters(nb), body


def _notebook_of(method) -> tuple | None:
    info = (getattr(method, "stages", None) or {}).get(StageName.TRAINING) or {}
    path = info.get("file")
    if not path or not str(path).endswith(".ipynb") or not Path(path).is_file():
        return None
    return _training_notebook(str(path), Path(path).stat().st_mtime)


def parameter_help(method) -> dict[str, str]:
    """Each parameter's comment in the method's `parameters` cell ("tokens per training example")."""
    found = _notebook_of(method)
    return {k: v.get("help", "") for k, v in found[0].items()} if found else {}


def used_parameters(method) -> set[str] | None:
    """The parameters the method's code reads outside its `parameters` cell (SFT-Demo never reads
    NUM_GENERATIONS); None when that cannot be told (a script gets every one as a flag)."""
    found = _notebook_of(method)
    if not found:
        return None
    params, body = found[0], found[1]
    return {name for name in params if re.search(rf"\b{re.escape(name)}\b", body)}



