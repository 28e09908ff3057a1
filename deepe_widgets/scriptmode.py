"""Script mode, the workbench side: a training script that trains and saves by itself runs unchanged.

A `.py` or `.ipynb` stage file with no cell tagged `parameters` and no DeepExtension marker
lines is a *script*. `script_notebook` wraps it for papermill: a parameters cell, a platform
cell (`deepe_widgets.runtime.script.prepare`: metrics callback, command line, dataset folder),
the script's own code (a `.py` file as one `%%deepe_script` cell run as `__main__`; a
notebook's cells as they are), and a platform cell (`finish`) that registers what the script
left in OUTPUT_DIR. `offline_problems` reads a script for what cannot work on a worker with no
network; `check_args_template` checks a method's `--args` template.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from pathlib import Path

import nbformat

from . import stagefiles
from .config import StageName
from .errors import DeepeError
from .runtime.script import DERIVED_PLACEHOLDERS, OUTPUT_RECORD, PLACEHOLDER  # the kernel side defines them

__all__ = ["DERIVED_PLACEHOLDERS", "OUTPUT_RECORD", "PLACEHOLDER", "STANDARD_PARAMETERS", "check_args_template",
           "is_script", "is_script_notebook", "load_stage_notebook", "offline_problems", "read_script_output",
           "script_notebook", "suggest_args_template", "template_placeholders"]

SCRIPT_TAG = "deepe-script"

# name -> (default, comment): DeepExtension's names, the form's, the platform's, and script mode's own.
STANDARD_PARAMETERS: dict[str, tuple[object, str]] = {
    "MODEL_PATH": ("", "base model folder (--model_name_or_path)"),
    "DATASET_PATH": ("", "dataset file; the script gets a folder with train.jsonl and validation.jsonl "
                         "(--dataset_name)"),
    "OUTPUT_DIR": ("output", "where the script saves its model (--output_dir)"),
    "MAX_STEPS": (-1, "-1: train for EPOCHS instead (--max_steps)"),
    "EPOCHS": (1, "--num_train_epochs"),
    "BATCH_SIZE": (4, "--per_device_train_batch_size"),
    "GRAD_ACCUM_STEPS": (1, "--gradient_accumulation_steps"),
    "LEARNING_RATE": (2e-4, "--learning_rate"),
    "WARMUP_STEPS": (0, "--warmup_steps"),
    "MAX_GRAD_NORM": (1.0, "--max_grad_norm"),
    "SAVE_STEPS": (50, "checkpoint every N steps, 0: none (--save_steps / --save_strategy no)"),
    "LORA_RANK": (8, "--lora_r; above 0 also --use_peft true and --lora_task_type (the task type of the "
                      "script's model: none of the LoRA flags when it cannot be told)"),
    "LORA_ALPHA": (16, "--lora_alpha"),
    "LORA_DROPOUT": (0.05, "--lora_dropout"),
    "LOAD_IN_4BIT": (False, "--load_in_4bit"),
    "MAX_SEQ_LENGTH": (512, "--max_length (or --max_seq_length)"),
    "MAX_INPUT_LENGTH": (256, "--max_prompt_length (RL methods)"),
    "MAX_CONTENT_LENGTH": (256, "--max_completion_length (RL methods)"),
    "NUM_GENERATIONS": (4, "--num_generations (RL methods)"),
    "MAX_SAMPLES": (0, "0: every row of the dataset (the training rows, after the held-out ones)"),
    "EVAL_FRACTION": (0.1, "share of rows held out as validation.jsonl (0: none; a `split` column's "
                           "validation/test rows instead)"),
    "EVAL_STEPS": (0, "--eval_steps, with --dataset_test_split validation (0: about 10 evaluations a run)"),
    "SEED": (42, "--seed; also draws the held-out rows"),
    "JOB_ID": (0, "set by the platform; 0 for a local test run"),
    "ARGS_TEMPLATE": ("", "the script's own flags, e.g. \"--base_model {MODEL_PATH}\"; empty: Hugging Face names"),
    "EXTRA_ARGS": ("", "added after the platform's flags (they win): {\"packing\": True} gives --packing true "
                       "(the Extra arguments box, --extra), or flags as text, e.g. \"--packing true\""),
}

PREPARE_SOURCE = """\
# Platform cell (script mode): the metrics callback goes into every Trainer the script makes,
# the parameters become the script's command line, the dataset a folder load_dataset reads.
import deepe_widgets.runtime.script
deepe_widgets.runtime.script.prepare({script!r}, dict({names}))"""

FINISH_SOURCE = """\
# Platform cell (script mode): register the model the script saved in OUTPUT_DIR
# (or train a `trainer` it built but did not train).
deepe_output = deepe_widgets.runtime.script.finish(OUTPUT_DIR, MODEL_PATH)"""


# ---------------------------------------------------------------- what is a script

def _parameters_tagged_py(text: str) -> bool:
    """A jupytext `.py` (percent or light format) with a cell tagged `parameters`."""
    return re.search(r"^#\s*(%%|\+).*tags\s*=\s*\[[^\]]*[\"']parameters[\"']", text, re.MULTILINE) is not None


def _has_marker(text: str) -> bool:
    return any(line.strip() in (stagefiles.BEGIN_MARKER, stagefiles.END_MARKER) for line in text.splitlines())


def is_script(source: nbformat.NotebookNode | str | os.PathLike) -> bool:
    """True for a `.py` or `.ipynb` with no cell tagged `parameters` and no DeepExtension marker
    lines: code that trains and saves by itself. `source` is a notebook, a path, or file text
    (a notebook's JSON or Python source)."""
    if isinstance(source, os.PathLike):
        source = _read_source(Path(source))
    if isinstance(source, str):
        if source.lstrip().startswith("{"):
            try:
                source = nbformat.reads(source, as_version=4)
            except Exception:
                return False
        else:
            return not _parameters_tagged_py(source) and not _has_marker(source)
    if stagefiles.find_parameters_cell(source) is not None:
        return False
    return not any(_has_marker(cell.source) for cell in source.cells if cell.cell_type == "code")


def _read_source(path: Path) -> nbformat.NotebookNode | str:
    """The file as a notebook (`.ipynb`) or Python text (`.py`); DeepeError for what is not either."""
    if not path.is_file():
        raise DeepeError(f"stage file {str(path)!r} does not exist", field=StageName.TRAINING)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DeepeError(f"stage file {str(path)!r} is not UTF-8 text", field=StageName.TRAINING) from None
    if path.suffix.lower() == ".ipynb":
        try:
            return nbformat.reads(text, as_version=4)
        except Exception as exc:
            raise DeepeError(f"stage file {str(path)!r} is not a valid notebook: "
                             f"{str(exc).splitlines()[0][:200]}", field=StageName.TRAINING) from None
    if path.suffix.lower() != ".py":
        raise DeepeError(f"stage file {str(path)!r} must be a .ipynb notebook or a .py file",
                         field=StageName.TRAINING)
    return text


# ---------------------------------------------------------------- the script notebook

def _parameters_source(args_template: str) -> str:
    lines = ["# Parameters (script mode): the platform turns them into the script's command line."]
    for name, (default, comment) in STANDARD_PARAMETERS.items():
        value = args_template if name == "ARGS_TEMPLATE" else default
        lines.append(f"{name} = {value!r}  # {comment}")
    return "\n".join(lines)


def script_notebook(path: str | os.PathLike, kernel_name: str = "python3",
                    args_template: str = "") -> nbformat.NotebookNode:
    """The notebook papermill runs for a script: parameters, `prepare`, the script, `finish`.

    `args_template` (the method's `--args`, e.g. "--base_model {MODEL_PATH} --data_path
    {DATASET_PATH}") becomes ARGS_TEMPLATE's default; empty, flags are matched by name."""
    path = Path(path)
    source = _read_source(path)
    if args_template:
        check_args_template(args_template, STANDARD_PARAMETERS)
    if not is_script(source):
        raise DeepeError(f"{str(path)!r} has a parameters cell or marker lines: it is a stage notebook, "
                         f"not a script", field=StageName.TRAINING)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": kernel_name, "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["deepe"] = {"script": {"path": str(path.resolve()), "name": path.name,
                                       "format": path.suffix.lower().lstrip(".")}}
    names = ", ".join(f"{name}={name}" for name in STANDARD_PARAMETERS)
    nb.cells = [
        nbformat.v4.new_code_cell(_parameters_source(args_template), metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(PREPARE_SOURCE.format(script=str(path.resolve()), names=names),
                                  metadata={"tags": [stagefiles.SETUP_TAG]}),
    ]
    if isinstance(source, str):
        nb.cells.append(nbformat.v4.new_code_cell(f"%%deepe_script {path.name}\n{source}",
                                                  metadata={"tags": [SCRIPT_TAG]}))
    else:
        for cell in source.cells:
            if cell.cell_type == "raw":
                continue
            cell = copy.deepcopy(cell)
            cell.pop("id", None)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
                tags = [t for t in cell.metadata.get("tags", []) if t != "injected-parameters"]
                cell.metadata["tags"] = tags + [SCRIPT_TAG]
            made = (nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell)(
                cell.source, metadata=cell.metadata)
            nb.cells.append(made)
    nb.cells.append(nbformat.v4.new_code_cell(FINISH_SOURCE, metadata={"tags": [stagefiles.TRAIN_TAG]}))
    return nb


def load_stage_notebook(path: str | os.PathLike, stage: str = StageName.TRAINING, kernel_name: str = "python3",
                        args_template: str = "") -> nbformat.NotebookNode:
    """A stage file as the notebook papermill runs: a training script wrapped by `script_notebook`,
    any other stage file read by `stagefiles.read_stage_file`. The one loader every caller uses."""
    path = Path(path)
    if stage == StageName.TRAINING and path.is_file() and path.suffix.lower() in (".py", ".ipynb"):
        try:
            script = is_script(path)
        except DeepeError:
            script = False  # stagefiles says what is wrong with the file
        if script:
            return script_notebook(path, kernel_name, args_template)
    return stagefiles.read_stage_file(path, stage)


def is_script_notebook(nb: nbformat.NotebookNode) -> bool:
    """A notebook `script_notebook` built (its record too)."""
    return "script" in nb.metadata.get("deepe", {})


def read_script_output(output_dir: str | os.PathLike) -> dict | None:
    """What `finish` wrote: {kind: adapter|full, trained_by, argv, steps, logged, warning, …}."""
    record = Path(output_dir) / OUTPUT_RECORD
    if not record.is_file():
        return None
    return json.loads(record.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- args templates

def template_placeholders(template: str) -> list[str]:
    """The `{NAME}` placeholders of an args template, in order."""
    return PLACEHOLDER.findall(template or "")


def check_args_template(template: str, known_parameter_names) -> None:
    """Refuse a template that names an unknown parameter or cannot be split like a shell line."""
    import shlex

    try:
        shlex.split(template or "")
    except ValueError as exc:
        raise DeepeError(f"the args template cannot be split into flags: {exc}", field="args_template") from None
    known = set(known_parameter_names) | set(DERIVED_PLACEHOLDERS)
    for name in template_placeholders(template):
        if name not in known:
            raise DeepeError(f"the args template names {{{name}}}, which is not a parameter; use one of "
                             f"{', '.join('{' + n + '}' for n in sorted(known))}", field="args_template")


# Script flags whose names say which parameter they take: a starting args template.
_TEMPLATE_GUESSES = {
    "MODEL_PATH": ("base_model", "model_name_or_path", "model_name", "model_path", "model_id", "model"),
    "DATASET_PATH": ("data_path", "dataset_name", "dataset_path", "dataset", "data", "data_dir"),
    "OUTPUT_DIR": ("output_dir", "output_path", "out_dir", "save_dir"),
    "MAX_STEPS": ("max_steps",),
    "EPOCHS": ("num_epochs", "num_train_epochs", "epochs"),
    "BATCH_SIZE": ("batch_size", "per_device_train_batch_size", "micro_batch_size"),
    "LEARNING_RATE": ("learning_rate", "lr"),
    "MAX_SEQ_LENGTH": ("cutoff_len", "max_length", "max_seq_length", "max_seq_len", "block_size"),
    "LORA_RANK": ("lora_r", "lora_rank", "rank"),
    "LORA_ALPHA": ("lora_alpha",),
    "LORA_DROPOUT": ("lora_dropout",),
    "SAVE_STEPS": ("save_steps", "save_step"),
}


def suggest_args_template(source: str) -> str:
    """An args template for an argparse script, from the flags it declares ("" when none match,
    or when it uses HfArgumentParser / TrlParser, whose Hugging Face names need no template)."""
    if re.search(r"\b(HfArgumentParser|TrlParser)\b", source):
        return ""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    declared = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                    declared.setdefault(arg.value[2:].replace("-", "_"), arg.value)
    parts = []
    for parameter, names in _TEMPLATE_GUESSES.items():
        flag = next((declared[n] for n in names if n in declared), None)
        if flag:
            parts.append(f"{flag} {{{parameter}}}")
    return " ".join(parts)


# ---------------------------------------------------------------- offline checks

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# `load_dataset`'s own loaders: `load_dataset("json", data_files=…)` reads local files
_DATASET_LOADERS = {"json", "csv", "parquet", "text", "arrow", "imagefolder", "audiofolder", "videofolder",
                    "pandas", "webdataset", "sql", "generator", "xml", "pdffolder", "spark"}
# hub model ids without an owner that scripts and tutorials load by name
_BARE_MODEL_IDS = re.compile(r"^(gpt2(-medium|-large|-xl)?|distilgpt2|(distil)?(bert|roberta)-(base|large)(-\w+)*|"
                             r"distilroberta-base|t5-(small|base|large)|xlm-roberta-(base|large)|albert-\w+-v\d)$")


def offline_problems(source: str | nbformat.NotebookNode) -> list[str]:
    """What stops a script on a worker with no network or no person at the keyboard: one
    sentence per problem, naming the line and what to change. `source`: Python text or a notebook."""
    if isinstance(source, nbformat.NotebookNode):
        constants: dict[str, str] = {}  # a name set in one cell is used in a later one
        for cell in source.cells:
            if cell.cell_type == "code":
                constants.update(_string_constants(cell.source))
        found = []
        for number, cell in enumerate(source.cells, start=1):
            if cell.cell_type == "code":
                found += [f"cell {number}, {problem}" for problem in _problems_in(cell.source, constants)]
        return found
    return _problems_in(source)


def _string_constants(source: str) -> dict[str, str]:
    """Module-level `NAME = "text"` assignments, so `from_pretrained(model_checkpoint)` is followed."""
    try:
        tree = ast.parse("\n".join("" if line.strip().startswith(("!", "%")) else line
                                   for line in source.splitlines()))
    except SyntaxError:
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _problems_in(source: str, constants: dict[str, str] | None = None) -> list[str]:
    constants = {**(constants or {}), **_string_constants(source)}
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    code_lines = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if re.match(r"^[!%]+\s*(pip|conda|uv)\b", stripped) or re.match(r"^%pip\b", stripped):
            found.append((number, f"`{stripped}` installs packages while the job runs: install them in the "
                                  f"kernel's environment instead"))
        # magics and shell lines are not Python: blank them, keeping the line numbers
        code_lines.append("" if stripped.startswith(("!", "%")) else line)
    code = "\n".join(code_lines)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        found += _problems_by_text(lines)
        return [f"line {n}: {text}" for n, text in sorted(found)]
    guarded = _push_to_hub_guarded_lines(tree)
    hub_login = _hub_login_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in ("notebook_login", "interpreter_login") or name in hub_login:
                found.append((node.lineno, f"calls {name}(), which waits for a person to paste a token: remove "
                                           f"it (a hub token, if one is needed, comes from the HF_TOKEN "
                                           f"environment variable)"))
            for keyword in node.keywords:
                if keyword.arg == "push_to_hub" and _is_true(keyword.value):
                    found.append((node.lineno, "passes push_to_hub=True, which uploads to the Hugging Face Hub "
                                               "(no network here): set it to False; the platform registers "
                                               "the model from OUTPUT_DIR"))
            if name == "push_to_hub" and node.lineno not in guarded:
                found.append((node.lineno, "calls push_to_hub() unconditionally (no network here): remove it "
                                           "or put it under `if args.push_to_hub:`"))
            if name == "add_argument" and _declares_push_to_hub_default_true(node):
                found.append((node.lineno, "declares --push_to_hub with a default of True: make the default "
                                           "False"))
            literal = _hub_id_argument(node, name, constants)
            if literal:
                what = "a model" if name == "from_pretrained" else "a dataset"
                instead = ("MODEL_PATH (the registered base model; flag --model_name_or_path)"
                           if name == "from_pretrained" else
                           "DATASET_PATH (the registered dataset; flag --dataset_name)")
                found.append((node.lineno, f"loads {what} from the Hugging Face Hub ({literal!r}), which "
                                           f"needs a network: read it from {instead} instead"))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "push_to_hub" and node.value is not None and _is_true(node.value):
                found.append((node.lineno, "defaults push_to_hub to True: make the default False"))
    return [f"line {n}: {text}" for n, text in sorted(set(found))]


def _problems_by_text(lines: list[str]) -> list[tuple[int, str]]:
    """For source ast cannot read: the plain-text checks."""
    found = []
    for number, line in enumerate(lines, start=1):
        if "notebook_login(" in line:
            found.append((number, "calls notebook_login(), which waits for a person to paste a token: remove it "
                                  "(a hub token, if one is needed, comes from the HF_TOKEN environment variable)"))
        if re.search(r"push_to_hub\s*=\s*True", line):
            found.append((number, "passes push_to_hub=True, which uploads to the Hugging Face Hub (no network "
                                  "here): set it to False; the platform registers the model from OUTPUT_DIR"))
    return found


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _hub_login_names(tree: ast.AST) -> set[str]:
    """Local names of huggingface_hub's `login` (so any other `login()` is left alone)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("huggingface_hub"):
            names |= {alias.asname or alias.name for alias in node.names if alias.name == "login"}
    return names


def _push_to_hub_guarded_lines(tree: ast.AST) -> set[int]:
    """Lines inside an `if` whose test mentions push_to_hub (TRL's scripts push only when asked)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "push_to_hub" in ast.unparse(node.test):
            for inner in node.body:
                for child in ast.walk(inner):
                    if hasattr(child, "lineno"):
                        lines.add(child.lineno)
    return lines


def _declares_push_to_hub_default_true(node: ast.Call) -> bool:
    flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if not any(f.lstrip("-").replace("-", "_") == "push_to_hub" for f in flags):
        return False
    return any(k.arg == "default" and _is_true(k.value) for k in node.keywords)


def _hub_id_argument(node: ast.Call, name: str, constants: dict[str, str] | None = None) -> str | None:
    """The hub id (`"meta-llama/Llama-3.1-8B"`, `"gpt2"`, `"wikitext"`) a from_pretrained /
    load_dataset call names, as a literal or through a module-level string variable."""
    if name not in ("from_pretrained", "load_dataset"):
        return None
    candidates = list(node.args[:1]) + [k.value for k in node.keywords
                                        if k.arg in ("pretrained_model_name_or_path", "path")]
    for arg in candidates:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            value = arg.value
        elif isinstance(arg, ast.Name) and arg.id in (constants or {}):
            value = constants[arg.id]
        else:
            continue
        if value.startswith((".", "/", "~")) or Path(value).exists():
            continue
        if _HUB_ID.match(value):
            return value
        if name == "load_dataset" and re.match(r"^[A-Za-z0-9][\w.-]*$", value) and \
                value not in _DATASET_LOADERS and not Path(value).suffix:
            return value
        if name == "from_pretrained" and _BARE_MODEL_IDS.match(value):
            return value
    return None
