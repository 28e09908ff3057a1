"""Script mode, the kernel side: run a user's own training script unchanged.

The script notebook (built by `deepe_widgets.scriptmode`) calls `prepare(...)` before the
script's code and `finish(...)` after it. `prepare`:

- attaches the metrics callback to every `transformers.Trainer` the script makes (TRL's
  trainers are subclasses), keeping the script's own callbacks;
- gives the script its command line: `sys.argv` is replaced (the kernel's own flags never
  reach the script), and when the script's parser runs, the platform's parameters are turned
  into the flags that parser has (Hugging Face names: `--output_dir`, `--max_steps`,
  `--model_name_or_path`, `--lora_r` …), or into the method's args template. LoRA flags go only
  with the task type of the model the script trains (`lora_task_type`: `--lora_task_type SEQ_CLS`
  for TRL's reward script); a script whose model cannot be placed gets none, and the log says so;
- writes the dataset as a folder holding `train.jsonl`, and the held-out rows (EVAL_FRACTION, or a
  `split` column) as `validation.jsonl`, which `datasets.load_dataset(folder)` reads as its
  `train` and `validation` splits; a parser with TRL's `--dataset_test_split` also gets the
  evaluation flags (`--eval_strategy steps --eval_steps N --eval_on_start true …`).

`finish` registers what the script left in OUTPUT_DIR, or trains a `trainer` it built but did
not train, and says clearly when there is neither.

Imports only the runtime package and the standard library at module level: transformers,
datasets and IPython are imported where they are needed.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import json
import linecache
import math
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import (
    HandedBack,
    _drop_duplicate_printer,
    evaluation_arguments,
    held_out_note,
    load_dataset_file,
    log_event,
    make_callback,
    newest_complete_checkpoint,
    split_held_out,
    train_and_save,
)

OUTPUT_RECORD = "deepe_output.json"
DATASET_FOLDER = "deepe_dataset"
DATASET_FILE_NAME = "train.jsonl"
# The held-out rows: `load_dataset(folder)` names this file's split "validation".
VALIDATION_FILE_NAME = "validation.jsonl"
VALIDATION_SPLIT = "validation"

# `{NAME}` in an args template; anything else in braces (a JSON value, say) is left as written.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Placeholders a template may use besides the parameters: the dataset as a file in the folder.
DERIVED_PLACEHOLDERS = ("DATASET_FILE",)

# Parameter -> the flags (Hugging Face / TRL names, preferred first) that take its value.
PARAMETER_FLAGS: dict[str, tuple[str, ...]] = {
    "MODEL_PATH": ("model_name_or_path",),
    "DATASET_PATH": ("dataset_name",),
    "OUTPUT_DIR": ("output_dir",),
    "MAX_STEPS": ("max_steps",),
    "EPOCHS": ("num_train_epochs",),
    "BATCH_SIZE": ("per_device_train_batch_size",),
    "GRAD_ACCUM_STEPS": ("gradient_accumulation_steps",),
    "LEARNING_RATE": ("learning_rate",),
    "WARMUP_STEPS": ("warmup_steps",),
    "MAX_GRAD_NORM": ("max_grad_norm",),
    "SAVE_STEPS": ("save_steps",),
    "LORA_RANK": ("lora_r",),
    "LORA_ALPHA": ("lora_alpha",),
    "LORA_DROPOUT": ("lora_dropout",),
    "LOAD_IN_4BIT": ("load_in_4bit",),
    "MAX_SEQ_LENGTH": ("max_length", "max_seq_length"),
    "MAX_INPUT_LENGTH": ("max_prompt_length",),
    "MAX_CONTENT_LENGTH": ("max_completion_length",),
    "NUM_GENERATIONS": ("num_generations",),
    "SEED": ("seed",),
}

# Evaluation flags a parser gets when it reads a held-out split by name (TRL's ScriptArguments has
# `--dataset_test_split`): without that flag the script would not pass an eval dataset, and a
# Trainer asked to evaluate without one refuses to start.
EVAL_SPLIT_FLAG = "dataset_test_split"
# ... or reads the held-out rows from a file (transformers' examples: `--validation_file`)
EVAL_FILE_FLAGS = ("validation_file", "eval_file", "eval_data_path", "val_data_path", "eval_dataset_path")

# The LoRA parameters: passed only to a script whose model the platform can place (`lora_task_type`).
LORA_PARAMETERS = ("LORA_RANK", "LORA_ALPHA", "LORA_DROPOUT")
# Flags of a parser that takes LoRA settings (TRL's ModelConfig has them all).
PEFT_FLAGS = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_task_type")
LORA_TASK_FLAG = "lora_task_type"

# peft's task type of the model a script trains, by the trainer it builds (the trainer decides: a PPO
# script loads a sequence classifier as its reward model, but trains a causal LM) ...
TRAINER_TASK_TYPES = {
    "RewardTrainer": "SEQ_CLS", "PRMTrainer": "TOKEN_CLS",
    **{name: "CAUSAL_LM" for name in (
        "SFTTrainer", "DPOTrainer", "ORPOTrainer", "CPOTrainer", "KTOTrainer", "BCOTrainer", "GRPOTrainer",
        "RLOOTrainer", "PPOTrainer", "OnlineDPOTrainer", "XPOTrainer", "NashMDTrainer", "GKDTrainer",
        "DistillationTrainer", "GOLDTrainer", "MiniLLMTrainer", "SimPOTrainer", "IterativeSFTTrainer")},
}
# ... else by the model class it loads (AutoModelForSequenceClassification, LlamaForCausalLM, ...).
MODEL_CLASS_TASK_TYPES = (("ForSequenceClassification", "SEQ_CLS"), ("ForCausalLM", "CAUSAL_LM"),
                          ("ForTokenClassification", "TOKEN_CLS"), ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
                          ("ForQuestionAnswering", "QUESTION_ANS"))
LORA_TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")

# Without a flag for these the script trains something else than asked: worth a warning.
ESSENTIAL_PARAMETERS = ("MODEL_PATH", "DATASET_PATH", "OUTPUT_DIR", "MAX_STEPS")

# Keys of the summary a trainer logs once at the end: they are not a training curve.
SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss",
                "epoch"}


class ScriptProducedNoModel(RuntimeError):
    """The script left no model in OUTPUT_DIR and there is no untrained `trainer` to train."""


class ScriptArgumentsRefused(RuntimeError):
    """The script's own parser refused the command line the platform built for it."""


