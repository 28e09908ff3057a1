"""The job queue: submit, claim under a lease, heartbeat, finish, cancel, copy, reap.

Every status change is a compare-and-set `UPDATE … WHERE status=? [AND lease_owner=?]`,
so a worker that lost its lease can never write a job's final status.
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from pathlib import Path

from sqlalchemy import case, delete, func, or_, update
from sqlmodel import select

from . import config, datasets, methods, models, store, trainings
from . import params as paramlib
from .config import StageName
from .errors import DeepeError, NotFound
from .kernels import require_kernel
from .names import MAX_NAME_LENGTH, check_name
from .provenance import SAVING_DTYPES, model_dtype
from .store import ACTIVE, FINISHED, Job, JobKind, JobStatus, ModelKind


def submit_training(method: str, base_model: str, dataset: str, *, name: str | None = None,
                    params: dict | None = None, copied_from: int | None = None) -> Job:
    """Queue a training; checks method, kernel, model, dataset and parameters first.

    The job waits in the queue for a worker: `worker.ensure_worker()` starts one when none runs
    (the CLI and the widgets call it for you)."""
    training = trainings.for_method(method)  # its checks live in its room (deepe_widgets/trainings/)
    training.check_available(method)
    method_row = methods.get_method(method)
    if StageName.TRAINING not in method_row.stages:
        raise DeepeError(f"method {method!r} has no training stage", field="method")
    require_kernel(methods.stage_of(method_row, StageName.TRAINING).kernel, field="method")
    methods.check_kernel_packages(method_row)
    model_row = models.get_model(base_model)
    if model_row.kind == ModelKind.BASE:
        models.check_model_folder(Path(model_row.path))
    dataset_row = datasets.get_dataset(dataset)
    if not Path(dataset_row.path).is_file():
        raise DeepeError(f"dataset {dataset!r} points at {dataset_row.path}, which no longer exists",
                         field="dataset")
    training.check_extra_args(method_row, params or {})  # before `resolve`: says why a method takes none
    values = paramlib.resolve(params or {}, method_row.default_params)
    training.check_training(method_row, model_row, dataset_row, values)
    if name:
        check_name(name, "training")
    check_model_name_fits(base_model, name)
    job = Job(kind=JobKind.TRAIN, method=method, base_model=base_model, dataset=dataset, params=values,
              copied_from=copied_from, stage=StageName.TRAINING)
    return _queue(job, name, "train")


def check_model_name_fits(base_model: str, name: str | None) -> None:
    """Refuse, at submit, a training whose model name (`models.trained_model_name`) would be too long
    to register once it has trained."""
    planned = models.trained_model_name(base_model, name or "train" + "0" * len(str(paramlib.MAX_ID)),
                                        "YYYYMMDD", "xxxx")
    if len(planned) > MAX_NAME_LENGTH:
        over = len(planned) - MAX_NAME_LENGTH
        planned = models.trained_model_name(base_model, name or "train<id>", "<date>", "<id>")
        raise DeepeError(f"the model this training makes would be named {planned}, {over} characters over "
                         f"the {MAX_NAME_LENGTH} a name may have; give a shorter training "
                         f"name (--name)" + ("" if name and len(name) > over else
                                             " or register the base model under a shorter name"), field="name")


def submit_save(model_name: str, *, dtype: str = "auto", name: str | None = None,
                keep_adapter: bool = False) -> Job:
    """Queue the saving stage: merge a Customized Model into its base -> a Complete Model
    (`keep_adapter`: the base with the adapter beside it, where the saving stage offers FUSE_LORA).
    `dtype` auto keeps the base model's own (bf16 stays bf16: the job's DTYPE is that dtype);
    float32, float16 or bfloat16 cast."""
    if dtype not in SAVING_DTYPES:
        raise DeepeError(f"dtype must be {', '.join(SAVING_DTYPES[:-1])} or {SAVING_DTYPES[-1]}, not {dtype!r}",
                         field="dtype")
    customized = models.get_model(model_name)
    if customized.kind != ModelKind.CUSTOMIZED:
        raise DeepeError(f"{model_name!r} is a {customized.kind} model; only a customized model (an adapter) "
                         f"can be saved to a complete model", field="model")
    method = methods.get_method(customized.method)
    if StageName.SAVING not in method.stages:
        raise DeepeError(f"method {method.name!r} has no saving stage (its lifecycle is {method.lifecycle!r})",
                         field="model")
    require_kernel(methods.stage_of(method, StageName.SAVING).kernel, field="model")
    methods.check_kernel_packages(method, StageName.SAVING)
    base = models.get_model(customized.parent)
    if name:
        check_name(name, "save")
    if dtype == "auto":  # resolved here, so a method's own saving notebook gets a dtype it knows
        dtype = model_dtype(base.path)
    params = {"MODEL_PATH": base.path, "ADAPTER_PATH": customized.path, "DTYPE": dtype}
    if keep_adapter:
        if "FUSE_LORA" not in methods.stage_parameter_names(method, StageName.SAVING):
            raise DeepeError(f"method {method.name!r} always merges the adapter: its saving stage has no "
                             f"FUSE_LORA parameter", field="keep_adapter")
        params["FUSE_LORA"] = False
    job = Job(kind=JobKind.SAVE, method=method.name, base_model=customized.name, stage=StageName.SAVING, params=params)
    return _queue(job, name, "save")


def _queue(job: Job, name: str | None, prefix: str) -> Job:
    with store.session() as s:
        s.add(job)
        s.flush()
        # Metric rows left under this id (a deleted job's, or a stray writer's) must not join the new job.
        s.exec(delete(store.Metric).where(store.Metric.job_id == job.id))
        job.name = name or f"{prefix}{job.id}"
        job.run_dir = str(run_folder(job))
        # Never an existing folder: a fresh, restored or switched database hands out id 1 again, and
        # a run that found another's folder would take its record and resume from its checkpoint.
        try:
            Path(job.run_dir).mkdir(mode=0o700)
        except FileExistsError:
            raise DeepeError(f"run folder {job.run_dir} already exists; nothing was queued") from None
        s.add(job)
    return job


def run_folder(job: Job) -> Path:
    """`$DEEPE_HOME/runs/<id>-<first 8 of uuid>`: the id for people, the uuid so no two databases'
    jobs share a folder."""
    return config.runs_dir() / f"{job.id}-{job.uuid[:8]}"


def get_job(job_id: int | str) -> Job:
    try:
        key = int(job_id)
    except (TypeError, ValueError):
        raise DeepeError(f"job id must be a number, not {job_id!r}", field="job") from None
    if not 1 <= key <= paramlib.MAX_ID:  # beyond the id column's range: no such job (and no OverflowError)
        raise NotFound(f"no job with id {key}", field="job")
    with store.read_session() as s:
        job = s.get(Job, key)
    if job is None:
        raise NotFound(f"no job with id {key}", field="job")
    return job


def list_jobs(limit: int | None = None, status: str | None = None, offset: int = 0) -> list[Job]:
    """Jobs, newest first; `limit` and `offset` page through them."""
    with store.read_session() as s:
        stmt = select(Job).order_by(Job.id.desc())
        if status:
            stmt = stmt.where(Job.status == status)
        if limit:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        return list(s.exec(stmt))


def jobs_overview() -> tuple[int, int, int]:
    """(jobs, newest id, unfinished jobs) in one cheap query: a list polls it to learn whether
    anything changed before it reads any rows."""
    with store.read_session() as s:
        total, newest, unfinished = s.exec(select(
            func.count(Job.id), func.coalesce(func.max(Job.id), 0),
            func.coalesce(func.sum(case((Job.status.not_in(FINISHED), 1), else_=0)), 0))).one()
    return int(total), int(newest), int(unfinished)


def _cas(job_id: int, expect_status: tuple[str, ...], owner: str | None = None, *, conn=None,
         **values) -> bool:
    """Compare-and-set on a job row; True when this call made the change.

    With `conn`, inside that transaction (so other writes commit only with this one)."""
    table = Job.__table__
    stmt = update(table).where(table.c.id == job_id, table.c.status.in_(expect_status))
    if owner is not None:
        stmt = stmt.where(table.c.lease_owner == owner)
    if conn is not None:
        return conn.execute(stmt.values(**values)).rowcount == 1
    with store.get_engine().begin() as own:
        return own.execute(stmt.values(**values)).rowcount == 1


def _lease_until():
    """The lease's expiry on the database's clock."""
    return store.db_now() + config.lease_seconds()


def claim_next_job(worker_id: str, kinds: tuple[str, ...] | None = None) -> Job | None:
    """Claim the oldest queued job for `worker_id` (jobs run in submit order); with `kinds`,
    the oldest of those kinds (a worker's second slot takes no training)."""
    table = Job.__table__
    for _ in range(5):
        with store.read_session() as s:
            stmt = select(Job.id).where(Job.status == JobStatus.QUEUED)
            if kinds is not None:
                stmt = stmt.where(Job.kind.in_(kinds))
            job_id = s.exec(stmt.order_by(Job.id).limit(1)).first()
        if job_id is None:
            return None
        if _cas(job_id, (JobStatus.QUEUED,), lease_owner=worker_id, lease_expires=_lease_until(),
                status=JobStatus.RUNNING, attempt=table.c.attempt + 1,
                started_at=func.coalesce(table.c.started_at, store.db_now()), error=None, error_detail={}):
            return get_job(job_id)
    return None


def renew_lease(job_id: int, worker_id: str) -> bool:
    """Heartbeat: extend the lease while this worker still owns the job."""
    return _cas(job_id, ACTIVE, owner=worker_id, lease_expires=_lease_until())


def finish_job(job_id: int, worker_id: str, status: str, error: str | None = None,
               error_detail: dict | None = None, *, conn=None, warnings: list[str] | None = None) -> bool:
    """Write a final status, only while holding the lease (inside `conn`'s transaction if given)."""
    if status not in FINISHED:
        raise ValueError(f"{status!r} is not a final status")
    return _cas(job_id, ACTIVE, owner=worker_id, conn=conn, status=status, finished_at=store.db_now(),
                lease_owner=None, lease_expires=None, error=error, error_detail=error_detail or {},
                warnings=warnings or None)


def hand_back(job_id: int, worker_id: str) -> bool:
    """Return a running job to the queue without spending an attempt (its worker is stopping);
    the next attempt resumes from its newest complete checkpoint."""
    table = Job.__table__
    return _cas(job_id, ACTIVE, owner=worker_id, status=JobStatus.QUEUED, lease_owner=None,
                lease_expires=None, attempt=func.max(table.c.attempt - 1, 0)
                if store.get_engine().dialect.name == "sqlite" else func.greatest(table.c.attempt - 1, 0))


def cancel_job(job_id: int) -> Job:
    """Cancel a queued job now, or ask the worker to stop a running one (it kills the kernel)."""
    job = get_job(job_id)
    if job.status in FINISHED:
        raise DeepeError(f"job {job.id} already {job.status}; only queued or running jobs can be cancelled",
                         field="job")
    if job.status == JobStatus.QUEUED and _cas(job.id, (JobStatus.QUEUED,), status=JobStatus.CANCELLED,
                                               finished_at=store.db_now()):
        return get_job(job.id)
    _cas(job.id, (JobStatus.RUNNING,), status=JobStatus.CANCELLING)
    return get_job(job.id)


def check_removable(job: Job, session=None) -> None:
    """Why this job cannot be removed now, as a DeepeError: it is queued or running, or a model came from
    it (made by it, or carrying its card: a Complete Model merged from its training's adapter)."""
    if job.status not in FINISHED:
        raise DeepeError(f"job {job.id} ({job.name}) is {job.status}; only a finished job can be removed: "
                         f"cancel it first (deepe jobs cancel {job.id}) and wait until it has stopped", field="job")
    with nullcontext(session) if session is not None else store.read_session() as s:
        found = s.exec(select(store.ModelRecord).order_by(store.ModelRecord.id))
        made = [m.name for m in found if m.job_id == job.id or (m.meta or {}).get("job_id") == job.id]
    if made:
        which = f"the model {made[0]}" if len(made) == 1 else f"the models {', '.join(made)}"
        raise DeepeError(f"job {job.id} ({job.name}) made {which}, whose card points at it; delete "
                         f"{'it' if len(made) == 1 else 'them'} first (deepe models delete {made[0]}), then the job",
                         field="job")


def delete_job(job_id: int) -> Path | None:
    """Remove a finished job from the list: its row, its metrics, and its run folder (the workspace made
    it under runs/; it holds the job's record and checkpoints, which nothing reads once the job is gone).
    Refused, in words, as `check_removable` says.

    Returns the run folder removed, or None when there was none."""
    get_job(job_id)  # "no job with id …" in its words
    with store.session() as s:  # checked and deleted in one transaction: no worker claims it meanwhile
        row = s.exec(select(Job).where(Job.id == int(job_id)).with_for_update()).one()
        check_removable(row, session=s)
        run_dir = row.run_dir
        s.exec(delete(store.Metric).where(store.Metric.job_id == row.id))
        s.delete(row)
    folder = Path(run_dir) if run_dir else None
    runs = config.runs_dir().resolve()
    # only a folder the workspace made under runs/: a run_dir edited by hand never takes another folder
    if folder is None or not folder.is_dir() or folder.resolve().parent != runs:
        return None
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def copy_job(job_id: int, *, name: str | None = None, params: dict | None = None) -> Job:
    """Queue a new training with a job's configuration, some parameters changed ("Copy the Train")."""
    source = get_job(job_id)
    if source.kind != JobKind.TRAIN:
        raise DeepeError(f"job {source.id} is a {source.kind} job; only trainings can be copied", field="job")
    merged = {**{k.lower(): v for k, v in source.params.items()}, **(params or {})}
    return submit_training(source.method, source.base_model, source.dataset, name=name, params=merged,
                           copied_from=source.id)


def reap_expired() -> list[int]:
    """Requeue jobs whose lease expired (a dead worker), or fail them after max attempts.

    Expiry is read on the database's clock, so workers on hosts whose clocks differ agree."""
    with store.read_session() as s:
        # a running job with no lease at all (left by hand, or by a version that wrote none) is expired too
        stale = list(s.exec(select(Job).where(Job.status.in_(ACTIVE), or_(Job.lease_expires < store.db_now(),
                                                                           Job.lease_expires.is_(None)))))
    touched = []
    for job in stale:
        # Each CAS repeats the expiry test: a heartbeat that landed since wins.
        expired = dict(owner=job.lease_owner, lease_owner=None, lease_expires=None)
        if job.status == JobStatus.CANCELLING:
            done = _cas_expired(job.id, JobStatus.CANCELLING, status=JobStatus.CANCELLED,
                                finished_at=store.db_now(), **expired)
        elif job.attempt >= job.max_attempts:
            done = _cas_expired(job.id, JobStatus.RUNNING, status=JobStatus.FAILED, finished_at=store.db_now(),
                                error=f"the worker stopped answering {job.attempt} times; "
                                      f"gave up after {job.max_attempts} attempts", **expired)
        else:
            done = _cas_expired(job.id, JobStatus.RUNNING, status=JobStatus.QUEUED, **expired)
        if done:
            touched.append(job.id)
    return touched


def _cas_expired(job_id: int, expect: str, owner: str | None, **values) -> bool:
    table = Job.__table__
    stmt = update(table).where(table.c.id == job_id, table.c.status == expect,
                               table.c.lease_owner.is_(None) if owner is None else table.c.lease_owner == owner,
                               or_(table.c.lease_expires < store.db_now(), table.c.lease_expires.is_(None)))
    with store.get_engine().begin() as conn:
        return conn.execute(stmt.values(**values)).rowcount == 1


def wait_for(job_id: int, timeout: float | None = None, poll: float = 0.5, on_poll=None) -> Job:
    """Block until a job finishes (or `timeout` seconds pass); returns the job."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = get_job(job_id)
        if on_poll:
            on_poll(job)
        if job.status in FINISHED:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(poll)


def job_records(job: Job) -> list[str]:
    """The executed notebooks of a job (its auditable record)."""
    if not job.run_dir or not Path(job.run_dir).is_dir():
        return []
    return sorted(str(p) for p in Path(job.run_dir).glob("*.ipynb") if not p.name.endswith(".input.ipynb"))


def job_summary(job: Job) -> dict:
    """`deepe jobs show --json`."""
    artifacts = [{"kind": m.kind, "name": m.name, "path": m.path} for m in models.models_of_job(job.id)]
    return {
        "id": job.id, "uuid": job.uuid, "name": job.name, "kind": job.kind, "status": job.status,
        "stage": job.stage, "method": job.method, "base_model": job.base_model, "dataset": job.dataset,
        "params": job.params, "run_dir": job.run_dir, "records": job_records(job), "artifacts": artifacts,
        "error": job.error, "error_detail": job.error_detail, "warnings": job.warnings or [],
        "attempt": job.attempt,
        "copied_from": job.copied_from, "progress": {"step": job.progress_step, "total": job.progress_total},
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }


def format_time(ts: float | None) -> str:
    """A job timestamp for lists: local time to the minute, or "-"."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def format_duration(job: Job) -> str:
    """How long a job has run (so far, while running): "3m07s", or "-" before it starts."""
    if not job.started_at:
        return "-"
    seconds = int((job.finished_at or time.time()) - job.started_at)
    return f"{seconds // 60}m{seconds % 60:02d}s"
