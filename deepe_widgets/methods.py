"""The method registry: training methods, their stages (notebook + kernel) and lifecycle rules.

Seed 000's lifecycle table, enforced by `validate_stages`:

| lifecycle  | mandatory                        | optional (file and kernel together) |
| customized | training                         | inference-customized                |
| complete   | training, saving                 | inference-complete                  |
| live       | training, saving, deployment     | inference-customized/-complete      |

and `evaluation` (scoring a model: `deepe_widgets.evaluations`) is optional in every lifecycle.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nbformat
from sqlmodel import select

from . import config, store
from .config import Lifecycle, StageName, TrainingTypeName
from .demo_data import (
    DPO_DEMO_DATASET,
    EMBEDDING_DEMO_DATASET,
    GSM_DEMO_DATASET,
    SD_DEMO_DATASET,
    SFT_DEMO_DATASET,
    VL_DEMO_DATASET,
)
from .envs import engine_of_kernel
from .errors import DeepeError
from .kernels import kernel_environment, require_kernel
from .names import check_name
from .params import aliases_of, check_defaults
from .paths import check_allowed
from .scriptmode import STANDARD_PARAMETERS, check_args_template, is_script, load_stage_notebook, offline_problems
from .stagefiles import notebook_parameters, sha256_file

MANDATORY = {
    Lifecycle.CUSTOMIZED: (StageName.TRAINING,),
    Lifecycle.COMPLETE: (StageName.TRAINING, StageName.SAVING),
    Lifecycle.LIVE: (StageName.TRAINING, StageName.SAVING, StageName.DEPLOYMENT),
}
OPTIONAL = {
    Lifecycle.CUSTOMIZED: (StageName.INFERENCE_CUSTOMIZED, StageName.EVALUATION),
    Lifecycle.COMPLETE: (StageName.INFERENCE_CUSTOMIZED, StageName.INFERENCE_COMPLETE, StageName.EVALUATION),
    Lifecycle.LIVE: (StageName.INFERENCE_CUSTOMIZED, StageName.INFERENCE_COMPLETE, StageName.EVALUATION),
}
STAGE_LABEL = {
    StageName.TRAINING: "training code file", StageName.SAVING: "saving code file",
    StageName.INFERENCE_CUSTOMIZED: "Customized Model inference code file",
    StageName.INFERENCE_COMPLETE: "Complete Model inference code file",
    StageName.DEPLOYMENT: "deployment environment code file",
    StageName.EVALUATION: "evaluation code file",
}

# The saving and inference notebooks every transformers + PEFT built-in shares.
HF_LIFECYCLE_STAGES = {StageName.SAVING: "hf_common/saving.ipynb",
                       StageName.INFERENCE_CUSTOMIZED: "hf_common/inference.ipynb",
                       StageName.INFERENCE_COMPLETE: "hf_common/inference.ipynb",
                       StageName.EVALUATION: "evaluation/chat.ipynb"}
TEMPLATE_TEXT = ("A template to start your own method from: copy its training notebook, put your code between "
                 "its marker lines and register the copy (Add New Method); as it is, it trains like SFT-Demo.")


@dataclass(frozen=True)
class Stage:
    """One stage of a method: the notebook (or script) it runs, copied into the workspace, the file it
    was copied from, that copy's hash and the kernel it runs in. `Method.stages` stores `to_dict()`
    under the stage's name (the stored JSON shape: `from_dict` reads it, keys it does not name kept)."""

    file: str
    kernel: str
    source: str = ""  # the user's file (a built-in's: the package's notebook)
    sha256: str = ""  # of `file`; empty for a stage made when it runs (the built-in deployment)
    args_template: str = ""  # script mode: the training script's command line
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, info: dict) -> Stage:
        named = {"file", "kernel", "source", "sha256", "args_template"}
        return cls(**{key: info[key] for key in named & info.keys()},
                   extra={k: v for k, v in info.items() if k not in named})

    def to_dict(self) -> dict:
        """The stored shape: file, source, sha256 (when known), kernel, args_template (when set)."""
        out = {"file": self.file, "source": self.source, "sha256": self.sha256, "kernel": self.kernel}
        if not self.sha256:
            del out["sha256"]
        if self.args_template:
            out["args_template"] = self.args_template
        return {**out, **self.extra}

    @property
    def source_name(self) -> str:
        """The name the user gave the file, for messages and records."""
        return Path(self.source or self.file).name


def stages_of(method: store.Method) -> dict[str, Stage]:
    """A method's stages, by name."""
    return {name: Stage.from_dict(info) for name, info in (method.stages or {}).items()}