class ScriptExited(RuntimeError):
    """The script called `sys.exit` with a failure status."""


@dataclass
class _ScriptState:
    script_path: str = ""
    parameters: dict = field(default_factory=dict)
    template_argv: list[str] | None = None  # from ARGS_TEMPLATE; None: match flag names
    extra_argv: list[str] = field(default_factory=list)  # EXTRA_ARGS given as flags ("--packing true")
    extra_args: dict = field(default_factory=dict)  # EXTRA_ARGS given as fields ({"packing": True})
    dataset_dir: str = ""
    held_out_rows: int = 0  # rows in the dataset folder's validation.jsonl
    argv_seen: list[list[str]] = field(default_factory=list)  # what each of the script's parsers got
    trainers: list = field(default_factory=list)
    callback: Any = None
    in_parse: bool = False
    # the LoRA task type of the script's model (`lora_task_type`), and what told it; None: not placed
    task_type: str | None = None
    task_reason: str = ""


_state = _ScriptState()
_originals: dict[str, Any] = {}


# ---------------------------------------------------------------- prepare

def prepare(script: str, parameters: dict) -> None:
    """Set the kernel up to run `script` unchanged with the stage's `parameters`.

    With an args template (ARGS_TEMPLATE) the argv is known now; without one it is built when the
    script's parser runs, from the flags that parser has. Either way it is printed, and
    `script_argv()` returns it afterwards."""
    global _state
    _state = _ScriptState(script_path=str(script), parameters=dict(parameters))
    values = dict(parameters)
    dataset = str(values.get("DATASET_PATH") or "")
    if dataset:
        target = Path(values.get("OUTPUT_DIR") or "output").resolve().parent / DATASET_FOLDER
        _state.dataset_dir = str(dataset_folder(dataset, target, int(values.get("MAX_SAMPLES") or 0),
                                                float(values.get("EVAL_FRACTION") or 0),
                                                int(values.get("SEED", 42))))
        validation = Path(_state.dataset_dir) / VALIDATION_FILE_NAME
        if validation.is_file():
            _state.held_out_rows = sum(1 for line in validation.open(encoding="utf-8") if line.strip())
    _state.task_type, _state.task_reason = lora_task_type(script_source(script))
    extras = values.get("EXTRA_ARGS") or ""
    if isinstance(extras, dict):  # the form's Extra arguments, `--extra key=value`: a flag each
        _state.extra_args = dict(extras)
        _state.extra_argv = extra_flags(_state.extra_args)
    else:
        _state.extra_argv = render_args_template(str(extras), _template_values())
    template = str(values.get("ARGS_TEMPLATE") or "").strip()
    if template:
        _state.template_argv = render_args_template(template, _template_values()) + _state.extra_argv
    # The kernel's own argv (`-f kernel.json`) must never reach the script's parser.
    sys.argv = [Path(script).name or "script.py"] + (_state.template_argv or _state.extra_argv)
    _install_parser_hook()
    _install_trainer_hook()
    _register_cell_magic()
    if _state.template_argv is not None:
        log_event(f"argv (from the method's args template): {shlex.join(sys.argv)}")
    else:
        log_event("argv: built from the flags the script's parser has, when it runs")


