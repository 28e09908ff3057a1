"""Training parameters: `--param key=value` parsing, typing by the notebook's defaults, range checks."""

from __future__ import annotations

import argparse
import ast
import json
import math
import re

from .errors import DeepeError

# Values no training can use (errors) — seed 004's "typical ranges" are warnings in the form.
POSITIVE_INT = ("BATCH_SIZE", "GRAD_ACCUM_STEPS", "LORA_RANK", "MAX_SEQ_LENGTH", "NUM_GENERATIONS",
                "MAX_INPUT_LENGTH", "MAX_CONTENT_LENGTH")
NON_NEGATIVE = ("WARMUP_STEPS", "SAVE_STEPS", "MAX_SAMPLES", "LORA_DROPOUT", "MAX_GRAD_NORM", "LORA_ALPHA",
                "NUM_GPUS", "NUM_CPUS", "MEMORY_GB", "STAGE_TIMEOUT", "EVAL_FRACTION", "EVAL_STEPS")
TYPICAL = {  # name -> (low, high) from seed 004's table
    "EPOCHS": (1, 50), "BATCH_SIZE": (2, 64), "LEARNING_RATE": (1e-6, 1e-3), "MAX_SEQ_LENGTH": (512, 4096),
}
PLATFORM_SET = ("MODEL_PATH", "DATASET_PATH", "OUTPUT_DIR", "JOB_ID")
# What a stage asks of the node that runs it (the ray executor's entrypoint resources): any method
# takes them, a method's parameters cell may set its own defaults.
RESOURCE_DEFAULTS = {"NUM_GPUS": "0.0", "NUM_CPUS": "1.0", "MEMORY_GB": "0.0"}
# Limits any method's job takes: STAGE_TIMEOUT, seconds a stage may run (0: no limit; not given:
# the job kind's default, `executors.STAGE_TIMEOUT_DEFAULTS`).
LIMIT_DEFAULTS = {"STAGE_TIMEOUT": "0.0"}

# Hugging Face / TRL argument names -> the workbench's parameter, so `--param num_train_epochs=3`
# means what it means in a transformers script.
HF_ALIASES = {
    "num_train_epochs": "EPOCHS", "per_device_train_batch_size": "BATCH_SIZE",
    "gradient_accumulation_steps": "GRAD_ACCUM_STEPS", "lora_r": "LORA_RANK", "r": "LORA_RANK",
    "max_seq_length": "MAX_SEQ_LENGTH", "max_length": "MAX_SEQ_LENGTH", "warmup_steps": "WARMUP_STEPS",
    "max_grad_norm": "MAX_GRAD_NORM", "save_steps": "SAVE_STEPS", "max_completion_length": "MAX_CONTENT_LENGTH",
    "max_prompt_length": "MAX_INPUT_LENGTH", "num_generations": "NUM_GENERATIONS", "load_in_4bit": "LOAD_IN_4BIT",
    "model_name_or_path": "MODEL_PATH", "dataset_name": "DATASET_PATH", "output_dir": "OUTPUT_DIR",
    "eval_steps": "EVAL_STEPS", "gradient_checkpointing": "ACTIVATION_CHECKPOINTING",
    "activation_checkpointing": "ACTIVATION_CHECKPOINTING", "use_vllm": "USE_VLLM",
    "vllm_gpu_memory_utilization": "VLLM_GPU_MEMORY_UTILIZATION",
}

# ACTIVATION_CHECKPOINTING: "auto" (on with CUDA for models over 1B parameters, `runtime.devices`) or a
# yes/no, kept as True/False in the record whichever way it was spelt.
CHECKPOINTING_WORDS = {"auto": "auto", "true": True, "1": True, "yes": True, "on": True,
                       "false": False, "0": False, "no": False, "off": False}


# Names that look like they hold a secret: a parameter lands in the executed notebook, a record anyone may
# read, so secrets travel as environment variables. Whole words only: MAX_NEW_TOKENS and TOKENIZER pass.
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD")
# Parameters a training reads as numbers: a method whose parameters cell gives one a string or None is
# refused when registered (`--param batch_size=4` would stay the text "4").
NUMERIC = POSITIVE_INT + NON_NEGATIVE + ("LEARNING_RATE", "EPOCHS", "MAX_STEPS")