def stage_of(method: store.Method, stage: str) -> Stage:
    """One stage of a method (KeyError when it has none of that name)."""
    return Stage.from_dict(method.stages[stage])


class Builtin(NamedTuple):
    """A built-in method: what it registers as, and the demo dataset it comes with (the Start a New
    Train form picks it with the method)."""

    display_name: str
    training_type: TrainingTypeName
    lifecycle: Lifecycle
    description: str
    stages: dict[StageName, str]  # stage -> path under method_templates/
    demo_dataset: str
    template: bool = False  # seed 000: Custom01 and Custom02 are templates to copy, not methods of their own


BUILTINS = {
    "SFT-Demo": Builtin("SFT-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                        "Supervised fine-tuning with a LoRA adapter (TRL SFTTrainer) on prompt/response pairs.",
                        {StageName.TRAINING: "sft_demo/training.ipynb", **HF_LIFECYCLE_STAGES}, SFT_DEMO_DATASET),
    "GRPO-Demo": Builtin("GRPO-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                         "GRPO (TRL GRPOTrainer) with a LoRA adapter on question / #### answer data, rewarding the "
                         "<reasoning>/<answer> format and correct answers.",
                         {StageName.TRAINING: "grpo_demo/training.ipynb", **HF_LIFECYCLE_STAGES}, GSM_DEMO_DATASET),
    "DPO-Demo": Builtin("DPO-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                        "DPO (TRL DPOTrainer) with a LoRA adapter on prompt / chosen / rejected pairs; the base "
                        "model, adapter disabled, is the reference.",
                        {StageName.TRAINING: "dpo_demo/training.ipynb", **HF_LIFECYCLE_STAGES}, DPO_DEMO_DATASET),
    "KTO-Demo": Builtin("KTO-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                        "KTO (TRL KTOTrainer) with a LoRA adapter on prompt / completion / label rows, or on "
                        "prompt / chosen / rejected pairs, which it unpairs; the base model is the reference.",
                        {StageName.TRAINING: "kto_demo/training.ipynb", **HF_LIFECYCLE_STAGES}, DPO_DEMO_DATASET),
    "ORPO-Demo": Builtin("ORPO-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                         "ORPO (TRL ORPOTrainer, from trl.experimental in TRL 1.16) with a LoRA adapter on prompt / "
                         "chosen / rejected pairs: fine-tuning and preference in one loss, no reference model.",
                         {StageName.TRAINING: "orpo_demo/training.ipynb", **HF_LIFECYCLE_STAGES}, DPO_DEMO_DATASET),
    "SimPO-Demo": Builtin("SimPO-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                          "SimPO (TRL CPOTrainer with loss_type simpo, from trl.experimental in TRL 1.16) with a "
                          "LoRA adapter on prompt / chosen / rejected pairs: a length-normalised reward, no "
                          "reference model.",
                          {StageName.TRAINING: "simpo_demo/training.ipynb", **HF_LIFECYCLE_STAGES}, DPO_DEMO_DATASET),
    "Reward-Demo": Builtin("Reward-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                           "A reward model (TRL RewardTrainer) from prompt / chosen / rejected pairs: a LoRA adapter "
                           "on the sequence-classification task with a trained score head; accuracy and margin on "
                           "held-out pairs; inference scores a prompt with its answer.",
                           {StageName.TRAINING: "reward_demo/training.ipynb",
                            StageName.SAVING: "reward_demo/saving.ipynb",
                            StageName.INFERENCE_CUSTOMIZED: "reward_demo/inference.ipynb",
                            StageName.INFERENCE_COMPLETE: "reward_demo/inference.ipynb"}, DPO_DEMO_DATASET),
    "Embedding-Demo": Builtin("Embedding-Demo", TrainingTypeName.EMBEDDING, Lifecycle.COMPLETE,
                              "Retrieval fine-tuning of a sentence-transformers model (MultipleNegativesRankingLoss) "
                              "on query / passage pairs; NDCG@10, MRR@10 and recall@k on held-out queries.",
                              {StageName.TRAINING: "embedding_demo/training.ipynb",
                               StageName.SAVING: "embedding_demo/saving.ipynb",
                               StageName.INFERENCE_CUSTOMIZED: "embedding_demo/inference.ipynb",
                               StageName.INFERENCE_COMPLETE: "embedding_demo/inference.ipynb",
                               StageName.EVALUATION: "evaluation/embedding.ipynb"}, EMBEDDING_DEMO_DATASET),
    "VL-Demo": Builtin("VL-Demo", TrainingTypeName.VISION_LANGUAGE, Lifecycle.COMPLETE,
                       "Vision-language fine-tuning with a LoRA adapter (TRL SFTTrainer, loss on the answers only) on "
                       "image + question / answer rows; exact match on held-out questions.",
                       {StageName.TRAINING: "vl_demo/training.ipynb", StageName.SAVING: "vl_demo/saving.ipynb",
                        StageName.INFERENCE_CUSTOMIZED: "vl_demo/inference.ipynb",
                        StageName.INFERENCE_COMPLETE: "vl_demo/inference.ipynb",
                        StageName.EVALUATION: "evaluation/vision_language.ipynb"},
                        VL_DEMO_DATASET),
    "MLX-Demo": Builtin("MLX-Demo", TrainingTypeName.CHAT, Lifecycle.COMPLETE,
                        "LoRA fine-tuning with mlx-lm (Apple silicon; its CPU backend runs on Linux). "
                        "The kernel needs mlx-lm.",
                        {StageName.TRAINING: "mlx_demo/training.ipynb", StageName.SAVING: "mlx_demo/saving.ipynb",
                         StageName.INFERENCE_CUSTOMIZED: "mlx_demo/inference.ipynb",
                         StageName.INFERENCE_COMPLETE: "mlx_demo/inference.ipynb",
                         StageName.EVALUATION: "evaluation/mlx.ipynb"}, SFT_DEMO_DATASET),
    "SD-Demo": Builtin("SD-Demo", TrainingTypeName.IMAGE_GENERATION, Lifecycle.COMPLETE,
                       "LoRA on a diffusers text-to-image pipeline (SD 1.x / 2.x) with diffusers' training recipe; "
                       "validation images by step, held-out denoising loss; saving fuses the LoRA.",
                       {StageName.TRAINING: "sd_demo/training.ipynb", StageName.SAVING: "sd_demo/saving.ipynb",
                        StageName.INFERENCE_CUSTOMIZED: "sd_demo/inference.ipynb",
                        StageName.INFERENCE_COMPLETE: "sd_demo/inference.ipynb",
                        StageName.EVALUATION: "evaluation/image_generation.ipynb"},
                        SD_DEMO_DATASET),
    "Custom01": Builtin("Custom01", TrainingTypeName.CHAT, Lifecycle.COMPLETE, TEMPLATE_TEXT,
                        {StageName.TRAINING: "custom_template/training.ipynb", **HF_LIFECYCLE_STAGES},
                        SFT_DEMO_DATASET, template=True),
    "Custom02": Builtin("Custom02", TrainingTypeName.CHAT, Lifecycle.COMPLETE, TEMPLATE_TEXT,
                        {StageName.TRAINING: "custom_template/training.ipynb", **HF_LIFECYCLE_STAGES},
                        SFT_DEMO_DATASET, template=True),
}