def _template_values() -> dict:
    values = dict(_state.parameters)
    if _state.dataset_dir:
        values["DATASET_PATH"] = _state.dataset_dir
        values["DATASET_FILE"] = str(Path(_state.dataset_dir) / DATASET_FILE_NAME)
    else:
        values.setdefault("DATASET_FILE", values.get("DATASET_PATH", ""))
    return values


def render_args_template(template: str, values: dict) -> list[str]:
    """`"--base_model {MODEL_PATH} --lr 3e-4"` -> argv tokens, placeholders filled from `values`.

    The template is split first, so a path with spaces stays one argument."""
    out = []
    for token in shlex.split(template):
        def fill(match):
            name = match.group(1)
            if name not in values:
                raise ValueError(f"the args template names {{{name}}}, which is not a parameter "
                                 f"(parameters: {', '.join(sorted(values))})")
            return _flag_value(values[name])
        out.append(PLACEHOLDER.sub(fill, token))
    return out


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------- the dataset

def dataset_folder(source: str | os.PathLike, target: str | os.PathLike, max_samples: int = 0,
                   eval_fraction: float = 0.0, seed: int = 42) -> Path:
    """A folder `load_dataset(folder)` reads: `target/train.jsonl` converted from a registered
    jsonl, json, csv or parquet file, and the held-out rows (`runtime.split_held_out`: a `split`
    column's validation/test rows, else `eval_fraction` of them drawn with `seed`) in
    `target/validation.jsonl`. `max_samples` above 0 caps the training rows only. A folder is
    handed on as it is."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        log_event(f"the dataset {source} is a folder: handed to the script as it is (no rows held out by the "
                  f"platform)")
        return source
    target.mkdir(parents=True, exist_ok=True)
    out, validation = target / DATASET_FILE_NAME, target / VALIDATION_FILE_NAME
    validation.unlink(missing_ok=True)  # a retry must not find the last attempt's held-out rows
    if source.suffix.lower() == ".jsonl" and max_samples <= 0 and eval_fraction <= 0 and \
            "split" not in load_dataset_file(str(source)).column_names:
        shutil.copyfile(source, out)  # a copy, not a link: the script cannot touch the registered file
        log_event(held_out_note(0, 0, eval_fraction, False))
    else:
        data = load_dataset_file(str(source))
        train, held = split_held_out(data, eval_fraction, seed)
        log_event(held_out_note(len(train), len(held), eval_fraction, "split" in data.column_names))
        if "split" in data.column_names:  # the files now say which rows are which
            train, held = train.remove_columns("split"), held.remove_columns("split")
        if max_samples > 0:
            train = train.select(range(min(max_samples, len(train))))
        train.to_json(str(out), lines=True, force_ascii=False)
        if len(held):
            held.to_json(str(validation), lines=True, force_ascii=False)
    files = out.name + (f" and {validation.name}" if validation.is_file() else "")
    log_event(f"dataset {source} handed to the script as {target} ({files})")
    return target


# ---------------------------------------------------------------- the script's parser

def _install_parser_hook() -> None:
    """Wrap ArgumentParser.parse_args / parse_known_args (HfArgumentParser and TrlParser are
    subclasses) so that the script's parser gets the platform's argv for the flags it has."""
    if "parse_known_args" in _originals:
        return
    _originals["parse_known_args"] = argparse.ArgumentParser.parse_known_args
    _originals["parse_args"] = argparse.ArgumentParser.parse_args

    def hooked(name):
        original = _originals[name]

        @functools.wraps(original)
        def parse(self, args=None, namespace=None):
            if _state.in_parse or not _wants_platform_argv(self, args):
                return original(self, args, namespace)
            argv = platform_argv(self)
            _state.argv_seen.append(argv)
            sys.argv = sys.argv[:1] + argv
            log_event(f"argv: {shlex.join(sys.argv)}")

            def refuse(message):
                raise ScriptArgumentsRefused(f"the script's parser refused the argv the platform built "
                                             f"({shlex.join(argv)}): {message}")

            _state.in_parse = True
            own_error = self.__dict__.get("error")
            self.error = refuse  # an instance attribute: argparse's own message, not an exit
            try:
                return original(self, argv, namespace)
            finally:
                if own_error is None:
                    del self.error
                else:
                    self.error = own_error
                _state.in_parse = False

        return parse

    argparse.ArgumentParser.parse_known_args = hooked("parse_known_args")
    argparse.ArgumentParser.parse_args = hooked("parse_args")


def _wants_platform_argv(parser, args) -> bool:
    """The script parses its command line: no args, `sys.argv[1:]` (TrlParser passes that), or
    `[]` (what notebooks pass to keep the kernel's argv out). IPython's own magics never."""
    if type(parser).__module__.startswith("IPython"):
        return False
    if args is None:
        return True
    try:
        args = list(args)
    except TypeError:
        return False
    return args == [] or args == sys.argv[1:]


def platform_argv(parser: argparse.ArgumentParser) -> list[str]:
    """The argv for `parser`: the args template when the method has one, else the platform's
    parameters under the flag names this parser has (plus EXTRA_ARGS, which win)."""
    if _state.template_argv is not None:
        return list(_state.template_argv)
    values = _template_values()
    argv, missing = flags_for_parser(parser, values)
    essential = [name for name in missing if name in ESSENTIAL_PARAMETERS
                 and (name != "MAX_STEPS" or values.get("MAX_STEPS", -1) > 0)]
    if essential:
        flags = ", ".join(f"{name} (--{PARAMETER_FLAGS[name][0]})" for name in essential)
        log_event(f"the script's parser has no flag for {flags}: it runs with its own defaults for them; "
                  f"give the method an args template with the script's own flag names "
                  f"(e.g. \"--base_model {{MODEL_PATH}}\")", "WARNING")
    return argv + (extra_flags(_state.extra_args, _actions_by_name(parser)) if _state.extra_args
                   else _state.extra_argv)


def extra_flags(extras: dict, actions: dict[str, tuple[str, argparse.Action]] | None = None) -> list[str]:
    """Extra arguments as flags: `--key value` each, a list as its items, in the form the parser's own
    flag takes (`--flag` alone for a store_true flag); a key the parser lacks is passed as written,
    so that its parser says what it does not know."""
    argv: list[str] = []
    for key, value in extras.items():
        found = (actions or {}).get(key)
        option = found[0] if found else f"--{key}"
        if found and (isinstance(found[1], (argparse._StoreTrueAction, argparse._StoreFalseAction))
                      or found[1].nargs == 0):
            argv.extend(_tokens(found[1], option, value))
        elif isinstance(value, list):
            argv.extend([option, *(_flag_value(item) for item in value)])
        elif isinstance(value, dict):
            argv.extend([option, json.dumps(value)])
        else:
            argv.extend([option, _flag_value(value)])
    return argv


def flags_for_parser(parser: argparse.ArgumentParser, values: dict) -> tuple[list[str], list[str]]:
    """(argv, parameters it found no flag for): each parameter under the first of its Hugging Face
    flag names that `parser` accepts, plus the platform's own flags (log every step, report to
    no tracker, no hub push, bf16 only where the card has it natively and fp16 on other CUDA cards,
    resume from a checkpoint)."""
    actions = _actions_by_name(parser)
    argv: list[str] = []
    missing: list[str] = []

    def add(name: str, value) -> bool:
        found = actions.get(name)
        if found is None:
            return False
        option, action = found
        argv.extend(_tokens(action, option, value))
        return True

    task_type = _parser_task_type(actions)
    for parameter, names in PARAMETER_FLAGS.items():
        if parameter not in values or (parameter in LORA_PARAMETERS and task_type is None):
            continue
        value = values[parameter]
        if parameter == "MAX_STEPS" and (not isinstance(value, int) or value <= 0):
            continue  # -1: train for EPOCHS
        if parameter == "SAVE_STEPS" and not value:
            if not add("save_strategy", "no"):
                missing.append(parameter)
            continue
        if parameter in ("MODEL_PATH", "DATASET_PATH") and not value:
            continue
        if parameter == "LOAD_IN_4BIT" and not value:
            continue
        if not any(add(name, value) for name in names):
            missing.append(parameter)
    lora_rank = values.get("LORA_RANK")
    if isinstance(lora_rank, int) and task_type is not None:
        add("use_peft", lora_rank > 0)
        if lora_rank > 0 and add(LORA_TASK_FLAG, task_type):
            log_event(f"LoRA on the {task_type} task type ({_state.task_reason})")
    elif isinstance(lora_rank, int) and lora_rank > 0 and any(flag in actions for flag in PEFT_FLAGS):
        log_event(f"no LoRA flags for the script: the platform cannot tell which kind of model it trains "
                  f"({_state.task_reason}), so it trains as its own defaults say")
    argv += evaluation_flags(actions, values)
    add("logging_steps", 1)
    add("report_to", "none")
    add("push_to_hub", False)
    chosen = _precision()  # bf16 only where the card has it natively, fp16 on other CUDA cards
    if chosen != "bf16":
        add("bf16", False)
    add("fp16", chosen == "fp16")
    resume = newest_complete_checkpoint(values.get("OUTPUT_DIR") or "output")
    if resume and "resume_from_checkpoint" in actions:
        add("resume_from_checkpoint", resume)
        log_event(f"resuming from {resume}")
    return argv, missing


def script_source(path: str | os.PathLike) -> str:
    """A script's Python text: a `.py` file's, or a notebook's code cells joined ("" when unreadable)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if path.suffix.lower() != ".ipynb":
        return text
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        return ""
    return "\n".join("".join(c.get("source", "")) if isinstance(c.get("source"), list) else c.get("source", "")
                     for c in cells if c.get("cell_type") == "code")