def looks_secret(name: str) -> bool:
    """Whether a parameter name reads like a credential (HF_TOKEN, wandbApiKey, DB_PASSWORD)."""
    words = re.split(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])", name)
    return any(word.upper().endswith(SECRET_WORDS) for word in words if word)


def check_not_secret(name: str) -> None:
    """Refuse a parameter whose name looks secret, saying how secrets travel instead."""
    if looks_secret(name):
        raise DeepeError(f"parameter {name!r} looks like a secret; parameters are written into the run's record, "
                         f"which anyone may read: pass secrets as environment variables of the worker "
                         f"(e.g. HF_TOKEN) and read them with os.environ in the notebook", field=name)


def check_defaults(defaults: dict[str, str]) -> None:
    """Refuse a parameters cell whose default for a numeric parameter is not a number."""
    for name in NUMERIC:
        if name in defaults:
            value = default_value(defaults[name])
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DeepeError(f"the parameters cell sets {name} = {defaults[name]}, but {name} is a number: "
                                 f"give it a numeric default (e.g. {name} = 1)", field="params")


def aliases_of(name: str) -> list[str]:
    """The Hugging Face names that also set parameter `name`."""
    return [alias for alias, target in HF_ALIASES.items() if target == name]


def normalise(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """`["max_steps=5", …]` -> `{"max_steps": "5"}`."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise DeepeError(f"--param {item!r} must look like key=value", field="params")
        key, value = item.split("=", 1)
        if not key.strip():
            raise DeepeError(f"--param {item!r} has no key", field="params")
        if key.strip() in out:
            raise DeepeError(f"--param {key.strip()} is given twice; give each parameter once", field="params")
        out[key.strip()] = value
    return out


# The parameter that carries a training's extra arguments: fields of the trainer's config the form does not
# show (`--extra key=value`, the form's Extra arguments box), as a dict; a script gets them as flags.
EXTRA_ARGS = "EXTRA_ARGS"
# Config fields the platform sets itself: where the model goes, that nothing is uploaded, which run
# resumes, what code is trusted. An extra argument never overrides them.
PLATFORM_FIELDS = ("output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "push_to_hub", "hub_model_id",
                   "hub_token", "hub_strategy", "hub_private_repo", "trust_remote_code", "model_init_kwargs",
                   "ref_model_init_kwargs", "deepspeed")


def parse_extra_args(items: list[str] | str | None, flag: str = "--extra") -> dict:
    """`["packing=true", "optim=adamw_torch"]` (or the same as lines of text; blank lines and `#` comments
    skipped) -> `{"packing": True, "optim": "adamw_torch"}`: each value a JSON literal where it parses
    as one (numbers, true/false, null, lists, objects, quoted text), else the text as written."""
    lines = items.splitlines() if isinstance(items, str) else list(items or [])
    out: dict = {}
    for line in lines:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DeepeError(f"{flag} {item!r} must look like key=value (e.g. packing=true)", field=EXTRA_ARGS)
        if not key.isidentifier():
            raise DeepeError(f"{flag} {item!r}: {key!r} is not a field name (letters, digits and _)",
                             field=EXTRA_ARGS)
        if key in out:
            raise DeepeError(f"{flag} {key} is given twice; give each extra argument once", field=EXTRA_ARGS)
        try:
            out[key] = json.loads(raw.strip())
        except ValueError:
            out[key] = raw.strip()
    return out


def extra_args_lines(extras) -> str:
    """A dict of extra arguments as the lines `parse_extra_args` reads back (the form's box)."""
    if not isinstance(extras, dict):
        return str(extras or "")

    def shown(value) -> str:
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                return value  # plain text reads back as itself
        return json.dumps(value)  # quoted where the text would read back as a number, true, …

    return "\n".join(f"{key}={shown(value)}" for key, value in extras.items())


def check_extra_arg_names(extras: dict, defaults: dict[str, str]) -> None:
    """Refuse an extra argument that is a parameter of the method (`learning_rate`: LEARNING_RATE has
    its own field and flag) or a field the platform sets (`output_dir`)."""
    by_norm = {normalise(name): name for name in {**RESOURCE_DEFAULTS, **LIMIT_DEFAULTS, **defaults}}
    for alias, target in HF_ALIASES.items():
        if target in defaults:
            by_norm.setdefault(normalise(alias), target)
    for key in extras:
        if looks_secret(key):
            raise DeepeError(f"extra argument {key!r} looks like a secret; it would be written into the run's "
                             f"record: pass secrets as environment variables of the worker", field=EXTRA_ARGS)
        if key in PLATFORM_FIELDS:
            raise DeepeError(f"extra argument {key!r} is set by the platform and cannot be given", field=EXTRA_ARGS)
        name = by_norm.get(normalise(key))
        if name and name != EXTRA_ARGS:
            raise DeepeError(f"extra argument {key!r} is the parameter {name}: set it with --param "
                             f"{name.lower()}=… (or its field in the form)", field=EXTRA_ARGS)


def default_value(source: str):
    """The value a `parameters` cell's default (source text) stands for."""
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


_default_value = default_value  # the name the widgets used


def coerce(name: str, raw, default_source: str):
    """`raw` converted to the type of the notebook's default for `name`."""
    default = default_value(default_source)
    if not isinstance(raw, str):
        value = raw
    elif isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            value = True
        elif low in ("0", "false", "no", "off"):
            value = False
        else:
            raise DeepeError(f"{name} must be true or false, not {raw!r}", field=name)
    elif isinstance(default, int):
        try:
            value = int(raw.strip())
        except ValueError:
            raise DeepeError(f"{name} must be a whole number, not {raw!r}", field=name) from None
    elif isinstance(default, float):
        try:
            value = float(raw.strip())
        except ValueError:
            raise DeepeError(f"{name} must be a number, not {raw!r}", field=name) from None
    elif isinstance(default, str):
        value = raw
    else:
        value = default_value(raw)
    if isinstance(default, bool) and not isinstance(value, bool):
        raise DeepeError(f"{name} must be true or false, not {value!r}", field=name)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise DeepeError(f"{name} must be a finite number, not {raw!r}", field=name)
    return value


def resolve(overrides: dict, defaults: dict[str, str]) -> dict:
    """Overrides keyed by any spelling (`max_steps`, `prompt_input_column`) -> canonical, typed, checked."""
    known = ", ".join(sorted(n.lower() for n in defaults if n not in PLATFORM_SET))
    defaults = {**RESOURCE_DEFAULTS, **LIMIT_DEFAULTS, **defaults}
    by_norm = {normalise(name): name for name in defaults}
    for alias, target in HF_ALIASES.items():  # a method's own parameter of that name wins
        if target in defaults:
            by_norm.setdefault(normalise(alias), target)
    out = {}
    for key, raw in overrides.items():
        check_not_secret(key)
        name = by_norm.get(normalise(key))
        if name in out:
            raise DeepeError(f"{key!r} sets {name}, which is given twice", field=name)
        if name is None:
            raise DeepeError(f"unknown parameter {key!r}; this method takes: {known}", field="params")
        if name in PLATFORM_SET:
            raise DeepeError(f"{name} is set by the platform and cannot be given", field=name)
        out[name] = coerce(name, raw, defaults[name])
    check_ranges(out)
    return out


def check_ranges(values: dict) -> None:
    """Refuse values no training can use."""
    for name in POSITIVE_INT:
        if name in values and (not isinstance(values[name], int) or values[name] < 1):
            raise DeepeError(f"{name} must be at least 1, not {values[name]!r}", field=name)
    for name in NON_NEGATIVE:
        if name in values and values[name] < 0:
            raise DeepeError(f"{name} must not be negative, not {values[name]!r}", field=name)
    if "LEARNING_RATE" in values and not 0 < values["LEARNING_RATE"] < 1:
        raise DeepeError(f"LEARNING_RATE must be between 0 and 1, not {values['LEARNING_RATE']!r}",
                         field="LEARNING_RATE")
    if "LORA_DROPOUT" in values and values["LORA_DROPOUT"] >= 1:
        raise DeepeError(f"LORA_DROPOUT must be below 1, not {values['LORA_DROPOUT']!r}", field="LORA_DROPOUT")
    if "EVAL_FRACTION" in values and values["EVAL_FRACTION"] >= 1:
        raise DeepeError(f"EVAL_FRACTION must be below 1 (a share of the rows held out; 0: none), not "
                         f"{values['EVAL_FRACTION']!r}", field="EVAL_FRACTION")
    if "EPOCHS" in values and values["EPOCHS"] <= 0:
        raise DeepeError(f"EPOCHS must be above 0, not {values['EPOCHS']!r}", field="EPOCHS")
    if "ACTIVATION_CHECKPOINTING" in values:
        values["ACTIVATION_CHECKPOINTING"] = checkpointing_setting(values["ACTIVATION_CHECKPOINTING"])
    if "VLLM_GPU_MEMORY_UTILIZATION" in values and not 0 < values["VLLM_GPU_MEMORY_UTILIZATION"] <= 1:
        raise DeepeError(f"VLLM_GPU_MEMORY_UTILIZATION must be above 0 and at most 1 (the share of the GPU's "
                         f"memory vLLM takes), not {values['VLLM_GPU_MEMORY_UTILIZATION']!r}",
                         field="VLLM_GPU_MEMORY_UTILIZATION")
    if "MAX_STEPS" in values and (values["MAX_STEPS"] == 0 or values["MAX_STEPS"] < -1):
        raise DeepeError(f"MAX_STEPS must be a positive number of steps, or -1 to train for EPOCHS, "
                         f"not {values['MAX_STEPS']!r}", field="MAX_STEPS")


def checkpointing_setting(value):
    """ACTIVATION_CHECKPOINTING as given (True, "true", "auto", "off", …) -> "auto", True or False;
    anything else refused by its field."""
    if isinstance(value, bool):
        return value
    chosen = CHECKPOINTING_WORDS.get(str(value).strip().lower()) if isinstance(value, (str, int)) else None
    if chosen is None:
        raise DeepeError(f"ACTIVATION_CHECKPOINTING must be auto, true or false, not {value!r} (auto: on with "
                         f"a CUDA GPU for models over 1B parameters)", field="ACTIVATION_CHECKPOINTING")
    return chosen


def warnings_for(values: dict) -> list[str]:
    """Seed 004's typical ranges: values outside them are allowed but worth a word."""
    out = []
    for name, (low, high) in TYPICAL.items():
        value = values.get(name)
        if isinstance(value, (int, float)) and not low <= value <= high:
            out.append(f"{name}={value} is outside the typical range {low}–{high}")
    return out


# --- numbers on the command line: argparse types whose message says what is wanted ---------------

MAX_ID = 2**31 - 1  # the largest job id (PostgreSQL's integer) and the largest count worth asking for


def cli_int(minimum: int = 1, maximum: int = MAX_ID):
    """An argparse type: a whole number from `minimum` to `maximum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be a whole number from {minimum} to {maximum}, not {text!r}")
        return value
    return parse


def cli_job_id(text: str) -> int:
    """An argparse type: a job id."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"job id must be a number, not {text!r}") from None
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"job id must be a number from 1 to {MAX_ID}, not {text!r}")
    return value


def cli_port(text: str) -> int:
    """An argparse type: a TCP port a server can bind (1-65535)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {text!r}")
    return value


def cli_seconds(above_zero: bool = True):
    """An argparse type: a finite number of seconds, above 0 (or at least 0)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (above_zero and value == 0):
            raise argparse.ArgumentTypeError(f"must be a number of seconds {'above' if above_zero else 'from'} 0, "
                                             f"not {text!r}")
        return value
    return parse