def stage_requirements(method: store.Method, stage: str = StageName.TRAINING) -> dict[str, str]:
    """Package -> install hint that a stage's kernel must have: the stage notebook's
    `metadata.deepe.requires` (MLX-Demo declares mlx-lm there)."""
    info = stage_of(method, stage)
    try:
        nb = load_stage_notebook(Path(info.file), stage, info.kernel, info.args_template)
    except DeepeError:
        return {}
    return dict(nb.metadata.get("deepe", {}).get("requires", {}))


def stage_parameter_names(method: store.Method, stage: str) -> set[str]:
    """The names in a stage notebook's `parameters` cell."""
    info = stage_of(method, stage)
    return set(notebook_parameters(load_stage_notebook(Path(info.file), stage, info.kernel)))


def check_kernel_packages(method: store.Method, stage: str = StageName.TRAINING) -> None:
    """Refuse, with the install command, a kernel that lacks a package its stage declares."""
    needed = stage_requirements(method, stage)
    if not needed:
        return
    kernel = stage_of(method, stage).kernel
    found = kernel_environment(kernel)
    if found.get("probe_error"):
        raise DeepeError(f"could not check that kernel {kernel!r} has {', '.join(needed)}: "
                         f"{found['probe_error']}", field="method")
    for package, hint in needed.items():
        if not found.get("packages", {}).get(package):
            raise DeepeError(f"method {method.name!r} needs {package} in kernel {kernel!r}, which does "
                             f"not have it: {hint} in that kernel's environment", field="method")


