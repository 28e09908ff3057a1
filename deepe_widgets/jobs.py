"""The job queue: submit, claim under a lease, heartbeat, finish, cancel, copy, reap.

Every status change is a compare-and-set `UPDATE … WHERE status=? [AND lease_owner=?]`,
so a worker that lost its lease can never write a job's final status.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import delete, update
from sqlmodel import select

from . import config, store
from .errors import DeepeError, NotFound
from .store import CANCELLED, CANCELLING, FAILED, FINISHED, QUEUED, RUNNING, Job


def submit_training(method: str, base_model: str, dataset: str, *, name: str | None = None,
                    params: dict | None = None, copied_from: int | None = None,
                    start_worker: bool = True) -> Job:
    """Queue a training; checks method, kernel, model, dataset and parameters first."""
    from . import datasets, methods, models
    from . import params as paramlib
    from .kernels import require_kernel
    from .names import check_name

    method_row = methods.get_method(method)
    if "training" not in method_row.stages:
        raise DeepeError(f"method {method!r} has no training stage", field="method")
    require_kernel(method_row.stages["training"]["kernel"], field="method")
    methods.check_kernel_packages(method_row)
    model_row = models.get_model(base_model)
    if model_row.kind == "base":
        models.check_model_folder(Path(model_row.path))
    dataset_row = datasets.get_dataset(dataset)
    if not Path(dataset_row.path).is_file():
        raise DeepeError(f"dataset {dataset!r} points at {dataset_row.path}, which no longer exists",
                         field="dataset")
    values = paramlib.resolve(params or {}, method_row.default_params)
    if method in methods.BUILTINS:  # the built-ins read prompt/response columns the standard way
        full = {**{k: paramlib._default_value(v) for k, v in method_row.default_params.items()}, **values}
        datasets.check_columns(dataset_row, full.get("PromptInputColumn", ""), full.get("PromptOutputColumn", ""))
    if name:
        check_name(name, "training")
    job = Job(kind="train", method=method, base_model=base_model, dataset=dataset, params=values,
              copied_from=copied_from, stage="training")
    return _queue(job, name, "train", start_worker)


def submit_save(model_name: str, *, dtype: str = "float32", name: str | None = None,
                start_worker: bool = True) -> Job:
    """Queue the saving stage: merge a Customized Model into its base -> a Complete Model."""
    from . import methods, models
    from .kernels import require_kernel
    from .names import check_name

    if dtype not in ("float32", "float16", "bfloat16"):
        raise DeepeError(f"dtype must be float32, float16 or bfloat16, not {dtype!r}", field="dtype")
    customized = models.get_model(model_name)
    if customized.kind != "customized":
        raise DeepeError(f"{model_name!r} is a {customized.kind} model; only a customized model (an adapter) "
                         f"can be saved to a complete model", field="model")
    method = methods.get_method(customized.method)
    if "saving" not in method.stages:
        raise DeepeError(f"method {method.name!r} has no saving stage (its lifecycle is {method.lifecycle!r})",
                         field="model")
    require_kernel(method.stages["saving"]["kernel"], field="model")
    methods.check_kernel_packages(method, "saving")
    base = models.get_model(customized.parent)
    if name:
        check_name(name, "save")
    job = Job(kind="save", method=method.name, base_model=customized.name, stage="saving",
              params={"MODEL_PATH": base.path, "ADAPTER_PATH": customized.path, "DTYPE": dtype})
    return _queue(job, name, "save", start_worker)


def _queue(job: Job, name: str | None, prefix: str, start_worker: bool) -> Job:
    with store.session() as s:
        s.add(job)
        s.flush()
        # Metric rows left under this id (a deleted job's, or a stray writer's) must not join the new job.
        s.exec(delete(store.Metric).where(store.Metric.job_id == job.id))
        job.name = name or f"{prefix}{job.id}"
        job.run_dir = str(config.runs_dir() / str(job.id))
        s.add(job)
    Path(job.run_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    if start_worker:
        ensure_worker()
    return job


def get_job(job_id: int | str) -> Job:
    try:
        key = int(job_id)
    except (TypeError, ValueError):
        raise DeepeError(f"job id must be a number, not {job_id!r}", field="job") from None
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
    from sqlalchemy import case, func

    with store.read_session() as s:
        total, newest, unfinished = s.exec(select(
            func.count(Job.id), func.coalesce(func.max(Job.id), 0),
            func.coalesce(func.sum(case((Job.status.not_in(store.FINISHED), 1), else_=0)), 0))).one()
    return int(total), int(newest), int(unfinished)


def _cas(job_id: int, expect_status: tuple[str, ...], owner: str | None = None, **values) -> bool:
    """Compare-and-set on a job row; True when this call made the change."""
    table = Job.__table__
    stmt = update(table).where(table.c.id == job_id, table.c.status.in_(expect_status))
    if owner is not None:
        stmt = stmt.where(table.c.lease_owner == owner)
    with store.get_engine().begin() as conn:
        return conn.execute(stmt.values(**values)).rowcount == 1


def claim_next_job(worker_id: str) -> Job | None:
    """Claim the oldest queued job for `worker_id` (jobs run in submit order)."""
    for _ in range(5):
        with store.read_session() as s:
            job = s.exec(select(Job).where(Job.status == QUEUED).order_by(Job.id).limit(1)).first()
        if job is None:
            return None
        now = store.now()
        if _cas(job.id, (QUEUED,), lease_owner=worker_id, lease_expires=now + config.lease_seconds(),
                status=RUNNING, attempt=job.attempt + 1, started_at=job.started_at or now,
                error=None, error_detail={}):
            return get_job(job.id)
    return None


def renew_lease(job_id: int, worker_id: str) -> bool:
    """Heartbeat: extend the lease while this worker still owns the job."""
    return _cas(job_id, (RUNNING, CANCELLING), owner=worker_id,
                lease_expires=store.now() + config.lease_seconds())


def finish_job(job_id: int, worker_id: str, status: str, error: str | None = None,
               error_detail: dict | None = None) -> bool:
    """Write a final status, only while holding the lease."""
    assert status in FINISHED
    return _cas(job_id, (RUNNING, CANCELLING), owner=worker_id, status=status, finished_at=store.now(),
                lease_owner=None, lease_expires=None, error=error, error_detail=error_detail or {})


def cancel_job(job_id: int) -> Job:
    """Cancel a queued job now, or ask the worker to stop a running one (it kills the kernel)."""
    job = get_job(job_id)
    if job.status in FINISHED:
        raise DeepeError(f"job {job.id} already {job.status}; only queued or running jobs can be cancelled",
                         field="job")
    if job.status == QUEUED and _cas(job.id, (QUEUED,), status=CANCELLED, finished_at=store.now()):
        return get_job(job.id)
    _cas(job.id, (RUNNING,), status=CANCELLING)
    return get_job(job.id)


def copy_job(job_id: int, *, name: str | None = None, params: dict | None = None,
             start_worker: bool = True) -> Job:
    """Queue a new training with a job's configuration, some parameters changed ("Copy the Train")."""
    source = get_job(job_id)
    if source.kind != "train":
        raise DeepeError(f"job {source.id} is a {source.kind} job; only trainings can be copied", field="job")
    merged = {**{k.lower(): v for k, v in source.params.items()}, **(params or {})}
    return submit_training(source.method, source.base_model, source.dataset, name=name, params=merged,
                           copied_from=source.id, start_worker=start_worker)


