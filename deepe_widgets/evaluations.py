"""Evaluation: an evaluate job runs a model's `evaluation` stage (a notebook, like every stage) on
held-out rows or a dataset, and keeps its scores and answers beside its record.

- After a training that held rows out succeeds, its model is evaluated on those rows, and its base
  model once per (base model, rows, suite): every tuned model has its base beside it (`after_training`).
- `deepe evaluate MODEL` and Evaluate in the Models view queue one on demand (`submit_evaluation`).
- What a finished evaluate job leaves in its run folder: `evaluation.ipynb` (the record),
  `output/evaluation.json` (suite, metrics) and `output/predictions.jsonl` (a row per prompt); its
  metrics are rows of the metric table under its job id, at step 0.

The stage notebook is the method's own `evaluation` stage where it has one, else its training type's
built-in (`TrainingType.evaluation_notebook`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import nbformat
from sqlmodel import func, select

from . import config, datasets, jobs, methods, models, provenance, store, trainings
from . import params as paramlib
from .config import StageName
from .errors import DeepeError
from .kernels import require_kernel
from .metrics import metric_stats
from .names import check_name
from .store import Job, JobKind, JobStatus, ModelKind

log = logging.getLogger(__name__)

SUITES = ("generation", "benchmark", "judge", "retrieval", "images")
# each suite in a few words (the CLI's help, the widgets' choosers)
SUITE_WORDS = {"generation": "answers to held-out prompts, scored against their references",
               "benchmark": "a local multiple-choice file, run by lm-evaluation-harness",
               "judge": "an LLM compares the tuned and the base model's answers",
               "retrieval": "each held-out query looks for its own passage",
               "images": "held-out images: their denoising loss, and their captions drawn with a fixed seed"}
# The per-row score the side-by-side table compares, the first a row has; those where lower is better.
ROW_SCORES = ("rougeL", "reciprocal_rank", "exact_match", "denoising_loss")
LOWER_ROW_SCORES = ("denoising_loss",)
# The evaluation notebook's parameters a user may set (`--param`); the platform sets the rest.
USER_PARAMETERS = {"MAX_ROWS": "100", "BATCH_SIZE": "8", "MAX_NEW_TOKENS": "128", "SYSTEM_PROMPT": '""',
                   "BENCHMARK_FILE": '""', "JUDGE": '""', "STAGE_TIMEOUT": "7200.0"}
# What decides which rows are scored and how: two evaluations with the same key are comparable.
ROW_KEYS = ("DATASET_SHA256", "HELD_OUT", "EVAL_FRACTION", "SEED", "PromptInputColumn", "PromptOutputColumn",
            "MAX_ROWS", "MAX_NEW_TOKENS", "SYSTEM_PROMPT", "BENCHMARK_SHA256", "SUITE", "NegativeColumn")
# and, where a training type carries them (`TrainingType.evaluation_parameters`), these
TYPE_ROW_KEYS = ("RESOLUTION", "PREDICTION_TYPE", "VALIDATION_SEED", "VALIDATION_INFERENCE_STEPS", "GUIDANCE_SCALE")
AUTO_ENV = "DEEPE_EVALUATE_AFTER_TRAINING"


def evaluate_after_training() -> bool:
    """Whether a training that held rows out queues its evaluations (`DEEPE_EVALUATE_AFTER_TRAINING`,
    default 1)."""
    return os.environ.get(AUTO_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def base_of(model: str | store.ModelRecord) -> str:
    """The name of the base model a model was made from (itself for a base model)."""
    record = models.get_model(model) if isinstance(model, str) else model
    chain = models.lineage(record)
    if chain[-1].kind != ModelKind.BASE:
        raise DeepeError(f"model {record.name!r} was made from {chain[-1].parent!r}, which is no longer "
                         f"registered", field="model")
    return chain[-1].name


def _training_job(record: store.ModelRecord) -> Job | None:
    """The training that made a model (through a Complete Model's Customized parent)."""
    for made in models.lineage(record):
        if made.kind == ModelKind.BASE or made.job_id is None:
            continue
        job = store.get_one(Job, id=made.job_id)
        if job is not None and job.kind == JobKind.TRAIN:
            return job
    return None


def _method_of(record: store.ModelRecord, training: Job | None) -> store.Method | None:
    name = record.method or (training.method if training else None)
    return store.get_one(store.Method, name=name) if name else None


def _type_of(record: store.ModelRecord, method: store.Method | None):
    return trainings.for_method(method) if method is not None else trainings.for_model(record)


def stage_info(job: Job) -> methods.Stage:
    """The evaluation stage an evaluate job runs: its method's own; for a
    base or Complete Model (a plain transformers folder) its training type's built-in notebook."""
    method = store.get_one(store.Method, name=job.method) if job.method else None
    if method is not None and StageName.EVALUATION in method.stages:
        return methods.stage_of(method, StageName.EVALUATION)
    record = store.get_one(store.ModelRecord, name=job.base_model)
    if record is not None and record.kind == ModelKind.CUSTOMIZED:
        raise DeepeError(f"method {job.method!r} has no evaluation stage, so its adapters cannot be evaluated: "
                         f"save {record.name} to a Complete Model (deepe save) and evaluate that", field="model")
    training = trainings.for_method(method) if method is not None else (
        trainings.for_model(record) if record is not None else trainings.for_method("SFT-Demo"))
    notebook = training.evaluation_notebook()
    if notebook is None:
        raise DeepeError(f"{training.name} models have no evaluation stage yet (they are scored on held-out "
                         f"rows while they train)", field="model")
    # the method's training kernel has the libraries its models need; a base model's, the default
    trains_in = method is not None and StageName.TRAINING in method.stages
    kernel = methods.stage_of(method, StageName.TRAINING).kernel if trains_in else config.DEFAULT_KERNEL
    return methods.Stage(file=str(notebook), source=str(notebook), kernel=kernel)


def _row_key(params: dict) -> str:
    key = {**{k: params.get(k) for k in ROW_KEYS}, **{k: params[k] for k in TYPE_ROW_KEYS if k in params}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _judge_parameters(value: str, record: store.ModelRecord) -> dict:
    """JUDGE_URL / JUDGE_MODEL / JUDGE_API_KEY_FILE from `--param judge=LIVE_MODEL`, or from
    DEEPE_JUDGE_URL (its key from DEEPE_JUDGE_API_KEY, read by the kernel: never in the record)."""
    if record.kind == ModelKind.BASE:
        raise DeepeError("the judge suite compares a tuned model with its base model: evaluate a trained "
                         "model, not a base model", field="suite")
    if value:
        judge = models.get_model(value)
        if judge.kind != ModelKind.LIVE:
            raise DeepeError(f"judge {value!r} is a {judge.kind} model; the judge must be a Live Model "
                             f"(deepe deploy MODEL) or an endpoint in DEEPE_JUDGE_URL", field="judge")
        state = models.LiveState.from_meta(judge.meta)
        if state.status != models.LiveStatus.LIVE:
            raise DeepeError(f"judge {value!r} is {state.status}, not live; deploy "
                             f"{judge.parent} again", field="judge")
        return {"JUDGE_URL": state.url, "JUDGE_MODEL": state.served_name,
                "JUDGE_API_KEY_FILE": state.api_key_file or ""}
    url = os.environ.get("DEEPE_JUDGE_URL", "").strip()
    if not url:
        raise DeepeError("the judge suite needs a judge: --param judge=LIVE_MODEL (a Live Model of this "
                         "workbench), or an OpenAI-compatible endpoint in DEEPE_JUDGE_URL (its key in "
                         "DEEPE_JUDGE_API_KEY)", field="judge")
    return {"JUDGE_URL": url, "JUDGE_MODEL": os.environ.get("DEEPE_JUDGE_MODEL", ""), "JUDGE_API_KEY_FILE": ""}


def _check_benchmark(value: str) -> dict:
    from .paths import check_allowed
    from .runtime.evaluation import check_benchmark_file

    if not value:
        raise DeepeError("the benchmark suite needs a local benchmark file: --param benchmark_file=FILE "
                         "(multiple-choice jsonl with question, choices and answer, or an lm-eval task YAML "
                         "whose data files are local)", field="benchmark_file")
    path = check_allowed(value, "benchmark_file", "benchmark file")
    if not path.is_file():
        raise DeepeError(f"benchmark file {value!r} does not exist", field="benchmark_file")
    try:
        check_benchmark_file(path)
    except ValueError as exc:
        raise DeepeError(f"benchmark file {path.name}: {exc}", field="benchmark_file") from None
    return {"BENCHMARK_FILE": str(path.resolve()), "BENCHMARK_SHA256": provenance.sha256_file(path)}


def plan_evaluation(model: str, *, dataset: str | None = None, suite: str | None = None,
                      params: dict | None = None, training: Job | None = None,
                      method: str | None = None) -> Job:
    """The evaluate job of `model` (any registered model but a Live one), checked, not yet queued.

    Without `dataset`, a trained model is scored on the rows its training held out; a base model
    needs one. With `dataset`, on its rows (its held-out rows where it has a `split` column)."""
    record = models.get_model(model)
    if record.kind == ModelKind.LIVE:
        raise DeepeError(f"{model!r} is a Live Model; evaluate the model it serves, {record.parent}", field="model")
    made_by = training or _training_job(record)
    method_row = store.get_one(store.Method, name=method) if method else _method_of(record, made_by)
    training_type = _type_of(record, method_row)
    suite = suite or training_type.default_suite
    if suite not in SUITES:
        raise DeepeError(f"unknown suite {suite!r}; suites are {', '.join(SUITES)}", field="suite")
    if not training_type.suites and training_type.evaluated_while_training:
        raise DeepeError(f"{model} has no evaluation suite: {training_type.evaluated_while_training}",
                         field="suite")
    if suite not in training_type.suites:
        raise DeepeError(f"{training_type.name} models are not evaluated with the {suite} suite; theirs: "
                         f"{', '.join(training_type.suites) or 'none yet'}", field="suite")
    own_stage = methods.stages_of(method_row).get(StageName.EVALUATION) if method_row is not None else None
    own = own_stage.file if own_stage is not None else None
    runs = _suites_of(own) if own else []
    if runs and suite not in runs:  # a method's own evaluation stage may run fewer suites than its type
        raise DeepeError(f"{method_row.name}'s evaluation stage runs the {' and '.join(runs)} suites, not {suite}"
                         + (": save it to a Complete Model (deepe save) and evaluate that"
                            if record.kind == ModelKind.CUSTOMIZED else ""), field="suite")
    values = {str(k): v for k, v in (params or {}).items()}
    unknown = sorted(k for k in values if k.upper() not in USER_PARAMETERS)
    if unknown:
        raise DeepeError(f"unknown evaluation parameter {unknown[0]!r}; you may set "
                         f"{', '.join(p.lower() for p in USER_PARAMETERS)}", field=unknown[0])
    values = {k.upper(): paramlib.coerce(k.lower(), v, USER_PARAMETERS[k.upper()]) for k, v in values.items()}
    for key in ("MAX_ROWS", "BATCH_SIZE", "MAX_NEW_TOKENS"):
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 1):
            raise DeepeError(f"{key.lower()} must be a whole number of at least 1, not {values[key]!r}",
                             field=key.lower())
    trained = _training_values(made_by)
    judge = values.pop("JUDGE", "")
    benchmark = values.pop("BENCHMARK_FILE", "")
    if suite == "benchmark":  # the benchmark file holds the questions
        if dataset is not None:
            raise DeepeError("the benchmark suite reads its questions from benchmark_file=FILE, not from a "
                             "dataset: leave out --dataset", field="dataset")
        rows = {"HELD_OUT": False, "DATASET_PATH": "", "DATASET_SHA256": ""}
    else:
        dataset, rows = _rows_to_score(model, dataset, made_by)
    root = models.get_model(base_of(record))
    job_params = {
        "SUITE": suite, **rows,
        "MODEL_PATH": models.get_model(record.parent).path if record.kind == ModelKind.CUSTOMIZED else record.path,
        "ADAPTER_PATH": record.path if record.kind == ModelKind.CUSTOMIZED else "",
        "BASE_MODEL_PATH": root.path,
        "EVAL_FRACTION": trained.get("EVAL_FRACTION", 0.1), "SEED": trained.get("SEED", 42),
        "PromptInputColumn": trained.get("PromptInputColumn", ""),
        "PromptOutputColumn": trained.get("PromptOutputColumn", ""),
        "SYSTEM_PROMPT": trained.get("SYSTEM_PROMPT", ""),
        **({"NegativeColumn": trained["NegativeColumn"]} if "NegativeColumn" in trained else {}),
        "TRAINING_JOB": made_by.id if made_by is not None and dataset == made_by.dataset else 0,
        **{k: trained[k] for k in training_type.evaluation_parameters if k in trained},
    }
    job_params.update(values)
    if suite == "judge":
        job_params.update(_judge_parameters(str(judge or ""), record))
    elif judge:
        raise DeepeError("judge= is a parameter of the judge suite (--suite judge)", field="judge")
    if suite == "benchmark":
        job_params.update(_check_benchmark(str(benchmark)))
    elif benchmark:
        raise DeepeError("benchmark_file= is a parameter of the benchmark suite (--suite benchmark)",
                         field="benchmark_file")
    job_params["ROW_KEY"] = _row_key(job_params)
    job = Job(kind=JobKind.EVALUATE, method=method_row.name if method_row is not None else "",
              base_model=record.name, dataset=dataset, params=job_params, stage=StageName.EVALUATION)
    require_kernel(stage_info(job).kernel, field="model")
    return job


def _suites_of(notebook: str) -> list[str]:
    """The suites an evaluation notebook says it runs (`metadata.deepe.suites`); empty: its type's."""
    try:
        return list(nbformat.read(notebook, as_version=4).metadata.get("deepe", {}).get("suites", []))
    except (OSError, ValueError):
        return []


def submit_evaluation(model: str, *, dataset: str | None = None, suite: str | None = None,
                      params: dict | None = None, name: str | None = None, training: Job | None = None,
                      method: str | None = None) -> Job:
    """Queue an evaluation of `model` (`plan_evaluation`)."""
    if name:
        check_name(name, "evaluation")
    job = plan_evaluation(model, dataset=dataset, suite=suite, params=params, training=training, method=method)
    return jobs._queue(job, name, "eval")


def _rows_to_score(model: str, dataset: str | None, made_by: Job | None) -> tuple[str, dict]:
    """(dataset, its parameters): the rows its training held out, or a dataset's (its own held-out
    rows where it has a `split` column)."""
    # the rows its training never saw: without a dataset, or with the one it trained on
    held_out = dataset is None or (made_by is not None and dataset == made_by.dataset)
    if dataset is None:
        if made_by is None or not made_by.dataset:
            raise DeepeError(f"{model!r} was not trained here on a registered dataset: give the rows to "
                             f"evaluate on with --dataset NAME", field="dataset")
        dataset = made_by.dataset
    row = datasets.get_dataset(dataset)
    if not Path(row.path).is_file():
        raise DeepeError(f"dataset {dataset!r} points at {row.path}, which no longer exists", field="dataset")
    if not held_out and "split" in (row.columns or []):
        held_out = True  # its own held-out rows, not the ones it trains on
    return dataset, {"HELD_OUT": held_out, "DATASET_PATH": row.path,
                     "DATASET_SHA256": provenance.sha256_file(Path(row.path))}


def _training_values(training: Job | None) -> dict:
    """Every parameter a training ran with: its method's defaults under what was given."""
    if training is None:
        return {}
    method = store.get_one(store.Method, name=training.method)
    defaults = {k: paramlib.default_value(v) for k, v in (method.default_params if method else {}).items()}
    return {**defaults, **training.params}


def _logged_held_out_metrics(job: Job) -> bool:
    return any(name.startswith("eval_") for name in metric_stats([job.id])[job.id])


def evaluate(model: str, *, dataset: str | None = None, suite: str | None = None, params: dict | None = None,
             name: str | None = None, with_base: bool = True, training: Job | None = None,
             method: str | None = None) -> list[Job]:
    """Queue an evaluation of `model` and, `with_base`, one of its base model on the same rows with
    the same settings unless one is queued, running or done: so a tuned model always has its base
    beside it. Returns the jobs queued, the base's first (it runs first: the tuned model's card then
    has both)."""
    if name:
        check_name(name, "evaluation")
    tuned = plan_evaluation(model, dataset=dataset, suite=suite, params=params, training=training, method=method)
    queued = []
    root = base_of(model)
    if with_base and root != model and tuned.params["SUITE"] != "judge":  # the judge compares the two itself
        made_by = training or _training_job(models.get_model(model))
        same = {k: v for k, v in (params or {}).items() if str(k).upper() != "JUDGE"}
        base = plan_evaluation(root, dataset=tuned.dataset, suite=tuned.params["SUITE"], params=same or None,
                               training=made_by, method=tuned.method or None)
        if base.params["ROW_KEY"] != tuned.params["ROW_KEY"]:
            log.warning("the base model's evaluation of %s scores other rows than its own", model)
        elif not any(e.params.get("ROW_KEY") == base.params["ROW_KEY"] and
                     e.status not in (JobStatus.FAILED, JobStatus.CANCELLED) for e in _evaluate_jobs(root)):
            queued.append(jobs._queue(base, None, "eval"))
    queued.append(jobs._queue(tuned, name, "eval"))
    return queued


def after_training(job: Job) -> list[Job]:
    """The evaluations a succeeded training queues: its model on the rows it held out, and its
    base model on the same rows unless that was done (`evaluate`). None when it held nothing out
    (it logged no `eval_` metric), its method has no evaluation stage, or
    DEEPE_EVALUATE_AFTER_TRAINING is 0."""
    if job.kind != JobKind.TRAIN or not evaluate_after_training() or not _logged_held_out_metrics(job):
        return []
    made = models.models_of_job(job.id)
    method_row = store.get_one(store.Method, name=job.method)
    if not made or method_row is None or StageName.EVALUATION not in method_row.stages:
        return []
    return evaluate(made[0].name, training=job, method=job.method)


def _result(job: Job) -> dict:
    output = Path(job.run_dir or ".") / "output"
    summary = {}
    try:
        summary = json.loads((output / "evaluation.json").read_text())
    except (OSError, ValueError):
        pass
    metrics = summary.get("metrics") or {}
    if not metrics and job.status == JobStatus.SUCCEEDED:
        metrics = {name: s["final"] for name, s in metric_stats([job.id])[job.id].items()}
    return {"job_id": job.id, "model": job.base_model, "suite": job.params.get("SUITE"), "dataset": job.dataset,
            "dataset_sha256": job.params.get("DATASET_SHA256"), "row_key": job.params.get("ROW_KEY"),
            "status": job.status, "error": job.error, "metrics": metrics, "rows": summary.get("rows"),
            "record": str(Path(job.run_dir or ".") / "evaluation.ipynb"),
            "predictions": str(output / "predictions.jsonl"), "finished_at": job.finished_at}


def _evaluate_jobs(model: str) -> list[Job]:
    with store.read_session() as s:
        return list(s.exec(select(Job).where(Job.kind == JobKind.EVALUATE, Job.base_model == model)
                           .order_by(Job.id.desc())))


def newest_id() -> int | None:
    """The id of the newest evaluate job that finished well (one query: what a list polls to
    know whether its scores changed)."""
    with store.read_session() as s:
        return s.exec(select(func.max(Job.id)).where(Job.kind == JobKind.EVALUATE,
                                                     Job.status == JobStatus.SUCCEEDED)).first()


def results(model: str) -> list[dict]:
    """A model's evaluate jobs, newest first, with their scores."""
    return [_result(job) for job in _evaluate_jobs(model)]


def latest(model: str, suite: str = "generation", row_key: str | None = None) -> dict | None:
    """The newest succeeded evaluation of `model` with `suite` (and `row_key`, where given)."""
    for job in _evaluate_jobs(model):
        if job.status == JobStatus.SUCCEEDED and job.params.get("SUITE") == suite and \
                (row_key is None or job.params.get("ROW_KEY") == row_key):
            return _result(job)
    return None


def read_predictions(result: dict | None) -> list[dict]:
    """The per-prompt rows of an evaluation (empty when it left none)."""
    if not result:
        return []
    rows = []
    try:
        with open(result["predictions"], encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
    except (OSError, ValueError):
        return []
    return rows


def row_score(row: dict) -> tuple[str | None, float | None]:
    """(name, value) of a predictions row's score: the first of ROW_SCORES it has."""
    scores = row.get("scores") or {}
    name = next((name for name in ROW_SCORES if name in scores), None)
    value = scores.get(name) if name else None
    return name, float(value) if isinstance(value, (int, float)) else None


def gain(name: str | None, base: float | None, tuned: float | None) -> float | None:
    """How much better the tuned score is than the base's (negative: worse), by the score's direction."""
    if base is None or tuned is None:
        return None
    return base - tuned if name in LOWER_ROW_SCORES else tuned - base


def side_by_side(model: str, suite: str = "generation") -> dict:
    """The tuned model's newest evaluation, its base model's on the same rows, and their answers
    joined on the prompt (`worse`: the tuned answer scores below the base's)."""
    tuned = latest(model, suite)
    base = None
    try:
        base_name = base_of(model)
    except DeepeError:
        base_name = None
    if tuned is not None and base_name and base_name != model:  # on the same rows, or none
        base = latest(base_name, suite, tuned["row_key"])
    base_rows = {row.get("prompt"): row for row in read_predictions(base)}
    rows = []
    for row in read_predictions(tuned):
        other = base_rows.get(row.get("prompt"), {})
        name, tuned_score = row_score(row)
        base_score = row_score(other)[1] if other else None
        change = gain(name, base_score, tuned_score)
        rows.append({"prompt": row.get("prompt", ""), "reference": row.get("reference", ""),
                     "tuned_answer": row.get("answer", ""),
                     "base_answer": other.get("answer", row.get("base_answer", "")),
                     "tuned_score": tuned_score, "base_score": base_score, "score": name, "gain": change,
                     "verdict": row.get("verdict"), "reason": row.get("reason"),
                     "worse": change is not None and change < 0})
    return {"model": model, "base_model": base_name, "suite": suite, "tuned": tuned, "base": base, "rows": rows}


def for_training(job_id: int, suite: str = "generation") -> dict:
    """`side_by_side` for the model a training made; empty parts when it made none."""
    made = models.models_of_job(job_id)
    if not made:
        return {"model": None, "base_model": None, "suite": suite, "tuned": None, "base": None, "rows": []}
    return side_by_side(made[0].name, suite)


def rerun(source: Job, name: str | None = None) -> Job:
    """Queue an evaluate job again with the same model, rows, suite and parameters."""
    job = Job(kind=JobKind.EVALUATE, method=source.method, base_model=source.base_model, dataset=source.dataset,
              params=dict(source.params), stage=StageName.EVALUATION, copied_from=source.id)
    models.get_model(source.base_model)
    require_kernel(stage_info(job).kernel, field="job")
    return jobs._queue(job, name, "eval")


def describe(result: dict) -> str:
    """One line: `generation on demo-sft (rows 3fa2c1…): eval_rougeL 0.41, …`."""
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result["metrics"].items()) if isinstance(v, (int, float)))
    return (f"{result['suite']} on {result['dataset']} (data {str(result.get('dataset_sha256') or '')[:12]}): "
            f"{metrics or result['status']}")


__all__ = ["SUITES", "after_training", "base_of", "evaluate", "for_training", "latest", "read_predictions",
           "results", "rerun", "side_by_side", "stage_info", "submit_evaluation"]