def lora_task_type(source: str) -> tuple[str | None, str]:
    """(peft task type of the model `source` trains, what told it): the trainer it builds
    (RewardTrainer: SEQ_CLS, SFTTrainer: CAUSAL_LM, …), else the model class it loads
    (AutoModelForSequenceClassification: SEQ_CLS, …), else the task type its own LoraConfig names.
    (None, why) when none or more than one type is named: the platform cannot place the model."""
    # magics and shell lines are not Python: blank them
    code = "\n".join("" if line.strip().startswith(("!", "%")) else line for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None, "its code does not parse"
    names = set()
    literals = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg == "task_type" and isinstance(node.value, ast.Constant):
            literals.add(str(node.value.value))
    trainers = {name: TRAINER_TASK_TYPES[name] for name in sorted(names) if name in TRAINER_TASK_TYPES}
    models = {name: task for name in sorted(names) for suffix, task in MODEL_CLASS_TASK_TYPES
              if name.endswith(suffix)}
    own = {name: name for name in literals | (names & set(LORA_TASK_TYPES)) if name in LORA_TASK_TYPES}
    for what, found in (("builds", trainers), ("loads", models), ("names the LoRA task type", own)):
        kinds = set(found.values())
        if len(kinds) == 1:
            return kinds.pop(), f"the script {what} {', '.join(found)}"
        if len(kinds) > 1:
            return None, f"the script {what} {', '.join(found)}, which train different kinds of model"
    return None, "it names no trainer or model class the platform knows, such as SFTTrainer, RewardTrainer or " \
                 "AutoModelForCausalLM"


def _parser_task_type(actions: dict[str, tuple[str, argparse.Action]]) -> str | None:
    """The script's task type, or where the source tells none, the one its parser's
    `--lora_task_type` allows as its only choice; None when the parser's choices exclude it."""
    found = actions.get(LORA_TASK_FLAG)
    choices = list(found[1].choices or []) if found else []
    if _state.task_type is None:
        if len(choices) == 1 and str(choices[0]) in LORA_TASK_TYPES:
            _state.task_reason = f"its parser's --{LORA_TASK_FLAG} allows only {choices[0]}"
            return str(choices[0])
        return None
    if choices and _state.task_type not in [str(c) for c in choices]:
        _state.task_reason += f", but its parser's --{LORA_TASK_FLAG} allows only {', '.join(map(str, choices))}"
        return None
    return _state.task_type


def evaluation_flags(actions: dict[str, tuple[str, argparse.Action]], values: dict) -> list[str]:
    """The flags that hand the script the held-out rows (validation.jsonl) and make it evaluate them as
    the built-ins do: before the first step and every EVAL_STEPS steps (0: about 10 a run), in batches
    of BATCH_SIZE. The rows go by the flag the parser has: a split name (TRL's `--dataset_test_split`)
    or a file (`--validation_file`, as transformers' examples read it); `--do_eval` where it has one."""
    if not _state.held_out_rows:
        return []
    file_flag = next((name for name in EVAL_FILE_FLAGS if name in actions), None)
    if EVAL_SPLIT_FLAG in actions:
        handed = {EVAL_SPLIT_FLAG: VALIDATION_SPLIT}
    elif file_flag and _state.dataset_dir:
        handed = {file_flag: str(Path(_state.dataset_dir) / VALIDATION_FILE_NAME)}
    else:
        log_event(f"the script's parser has no --{EVAL_SPLIT_FLAG}: the {_state.held_out_rows} held-out rows are "
                  f"in {VALIDATION_FILE_NAME} of its dataset folder (split \"{VALIDATION_SPLIT}\") for the script to "
                  f"read; no evaluation flags are passed (nor a --{EVAL_FILE_FLAGS[0]} to take the file)")
        return []
    batch = int(values.get("BATCH_SIZE") or 8)
    generations = values.get("NUM_GENERATIONS")
    if "num_generations" in actions and isinstance(generations, int) and generations > 0:
        batch = math.lcm(batch, generations)  # GRPO evaluates whole groups of completions
    wanted = {**handed, "do_eval": True, **evaluation_arguments(values.get("EVAL_STEPS") or 0, batch)}
    wanted.pop("prediction_loss_only")  # a script's own compute_metrics keeps its logits; without one
    # the Trainer keeps none anyway
    argv: list[str] = []
    for name, value in wanted.items():
        if name in actions:
            option, action = actions[name]
            argv.extend(_tokens(action, option, value))
    log_event(f"the {_state.held_out_rows} held-out rows go to the script as "
              f"{' '.join(argv[:2])}: it evaluates them while training")
    return argv


def _actions_by_name(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.Action]]:
    """`max_steps` -> ("--max_steps", action) for every long option (dashes or underscores)."""
    found: dict[str, tuple[str, argparse.Action]] = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                found.setdefault(option[2:].replace("-", "_"), (option, action))
    return found