def validate_stages(lifecycle: str, stages: dict[str, tuple[str | None, str | None]]) -> None:
    """Refuse a stage set that breaks the lifecycle table; `stages` maps stage -> (file, kernel)."""
    if lifecycle not in config.LIFECYCLES:
        raise DeepeError(f"lifecycle must be one of {', '.join(config.LIFECYCLES)}, not {lifecycle!r}",
                         field="lifecycle")
    for stage, (file, kernel) in stages.items():
        if stage not in config.STAGES:
            raise DeepeError(f"unknown stage {stage!r}; stages are {', '.join(config.STAGES)}", field="stages")
        if bool(file) != bool(kernel):
            missing = "kernel" if file else "file"
            raise DeepeError(f"stage '{stage}' needs both a file and a kernel: its {missing} is missing",
                             field=stage)
    for stage in MANDATORY[lifecycle]:
        if not stages.get(stage, (None, None))[0]:
            raise DeepeError(f"a '{lifecycle}' method needs its {STAGE_LABEL[stage]} and kernel "
                             f"(stage '{stage}')", field=stage)
    allowed = set(MANDATORY[lifecycle]) | set(OPTIONAL[lifecycle])
    extra = sorted(s for s, (f, _k) in stages.items() if f and s not in allowed)
    if extra:
        raise DeepeError(f"stage '{extra[0]}' does not belong to the '{lifecycle}' lifecycle "
                         f"(allowed: {', '.join(sorted(allowed))})", field=extra[0])


def _copy_into_workspace(name: str, stage: str, source: Path) -> dict[str, str]:
    """Copy a stage file under the workspace, named by its content hash."""
    digest = sha256_file(source)
    target_dir = config.workspace_dir("methods", name)
    target = target_dir / f"{stage}-{digest[:12]}{source.suffix.lower()}"
    if not target.exists():
        shutil.copyfile(source, target)
    return {"file": str(target), "source": str(source), "sha256": digest}


def register_method(name: str, stages: dict[str, tuple[str, str]], *, training_type: str = TrainingTypeName.CHAT,
                    lifecycle: str = Lifecycle.CUSTOMIZED, display_name: str = "", description: str = "",
                    builtin: bool = False, replace: bool = False, args_template: str = "") -> store.Method:
    """Register a method; each stage file is checked, copied into the workspace and hashed.

    A training file with no `parameters` cell and no marker lines is a script that trains and
    saves by itself (script mode); `args_template` gives its command line when its flags are not
    the Hugging Face names (placeholders: any parameter, e.g. "--data_path {DATASET_PATH}")."""
    check_name(name, "method")
    if args_template:
        check_args_template(args_template, STANDARD_PARAMETERS)
    if training_type not in config.TRAINING_TYPES:
        raise DeepeError(f"training type must be one of {', '.join(config.TRAINING_TYPES)}, "
                         f"not {training_type!r}", field="training_type")
    stages = {s: (str(f) if f else None, k or None) for s, (f, k) in stages.items()}
    validate_stages(lifecycle, stages)
    existing = store.get_one(store.Method, name=name)
    if existing is not None and (existing.builtin and not builtin):
        raise DeepeError(f"method {name!r} is built in and cannot be overwritten; "
                         f"copy its notebook and register it under another name", field="name")
    if existing is not None and not replace:
        raise DeepeError(f"a method named {name!r} already exists", field="name")
    notebooks, resolved = {}, {}
    for stage, (file, kernel) in stages.items():
        if not file:
            continue
        engine = engine_of_kernel(kernel)
        if engine and stage != StageName.DEPLOYMENT:  # as the Add New Method form offers it: deployment only
            raise DeepeError(f"kernel {kernel} is the {engine} deployment environment: it serves models and has "
                             f"no training libraries, so it runs the deployment stage only; give the {stage} "
                             f"stage a training kernel (python3, or your environment's)", field=stage)
        path = Path(file).expanduser()
        if not builtin:  # built-ins come from the installed package
            check_allowed(path, stage, "stage file")
        # refuses missing or unreadable files, broken notebooks, a missing parameters cell
        notebooks[stage] = load_stage_notebook(path, stage, kernel,
                                               args_template if stage == StageName.TRAINING else "")
        if not builtin:
            check_runs_offline(path, stage)
        require_kernel(kernel, field=stage)
        resolved[stage] = path.resolve()
    defaults = {k: v["default"] for k, v in notebook_parameters(notebooks[StageName.TRAINING]).items()}
    check_defaults(defaults)
    stage_info = {}
    for stage, path in resolved.items():
        script_args = args_template if stage == StageName.TRAINING else ""
        stage_info[stage] = Stage(kernel=stages[stage][1], args_template=script_args,
                                  **_copy_into_workspace(name, stage, path)).to_dict()
    with store.session() as s:
        method = s.exec(select(store.Method).where(store.Method.name == name)).first()
        if method is None:
            method = store.Method(name=name)
        method.display_name = display_name or name
        method.training_type = training_type
        method.lifecycle = lifecycle
        method.description = description
        method.builtin = builtin
        method.stages = stage_info
        method.default_params = defaults
        method.updated_at = store.now()
        s.add(method)
    return method


