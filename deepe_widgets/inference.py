"""Trying a model: run its method's inference stage as a papermill notebook, right away.

Inference does not wait in the training queue; each run keeps its executed
notebook under `$DEEPE_HOME/inference/` as the record of what was asked and answered.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from . import config, datasets, deployments, methods, models, trainings
from . import params as paramlib
from .config import StageName
from .errors import DeepeError, StageFailed
from .kernels import require_kernel
from .paths import check_allowed
from .scriptmode import load_stage_notebook
from .stagefiles import notebook_parameters
from .store import ModelKind

STAGE_FOR_KIND = {ModelKind.CUSTOMIZED: StageName.INFERENCE_CUSTOMIZED,
                  ModelKind.COMPLETE: StageName.INFERENCE_COMPLETE}


def _stage_for(record) -> tuple[Path, str, str]:
    """(notebook, kernel, stage) that answers with this model."""
    if record.kind == ModelKind.LIVE:  # the server answers: chat completions on its endpoint
        status = deployments.LiveState.from_meta(record.meta).status
        if status != deployments.LiveStatus.LIVE:
            raise DeepeError(f"live model {record.name!r} is {status}, not live; deploy "
                             f"{record.parent} again with: deepe deploy {record.parent}", field="model")
        return config.package_templates_dir() / "vllm" / "inference_live.ipynb", config.DEFAULT_KERNEL, \
            "inference-live"
    if record.kind == ModelKind.BASE:  # a base model answers through its type's shared notebook (for before/after)
        notebook = trainings.for_model(record).inference_notebook(record)
        return notebook, config.DEFAULT_KERNEL, StageName.INFERENCE_COMPLETE
    stage = STAGE_FOR_KIND.get(record.kind)
    method = methods.get_method(record.method) if record.method else None
    if stage is None or method is None or stage not in method.stages:
        raise DeepeError(f"model {record.name!r} is a {record.kind} model and its method "
                         f"{getattr(method, 'name', None)!r} has no {stage or 'inference'} function", field="model")
    info = methods.stage_of(method, stage)
    return Path(info.file), info.kernel, stage


def _root_and_dataset(record) -> tuple[str, str]:
    """(root base model folder, dataset file it was trained on, or "") of a model (`models.lineage`)."""
    chain = models.lineage(record)
    if chain[-1].parent and chain[-1].kind != ModelKind.BASE:
        raise DeepeError(f"model {record.name!r} was made from {chain[-1].parent!r}, which is no longer registered",
                         field="model")
    for made in chain[:-1]:
        if (made.meta or {}).get("dataset"):
            try:
                return chain[-1].path, datasets.get_dataset(made.meta["dataset"]).path
            except DeepeError:  # deleted since: the corpus must then be given
                pass
    return chain[-1].path, ""


def takes_image(model_name: str) -> bool:
    """Whether a model answers about an image (its root base model has a vision tower)."""
    record = models.get_model(model_name)
    _root_and_dataset(record)  # refuses a model whose ancestry is no longer registered
    return trainings.for_model(models.lineage(record)[-1]).takes_image


ANSWER_SETTINGS = ("MAX_NEW_TOKENS", "TEMPERATURE")  # the settings of an answer a person may change


def answer_settings(model_name: str) -> dict:
    """The answer settings this model's inference stage takes (of `ANSWER_SETTINGS`), with their
    defaults: {"MAX_NEW_TOKENS": 64, "TEMPERATURE": 0.0} for a chat model, {} where it has none."""
    record = models.get_model(model_name)
    notebook, _kernel, stage = _stage_for(record)
    defaults = {k: v["default"] for k, v in notebook_parameters(load_stage_notebook(notebook, stage)).items()}
    values = {k: paramlib.default_value(defaults[k]) for k in ANSWER_SETTINGS if k in defaults}
    for key, value in trainings.for_model(record).inference_defaults.items():
        if key in values:
            values[key] = value
    return values


def empty_answer_words(response: dict) -> str:
    """Why an answer reads empty, in a sentence (from how its generation ended, where the record says)."""
    count, ended = response.get("new_tokens"), response.get("ended")
    first = str(response.get("first_token") or "").strip()
    if count is None:
        return "the model's answer is empty"
    if count == 0:
        return "the model produced no token at all"
    if ended == "stop" and count == 1:
        return ("the model stopped at once: it produced its end-of-turn token"
                + (f" ({first})" if first else "") + " first")
    if ended == "stop":
        return f"the model produced {count} tokens, all special tokens or blank space, then stopped"
    return (f"the model used all {count} new tokens it was allowed on special tokens or blank space; "
            "allow more new tokens, or ask another way")


def infer(model_name: str, prompts: list[str], *, system_prompt: str = "", overrides: dict | None = None,
          image: str | None = None) -> dict:
    """Answer `prompts` with a registered model (about `image`, for a vision-language model);
    returns responses and the record path."""
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise DeepeError("give at least one non-empty prompt", field="prompt")
    record = models.get_model(model_name)
    notebook, kernel, stage = _stage_for(record)
    require_kernel(kernel, field="model")
    nb = load_stage_notebook(notebook, stage)
    defaults = {k: v["default"] for k, v in notebook_parameters(nb).items()}
    platform_set = ("PROMPTS", "ADAPTER_PATH", "SYSTEM_PROMPT", "API_KEY_FILE")
    values = paramlib.resolve(overrides or {}, {k: v for k, v in defaults.items() if k not in platform_set})
    for key, value in trainings.for_model(record).inference_defaults.items():  # below the user's, above the notebook's
        if key in defaults:
            values.setdefault(key, value)
    if record.kind == ModelKind.LIVE:  # the key stays in its file: the record names the file only
        deployments.api_key(record)  # readable here, or a clear error now rather than a failed cell
        state = deployments.LiveState.from_meta(record.meta)
        values.update(MODEL_URL=state.url, SERVED_NAME=state.served_name, API_KEY_FILE=state.api_key_file)
    elif record.kind == ModelKind.CUSTOMIZED:
        values.update(MODEL_PATH=models.get_model(record.parent).path, ADAPTER_PATH=record.path)
    else:
        values.update(MODEL_PATH=record.path, ADAPTER_PATH="")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = config.workspace_dir("inference", f"{stamp}-{uuid.uuid4().hex[:6]}")
    values.update(PROMPTS=list(prompts), SYSTEM_PROMPT=system_prompt, OUTPUT_DIR=str(run_dir / "output"), JOB_ID=0)
    base_path, dataset_path = _root_and_dataset(record)
    if "BASE_MODEL_PATH" in defaults and "BASE_MODEL_PATH" not in (overrides or {}):
        values["BASE_MODEL_PATH"] = base_path  # an embedding model answers beside its base
    if "DATASET_PATH" in defaults and not values.get("DATASET_PATH"):
        values["DATASET_PATH"] = dataset_path
    if values.get("CORPUS"):  # the kernel runs in the record's folder: a relative path would miss
        corpus = check_allowed(values["CORPUS"], "corpus", "corpus file")
        if not corpus.is_file():
            raise DeepeError(f"corpus file {values['CORPUS']!r} does not exist", field="corpus")
        values["CORPUS"] = str(corpus.resolve())
    if "CORPUS" in defaults and not values.get("CORPUS") and not values.get("DATASET_PATH"):
        raise DeepeError(f"model {record.name!r} was trained on no registered dataset whose passages it could "
                         f"search: give them with --param corpus=FILE (a .txt file, one passage a line, or a "
                         f"dataset file)", field="corpus")
    if "IMAGE" in defaults:
        if not image or not Path(image).expanduser().is_file():
            raise DeepeError(f"model {record.name!r} answers about an image: give one with --image FILE"
                             + (f" ({image!r} is not a file)" if image else ""), field="image")
        values["IMAGE"] = str(check_allowed(image, "image", "image"))
    elif image:
        raise DeepeError(f"model {record.name!r} does not take an image", field="image")
    result = {"model": record.name, "kind": record.kind, "stage": stage, "record": str(run_dir / "inference.ipynb"),
              "log": str(run_dir / "inference.log"), "responses": [], "error": None}
    try:
        from .executors import INFER, STAGE_TIMEOUT_DEFAULTS
        from .runner import execute_stage  # papermill: loaded when a model is tried, not by the dashboard

        timeout = values.pop("STAGE_TIMEOUT", STAGE_TIMEOUT_DEFAULTS[INFER])  # 0: no limit
        execute_stage(nb, stage=stage, kernel=kernel, parameters=values, output_path=run_dir / "inference.ipynb",
                      log_path=run_dir / "inference.log", cwd=run_dir, timeout=timeout or None)
    except StageFailed as exc:
        result["error"] = f"{exc.ename}: {exc.evalue} (cell {exc.cell_index})"
        return result
    answers = run_dir / "output" / "responses.json"
    result["responses"] = json.loads(answers.read_text()) if answers.exists() else []
    return result