def _tokens(action: argparse.Action, option: str, value) -> list[str]:
    if isinstance(action, argparse._StoreTrueAction):
        return [option] if value else []
    if isinstance(action, argparse._StoreFalseAction):
        return [option] if value is False else []
    if isinstance(action, (argparse._StoreConstAction, argparse._CountAction, argparse._HelpAction,
                           argparse._VersionAction, argparse._AppendConstAction)) or action.nargs == 0:
        return []
    if isinstance(value, bool) and action.type is bool and not value:
        return []  # `type=bool` reads any text as True: leave its default
    if action.choices is not None:
        try:
            typed = action.type(_flag_value(value)) if callable(action.type) else _flag_value(value)
        except (TypeError, ValueError):
            return []
        if typed not in action.choices and _flag_value(value) not in action.choices:
            return []
    return [option, _flag_value(value)]


def _precision() -> str:
    """`devices.precision` of the device this kernel trains on; fp32 where torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "fp32"
    from . import devices

    return devices.precision(devices.current_device())


# ---------------------------------------------------------------- the script's trainers

def _install_trainer_hook() -> None:
    """After every `transformers.Trainer.__init__` (TRL trainers call it through super()), add the
    platform's metrics callback once and remember the trainer."""
    try:
        import transformers
    except ImportError:
        log_event("transformers is not installed in this kernel: no metrics callback is attached", "WARNING")
        return
    trainer_class = transformers.Trainer
    if getattr(trainer_class.__init__, "_deepe_script_hook", False):
        return
    original = trainer_class.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _adopt(self)

    __init__._deepe_script_hook = True
    trainer_class.__init__ = __init__