def ensure_builtins() -> None:
    """Register (or refresh, when the package's notebooks changed) the built-in methods; processes
    of one workspace take turns (two first uses at once would both register them)."""
    with config.workspace_lock("setup"):
        _register_builtins()


def _register_builtins() -> None:
    templates = config.package_templates_dir()
    for name, builtin in BUILTINS.items():
        stages = {s: (templates / rel, config.DEFAULT_KERNEL) for s, rel in builtin.stages.items()}
        current = store.get_one(store.Method, name=name)
        if current is not None and all(
                s in current.stages and stage_of(current, s).sha256 == sha256_file(p) for s, (p, _k) in stages.items()):
            continue
        register_method(name, stages, training_type=builtin.training_type, lifecycle=builtin.lifecycle,
                        display_name=builtin.display_name, description=builtin.description, builtin=True,
                        replace=True)


def get_method(name: str) -> store.Method:
    return store.require_named(store.Method, name, "method", "method")


def list_methods() -> list[store.Method]:
    with store.read_session() as s:
        return list(s.exec(select(store.Method).order_by(store.Method.builtin.desc(), store.Method.name)))


def delete_method(name: str) -> None:
    method = get_method(name)
    if method.builtin:
        raise DeepeError(f"method {name!r} is built in and cannot be deleted", field="name")
    with store.session() as s:
        s.delete(s.get(store.Method, method.id))
    shutil.rmtree(config.deepe_home() / "methods" / name, ignore_errors=True)


def is_template(method: store.Method) -> bool:
    """A built-in that is a template to copy (Custom01, Custom02), not a method of its own."""
    return method.builtin and method.name in BUILTINS and BUILTINS[method.name].template


def description_of(method: store.Method) -> str:
    """What a method does, in a line: a built-in's own words (`Builtin.description`), else the
    Description given when it was registered, else the first line of its training notebook's first
    markdown cell ("" when there is none)."""
    if method.builtin and method.name in BUILTINS:
        return BUILTINS[method.name].description
    if (method.description or "").strip():
        return method.description.strip()
    training = stages_of(method).get(StageName.TRAINING)
    return notebook_headline(training.file, training.sha256) if training else ""


@functools.lru_cache(maxsize=256)
def notebook_headline(file: str, sha256: str = "") -> str:
    """The first line of a notebook's (or a percent-format .py file's) first markdown cell, without
    its heading marks; "" when it has none or cannot be read. `sha256` keys the cache to the content."""
    path = Path(file)
    try:
        if path.suffix.lower() == ".ipynb":
            cells = nbformat.read(path, as_version=4).cells
        else:
            import jupytext  # only for a .py stage file

            cells = jupytext.reads(path.read_text(encoding="utf-8"), fmt="py:percent").cells
    except Exception:  # a broken or unreadable file has no headline; the list still draws
        return ""
    for cell in cells:
        if cell.cell_type == "markdown":
            lines = [line.strip().lstrip("#").strip() for line in cell.source.splitlines()]
            return next((line for line in lines if line), "")
    return ""


def check_runs_offline(path: Path, stage: str) -> None:
    """Refuse, naming the line to change, code that cannot run on a worker with no hub access and
    no one at the keyboard (`notebook_login()`, `push_to_hub=True`, a hub model id)."""
    if path.suffix.lower() == ".ipynb":
        source = nbformat.read(path, as_version=4)  # load_stage_notebook has read it once already
    else:
        source = path.read_text(encoding="utf-8")
    problems = offline_problems(source)
    if problems:
        raise DeepeError(f"{path.name} cannot run offline on a worker: " + "; ".join(problems), field=stage)


def method_summary(method: store.Method) -> dict:
    """The JSON shape of a method for the CLI and the widgets."""
    stages = stages_of(method)
    training = stages.get(StageName.TRAINING)
    return {
        "name": method.name, "display_name": method.display_name, "type": method.training_type,
        "lifecycle": method.lifecycle, "builtin": method.builtin, "description": method.description,
        "stages": {s: {"file": i.file, "source": i.source, "sha256": i.sha256, "kernel": i.kernel}
                   for s, i in stages.items()},
        "script_mode": training is not None and is_script(Path(training.file)),
        "args_template": training.args_template if training is not None else "",
        "parameters": method.default_params,
        "aliases": {name: aliases_of(name) for name in method.default_params if aliases_of(name)},
    }


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