def reap_expired() -> list[int]:
    """Requeue jobs whose lease expired (a dead worker), or fail them after max attempts."""
    now = store.now()
    with store.read_session() as s:
        stale = list(s.exec(select(Job).where(Job.status.in_((RUNNING, CANCELLING)),
                                              Job.lease_expires < now)))
    touched = []
    for job in stale:
        if job.status == CANCELLING:
            done = _cas(job.id, (CANCELLING,), owner=job.lease_owner, status=CANCELLED,
                        finished_at=now, lease_owner=None, lease_expires=None)
        elif job.attempt >= job.max_attempts:
            done = _cas(job.id, (RUNNING,), owner=job.lease_owner, status=FAILED, finished_at=now,
                        lease_owner=None, lease_expires=None,
                        error=f"the worker stopped answering {job.attempt} times; "
                              f"gave up after {job.max_attempts} attempts")
        else:
            done = _cas(job.id, (RUNNING,), owner=job.lease_owner, status=QUEUED,
                        lease_owner=None, lease_expires=None)
        if done:
            touched.append(job.id)
    return touched


# --- workers ---------------------------------------------------------------------------

def live_workers() -> list[store.Worker]:
    cutoff = store.now() - config.lease_seconds()
    with store.read_session() as s:
        return list(s.exec(select(store.Worker).where(store.Worker.heartbeat_at >= cutoff)))