def _adopt(trainer) -> None:
    from . import MetricsCallback

    if not any(t is trainer for t in _state.trainers):
        _state.trainers.append(trainer)
    handler = getattr(trainer, "callback_handler", None)
    if handler is None:
        return
    if any(isinstance(c, MetricsCallback) for c in handler.callbacks):
        _drop_duplicate_printer(trainer)
        return  # the script passed the platform's callback itself
    if _state.callback is None:
        _state.callback = make_callback(int(_state.parameters.get("JOB_ID") or 0))
    trainer.add_callback(_state.callback)
    _drop_duplicate_printer(trainer)  # the callback prints each step: the trainer's own print would repeat it
    _enforce_form(trainer, _state.callback)


def _enforce_form(trainer, callback) -> None:
    """What the form asked for and the script's command line could not carry: a metric every step
    (the live curve) and MAX_STEPS, applied through the callback."""
    args = getattr(trainer, "args", None)
    if args is None:
        return
    if str(getattr(args, "logging_strategy", "steps")) not in ("no", "IntervalStrategy.NO") and \
            getattr(args, "logging_steps", 1) != 1:
        callback.log_every_step = True
        log_event(f"the script logs every {args.logging_steps} steps: the platform logs every step for the "
                  f"live curve")
    max_steps = _state.parameters.get("MAX_STEPS", -1)
    if isinstance(max_steps, int) and max_steps > 0 and getattr(args, "max_steps", -1) != max_steps:
        callback.stop_at_step = max_steps
        log_event(f"the script's command line took no max-steps flag: the platform stops it at "
                  f"MAX_STEPS={max_steps}", "WARNING")


# ---------------------------------------------------------------- the script cell

