"""Re-running a training from its record: the same method files, parameters, dataset and seed.

A job's provenance (`Job.provenance`, also the record's `metadata.deepe.provenance`) holds the
SHA-256 of its dataset file and stage files, its base model's fingerprint and its seed. A re-run
first checks them against the files as they are now and refuses, naming what changed, unless
forced: a re-run is only worth something if it can be the same run.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from . import datasets, evaluations, jobs, methods, models, store
from . import params as paramlib
from . import provenance as provenancelib
from .config import StageName
from .errors import DeepeError
from .kernels import kernel_environment
from .store import Job, JobKind, JobStatus


def _short(digest: str | None) -> str:
    return (digest or "none")[:12]


def _stage_files(job: Job) -> dict:
    """The stage files a re-run of `job` would run: an evaluation's one, else its method's."""
    if job.kind == JobKind.EVALUATE:
        return {StageName.EVALUATION: evaluations.stage_info(job)}
    return methods.stages_of(methods.get_method(job.method))


def changes_since(job: Job) -> list[str]:
    """What differs now from what `job` was made from: its dataset file, a stage file of its
    method, its base model (one phrase each, empty when nothing did)."""
    recorded = job.provenance or {}
    changes = []
    dataset = recorded.get("dataset")
    if dataset and job.dataset:
        path = Path(datasets.get_dataset(job.dataset).path)
        now = provenancelib.sha256_file(path) if path.is_file() else None
        if now != dataset.get("sha256"):
            where = "" if str(path) == dataset.get("path") else f", now {path}"
            changes.append(f"the dataset file of {job.dataset} changed (sha256 {_short(dataset.get('sha256'))} "
                           f"then, {_short(now) if now else 'missing'} now{where})")
    current = _stage_files(job)
    for stage, then in (recorded.get("stage_files") or {}).items():
        info = current.get(stage)
        name = then.get("source") or then.get("file") or stage
        if info is None:
            changes.append(f"method {job.method} no longer has its {stage} stage ({name})")
            continue
        path = Path(info.file)
        now = provenancelib.sha256_file(path) if path.is_file() else None
        if now != then.get("sha256"):
            changes.append(f"the {stage} stage file {name} of method {job.method} changed "
                           f"(sha256 {_short(then.get('sha256'))} then, {_short(now) if now else 'missing'} now)")
    model = recorded.get("base_model")
    if model and job.base_model:
        path = Path(models.get_model(job.base_model).path)
        if not path.is_dir():
            changes.append(f"the base model {job.base_model} is gone ({path})")
        else:
            now = provenancelib.model_fingerprint(path)
            files = provenancelib.changed_files(model, now) if now["sha256"] != model.get("sha256") else []
            if files:  # only its card differs: it describes the model, it does not change it
                what = "the model" if job.kind == JobKind.EVALUATE else "the base model"
                changes.append(f"{what} {job.base_model} changed ({', '.join(files[:3])}"
                               f"{f' and {len(files) - 3} more' if len(files) > 3 else ''})")
    return changes


def package_differences(job: Job) -> list[str]:
    """Package versions of the stage's kernel that differ from the recorded run's: not a reason
    to refuse (a re-run may show whether they matter), but worth saying."""
    recorded = (job.provenance or {}).get("packages") or {}
    kernel = (job.provenance or {}).get("kernel")
    if not recorded or not kernel:
        return []
    now = kernel_environment(kernel).get("packages") or {}
    return [f"{name} {recorded.get(name)} then, {now.get(name)} now" for name in sorted(recorded)
            if name in now and now.get(name) != recorded.get(name)]


def rerun_job(job_id: int, *, force: bool = False, name: str | None = None) -> tuple[Job, list[str]]:
    """Queue `job_id`'s training again with the same method files, parameters, dataset and seed,
    linked to it (`copied_from`, and `rerun_of` in the new job's provenance). Refuses, naming
    what changed since, unless `force`. Returns the new job and notes worth printing."""
    source = jobs.get_job(job_id)
    if source.kind not in (JobKind.TRAIN, JobKind.EVALUATE):
        raise DeepeError(f"job {source.id} is a {source.kind} job; only trainings and evaluations can be re-run",
                         field="job")
    notes: list[str] = []
    if not source.provenance or "stage_files" not in source.provenance:
        if not force:
            why = "it has not started yet" if source.status == JobStatus.QUEUED else \
                "it ran before runs recorded their provenance"
            raise DeepeError(f"job {source.id} has no provenance to check a re-run against ({why}); "
                             f"--force queues it anyway", field="job")
        notes.append(f"job {source.id} has no provenance: the re-run is not checked against it")
    else:
        changes = changes_since(source)
        if changes and not force:
            raise DeepeError(f"job {source.id} cannot be re-run as it ran: {'; '.join(changes)} "
                             f"(--force re-runs it anyway)", field="job")
        notes += [f"forced although {change}" for change in changes]
        differing = package_differences(source)
        if differing:
            notes.append("the kernel's packages differ from the first run's: " + ", ".join(differing))
    if source.kind == JobKind.EVALUATE:
        return _linked(evaluations.rerun(source, name=name), source), notes
    params = dict(source.params)
    recorded_seed = (source.provenance or {}).get("seed")
    defaults = methods.get_method(source.method).default_params
    if "SEED" not in params and recorded_seed is not None and "SEED" in defaults \
            and paramlib.default_value(defaults["SEED"]) != recorded_seed:
        params["SEED"] = recorded_seed  # the method's default seed changed since: keep the run's
    job = jobs.submit_training(source.method, source.base_model, source.dataset, name=name, params=params,
                               copied_from=source.id)
    return _linked(job, source), notes


def _linked(job: Job, source: Job) -> Job:
    """`rerun_of` in the new job's provenance."""
    table = Job.__table__
    with store.get_engine().begin() as conn:  # beside what a worker quick to claim it may have written
        before = conn.execute(select(table.c.provenance).where(table.c.id == job.id)).scalar()
        job.provenance = {**(before or {}), "rerun_of": source.id}
        conn.execute(update(table).where(table.c.id == job.id).values(provenance=job.provenance))
    return job