def ensure_worker() -> int | None:
    """Start a background worker when none is alive; returns its pid.

    Detached in its own session, with output to a file, so it outlives the
    notebook kernel, Voila app or shell that submitted the job.
    """
    if live_workers():
        return None
    logs = config.workspace_dir("logs")
    log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deepe_widgets.worker", "--idle-exit", str(config.worker_idle_exit_seconds())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env=worker_environment())
    # Register at once so a second submit a moment later does not start another.
    with store.session() as s:
        s.add(store.Worker(id=f"{socket.gethostname()}-{proc.pid}", pid=proc.pid, host=socket.gethostname()))
    return proc.pid


def worker_environment() -> dict:
    """The environment workers and stage kernels get: the same workspace and database."""
    env = dict(os.environ)
    env["DEEPE_HOME"] = str(config.deepe_home())
    env["DEEPE_DB_URL"] = config.db_url()
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


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
    from . import models

    artifacts = [{"kind": m.kind, "name": m.name, "path": m.path}
                 for m in models.list_models() if m.job_id == job.id]
    return {
        "id": job.id, "uuid": job.uuid, "name": job.name, "kind": job.kind, "status": job.status,
        "stage": job.stage, "method": job.method, "base_model": job.base_model, "dataset": job.dataset,
        "params": job.params, "run_dir": job.run_dir, "records": job_records(job), "artifacts": artifacts,
        "error": job.error, "error_detail": job.error_detail, "attempt": job.attempt,
        "copied_from": job.copied_from, "progress": {"step": job.progress_step, "total": job.progress_total},
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }


def metrics_for(job_id: int, after_id: int = 0, name: str | None = None) -> list:
    """Metric rows (id, job_id, step, name, value, epoch, wall_time) of a job with id > after_id,
    oldest first; pollers pass the last id they saw. Plain rows, not ORM objects: a chart
    may read 100,000 of them."""
    from sqlalchemy import select as core_select

    table = store.Metric.__table__
    stmt = core_select(table).where(table.c.job_id == job_id, table.c.id > after_id).order_by(table.c.id)
    if name is not None:
        stmt = stmt.where(table.c.name == name)
    with store.get_engine().execution_options(deepe_read=True).connect() as conn:
        return list(conn.execute(stmt))


def metric_series(job_ids: list[int]) -> dict[int, dict[str, tuple[list, list]]]:
    """job id -> metric name -> (steps, values), ordered by step: the curves of several jobs
    in one query, reading only the columns a chart needs."""
    from sqlalchemy import select as core_select

    table = store.Metric.__table__
    stmt = (core_select(table.c.job_id, table.c.name, table.c.step, table.c.value)
            .where(table.c.job_id.in_([int(i) for i in job_ids]))
            .order_by(table.c.job_id, table.c.name, table.c.step))
    out: dict[int, dict[str, tuple[list, list]]] = {int(i): {} for i in job_ids}
    with store.get_engine().execution_options(deepe_read=True).connect() as conn:
        for job_id, name, step, value in conn.execute(stmt):
            xs, ys = out[job_id].setdefault(name, ([], []))
            xs.append(step)
            ys.append(value)
    return out


def last_metrics(job_ids: list[int], name: str) -> dict[int, float]:
    """The newest value of one metric for each job (the list's "last loss" column), in one query."""
    from sqlalchemy import and_, func, select as core_select

    if not job_ids:
        return {}
    table = store.Metric.__table__
    newest = (core_select(table.c.job_id, func.max(table.c.step).label("step"))
              .where(table.c.job_id.in_(job_ids), table.c.name == name).group_by(table.c.job_id).subquery())
    stmt = core_select(table.c.job_id, table.c.value).join(
        newest, and_(table.c.job_id == newest.c.job_id, table.c.step == newest.c.step)).where(table.c.name == name)
    with store.get_engine().execution_options(deepe_read=True).connect() as conn:
        return {job_id: value for job_id, value in conn.execute(stmt)}


def format_time(ts: float | None) -> str:
    """A job timestamp for lists: local time to the minute, or "-"."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def format_duration(job: Job) -> str:
    """How long a job has run (so far, while running): "3m07s", or "-" before it starts."""
    if not job.started_at:
        return "-"
    seconds = int((job.finished_at or time.time()) - job.started_at)
    return f"{seconds // 60}m{seconds % 60:02d}s"