def _register_cell_magic() -> None:
    """`%%deepe_script NAME`: run the cell as the script file NAME runs under `python NAME`."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.register_magic_function(run_script_cell, magic_kind="cell", magic_name="deepe_script")


def run_script_cell(line: str, cell: str) -> None:
    """Execute a script's source in the notebook's namespace as `__main__`, with `__file__` set and
    the script's own line numbers in tracebacks; `sys.exit(0)` ends it quietly."""
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    filename = _state.script_path or line.strip() or "script.py"
    if not Path(filename).is_file() or Path(filename).read_text(encoding="utf-8", errors="replace") != cell:
        # tracebacks read the lines from here (a `None` mtime keeps checkcache from dropping them)
        linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    folder = str(Path(filename).resolve().parent)
    if Path(folder).is_dir() and folder not in sys.path:
        sys.path.insert(0, folder)  # as `python script.py` does: its sibling modules import
    namespace["__name__"] = "__main__"
    namespace["__file__"] = filename
    try:
        exec(compile(cell, filename, "exec", dont_inherit=True), namespace)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return
        raise ScriptExited(f"the script exited with status {exc.code!r}") from None


# ---------------------------------------------------------------- finish

def model_kind(output_dir: str | os.PathLike) -> str | None:
    """"adapter" (a PEFT adapter), "full" (a model with its weights), or None."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    if (out / "adapter_config.json").is_file() and any(out.glob("adapter_model.*")):
        return "adapter"
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json")
    if (out / "config.json").is_file() and (any((out / w).is_file() for w in weights)
                                            or any(out.glob("model-*.safetensors"))):
        return "full"
    return None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "spiece.model")


def copy_tokenizer_files(model_path: str | os.PathLike, output_dir: str | os.PathLike) -> list[str]:
    """Copy the base model's tokenizer files into `output_dir` when the script saved none."""
    out, base = Path(output_dir), Path(model_path) if model_path else None
    if base is None or not base.is_dir():
        return []
    if any((out / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return []
    copied = []
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
            copied.append(name)
    if copied:
        log_event(f"the script saved no tokenizer: copied the base model's ({', '.join(copied)})")
    return copied


class _BaseTokenizerFiles:
    """Stands in for a tokenizer the script never named: saving copies the base model's files."""

    def __init__(self, model_path: str):
        self.model_path = model_path

    def save_pretrained(self, output_dir: str) -> None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        copy_tokenizer_files(self.model_path, output_dir)


def finish(output_dir: str, model_path: str = "", namespace: dict | None = None) -> dict:
    """Register what the script produced; returns (and writes to OUTPUT_DIR/deepe_output.json)
    `{kind, trained_by, argv, steps, logged, warning}`.

    A model in OUTPUT_DIR (adapter_config.json: an adapter; config.json + weights: a full model)
    is kept as it is, with the base model's tokenizer files copied in when the script saved none.
    Else a `trainer` the script built but did not train is trained and saved by the platform.
    Else a `ScriptProducedNoModel` error says what is missing."""
    if namespace is None:
        namespace = inspect.currentframe().f_back.f_globals
    try:
        return _register_output(Path(output_dir), model_path, namespace)
    finally:
        _close_sinks()


def _register_output(out: Path, model_path: str, namespace: dict) -> dict:
    if any(getattr(c, "stopped_for_hand_back", False) for c in _trainer_callbacks()):
        raise HandedBack("the worker is stopping: the script's training saved a checkpoint and the job resumes "
                         "from it on the next worker")
    kind = model_kind(out)
    trained_by = "script"
    if kind is None:
        trainer = namespace.get("trainer")
        trainer = trainer if _is_trainer(trainer) else None
        if trainer is not None and _has_trained(trainer):
            log_event("the script trained `trainer` but saved nothing in OUTPUT_DIR: the platform saves it")
            trainer.save_model(str(out))
            tokenizer = _first_present(namespace.get("tokenizer"), getattr(trainer, "processing_class", None))
            if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
                tokenizer.save_pretrained(str(out))
            trained_by = "script (saved by the platform)"
            kind = model_kind(out)
        elif trainer is not None:
            log_event("the script built `trainer` but did not train it: the platform trains and saves it")
            model = _first_present(namespace.get("model"), trainer.model)
            tokenizer = _first_present(namespace.get("tokenizer"), getattr(trainer, "processing_class", None),
                                       _BaseTokenizerFiles(model_path))
            train_and_save(trainer, model, tokenizer, str(out))
            trained_by = "platform"
            kind = model_kind(out)
        if kind is None:
            raise ScriptProducedNoModel(_no_model_message(out, trainer))
    copied = copy_tokenizer_files(model_path, out)
    steps, logged = training_progress()
    max_steps = _state.parameters.get("MAX_STEPS", -1)
    warning = warn_if_silent(logged, steps, max_steps if isinstance(max_steps, int) else -1)
    if warning:
        log_event(warning, "WARNING")
    record = {"kind": kind, "trained_by": trained_by, "argv": script_argv(), "steps": steps, "logged": logged,
              "tokenizer_copied": copied, "warning": warning, "script": _state.script_path}
    (out / OUTPUT_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    log_event(f"script mode: {'an adapter' if kind == 'adapter' else 'a full model'} in {out} "
              f"(trained by the {trained_by}, {steps} steps)")
    return record


def script_argv() -> list[str]:
    """The flags the script's parser got last (the template's when it never parsed)."""
    if _state.argv_seen:
        return list(_state.argv_seen[-1])
    return list(_state.template_argv or [])


def _is_trainer(obj) -> bool:
    return obj is not None and callable(getattr(obj, "train", None)) and hasattr(obj, "state")


def _has_trained(trainer) -> bool:
    return getattr(getattr(trainer, "state", None), "global_step", 0) > 0


def _no_model_message(out: Path, global_trainer) -> str:
    trained = [t for t in _state.trainers if _has_trained(t)]
    if global_trainer is None and not _state.trainers:
        message = (f"the script produced no model in OUTPUT_DIR and created no Trainer: save the trained "
                   f"model to OUTPUT_DIR ({out}), or leave an untrained `trainer` for the platform to train")
    elif trained:
        steps = max(t.state.global_step for t in trained)
        message = (f"the script trained ({steps} steps) but produced no model in OUTPUT_DIR ({out}): "
                   f"save it there, e.g. trainer.save_model(OUTPUT_DIR)")
        elsewhere = sorted({str(Path(t.args.output_dir).resolve()) for t in trained
                            if model_kind(t.args.output_dir) and Path(t.args.output_dir).resolve() != out.resolve()})
        if elsewhere:
            message += (f"; it saved to {', '.join(elsewhere)}: pass the output folder to the script with "
                        f"--output_dir (an args template: \"--output_dir {{OUTPUT_DIR}}\")")
    else:
        message = (f"the script produced no model in OUTPUT_DIR ({out}) and its Trainer never trained: call "
                   f"trainer.train() and save to OUTPUT_DIR, or name the trainer `trainer` at the top level so "
                   f"the platform trains it")
    checkpoint = newest_complete_checkpoint(out)
    if checkpoint:
        message += f" (the newest checkpoint is {checkpoint})"
    return message


def _first_present(*candidates):
    return next(c for c in candidates if c is not None)


def _trainer_callbacks() -> list:
    return [c for t in _state.trainers for c in getattr(getattr(t, "callback_handler", None), "callbacks", [])]


def _close_sinks() -> None:
    """Write the last metric rows and stop the writer threads (the kernel ends with the stage)."""
    from . import MetricSink

    for callback in {id(c): c for c in _trainer_callbacks()}.values():
        sink = getattr(callback, "sink", None)
        if isinstance(sink, MetricSink):
            sink.close()


def training_progress() -> tuple[int, int]:
    """(steps trained, training-metric logs seen) over every trainer the script made; evaluation
    logs and the end-of-training summary are not a training curve."""
    steps = max((getattr(t.state, "global_step", 0) for t in _state.trainers), default=0)
    logged = sum(1 for t in _state.trainers for entry in getattr(t.state, "log_history", [])
                 if any(key not in SUMMARY_KEYS and key != "step" and not key.startswith("eval_") for key in entry))
    return steps, logged


def warn_if_silent(logged: int, steps: int, max_steps: int = -1) -> str | None:
    """A warning for the job, or None: a training that logged no metric (no chart), or one that
    trained past MAX_STEPS. Script mode makes a Trainer log every step and stop at MAX_STEPS, so
    this is what is left: code outside any Trainer, or a trainer that never ran a step."""
    problems = []
    if steps > 0 and logged == 0:
        problems.append(f"the training ran {steps} steps but logged no training metric, so there is no loss "
                        f"curve (does it train outside a transformers Trainer?)")
    if max_steps and max_steps > 0 and steps > max_steps:
        problems.append(f"the training ran {steps} steps, past MAX_STEPS={max_steps}")
    return "; ".join(problems) or None


def restore() -> None:
    """Undo `prepare`'s hooks (a kernel runs one stage, so only tests need this)."""
    global _state
    if "parse_known_args" in _originals:
        argparse.ArgumentParser.parse_known_args = _originals.pop("parse_known_args")
        argparse.ArgumentParser.parse_args = _originals.pop("parse_args")
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        init = transformers.Trainer.__init__
        if getattr(init, "_deepe_script_hook", False):
            transformers.Trainer.__init__ = init.__wrapped__
    _state = _ScriptState()
