"""The executors' base: the template every backend follows, the job's lease, and its heartbeat loop.

`ExecutionManager.process` is a fixed template (before start → execute →
on failure / on complete) with every step inside one failure path: whatever goes
wrong, the job gets one final status with the real reason, and the worker goes on.
A backend writes `execute()`, which starts its stage and hands a `RunningStage` to
`ExecutionManager.follow`, the one loop that renews the lease and stops the stage when it must.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError

from .. import config, deployments, evaluations, gpus, jobs, methods, models, publishing, store
from .. import params as paramlib
from ..errors import DatabaseUnavailable, DeepeError, StageFailed
from ..runtime import STOP_FILE
from ..store import Job, JobKind, JobStatus

log = logging.getLogger("deepe.executor")



def stamp_log(path: Path, message: str) -> None:
    """A line of the workbench's own in the stage log the Train Log shows."""
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"[deepe] {time.strftime('%Y-%m-%d %H:%M:%S')} INFO    {message}\n")
    except OSError:
        pass

class LeaseLost(Exception):
    """Another worker (or the reaper) took the job, or may now take it: stop and write nothing."""


# What a database that restarts, fails over or drops a connection raises: worth another try.
DB_UNAVAILABLE = (OperationalError, InterfaceError, DatabaseUnavailable)  # the last: a first connect that failed


class Lease:
    """A worker's hold on a running job: renewed by heartbeat, and kept through a database that does
    not answer for a while (a restart, a fail-over) until the lease runs out, counted from its last
    renewal. Then it is lost for real: the reaper may hand the job to another worker as soon as the
    database answers again."""

    MAX_RETRY_SECONDS = 5.0

    def __init__(self, job_id: int, worker_id: str, heartbeat_seconds: float):
        self.job_id = job_id
        self.worker_id = worker_id
        self.heartbeat_seconds = heartbeat_seconds
        now = time.monotonic()
        self.valid_until = now + config.lease_seconds()  # the job was claimed just now
        self.next_beat = now + heartbeat_seconds
        self.unreachable_since: float | None = None

    @property
    def retry_seconds(self) -> float:
        """How long to wait before the next try while the database does not answer (0: it answers)."""
        if self.unreachable_since is None:
            return 0.0
        return min(self.MAX_RETRY_SECONDS, max(0.5, (time.monotonic() - self.unreachable_since) / 4),
                   max(0.1, self.valid_until - time.monotonic()))

    def _unanswered(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
            log.warning("job %s: the database did not answer (%s); trying again until the lease runs out "
                        "in %.0f s", self.job_id, str(exc).strip().splitlines()[0] if str(exc).strip() else
                        type(exc).__name__, self.valid_until - now)
        if now >= self.valid_until:
            raise LeaseLost(f"the database did not answer for {now - self.unreachable_since:.0f} s: the lease "
                            f"ran out") from exc

    def _answered(self) -> None:
        if self.unreachable_since is not None:
            log.info("job %s: the database answers again (after %.1f s)", self.job_id,
                     time.monotonic() - self.unreachable_since)
        self.unreachable_since = None

    def read(self) -> Job | None:
        """The job's row; None while the database does not answer (LeaseLost once the lease ran out)."""
        try:
            job = jobs.get_job(self.job_id)
        except DB_UNAVAILABLE as exc:
            self._unanswered(exc)
            return None
        self._answered()
        return job

    def renew(self) -> None:
        """Heartbeat, when one is due; LeaseLost when the job is another's, or the lease ran out unrenewed."""
        began = time.monotonic()
        if began < self.next_beat:
            if began >= self.valid_until:
                raise LeaseLost("the lease ran out before it could be renewed")
            return
        try:
            held = jobs.renew_lease(self.job_id, self.worker_id)
        except DB_UNAVAILABLE as exc:
            self.next_beat = began + 0.5
            self._unanswered(exc)
            return
        if not held:
            raise LeaseLost()
        self._answered()
        self.valid_until = began + config.lease_seconds()  # counted from before the write: never late
        self.next_beat = began + self.heartbeat_seconds

    def call(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)`, a database write or read, tried again while the database does not
        answer (renewing the lease meanwhile); LeaseLost once the lease ran out."""
        while True:
            try:
                result = fn(*args, **kwargs)
            except DB_UNAVAILABLE as exc:
                self._unanswered(exc)
                time.sleep(self.retry_seconds)
                self.renew()
                continue
            self._answered()
            return result


class Cancelled(Exception):
    """The user cancelled the job while it ran."""


class ReturnToQueue(Exception):
    """The worker is stopping: the job goes back to the queue (after a checkpoint, unless `stop_now`).

    Not `runtime.HandedBack`, which the training raises inside the kernel once it saved that checkpoint:
    the executor sees that stage end, and returns the job to the queue with this."""


class RunningStage:
    """A stage underway on a backend: the steps of its own that `ExecutionManager.follow` asks for."""

    poll_seconds = 0.25
    detail: dict = {}  # added to the job's error_detail when the workbench stops the stage (e.g. the Ray job)

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; True once the stage has ended (its outcome is then the backend's to read)."""
        raise NotImplementedError

    def running_since(self) -> float | None:
        """When (time.monotonic) the stage began to run: STAGE_TIMEOUT counts from there (None: not yet)."""
        raise NotImplementedError

    def stop(self, why: str) -> None:
        """Stop the stage now (`why`: "cancelled", or the timeout's message)."""
        raise NotImplementedError

    def worker_stopping(self, now: bool) -> None:
        """The worker is stopping: raise ReturnToQueue when the job should go back now, else ask the stage
        to stop at a checkpoint (`now`: without waiting for one)."""
        raise ReturnToQueue()


class ExecutionManager:
    """The template every backend follows; a backend writes `execute()`, which may `follow` its stage."""

    def __init__(self, worker_id: str, heartbeat_seconds: float | None = None, warm_kernels: int | None = None):
        """`warm_kernels`: how many kernelspecs `warm` may keep a kernel started for
        (None: `DEEPE_WARM_KERNELS`; 0: none)."""
        self.worker_id = worker_id
        self.heartbeat_seconds = heartbeat_seconds or max(1.0, config.lease_seconds() / 3)
        self.warm_kernels = config.warm_kernels() if warm_kernels is None else warm_kernels
        self.stopping = threading.Event()  # set: hand the running job back after a checkpoint
        self.stop_now = False  # with `stopping`: hand it back without waiting for a checkpoint
        self.lease: Lease | None = None  # the running job's
        # this worker's GPUs, leased to its stages one by one (None: not managed, no GPU on this host)
        self.gpus: list[str] | None = None

    def process(self, job: Job) -> str | None:
        """Run `job` and write its final status; returns it (None: the lease was lost, or the job
        went back to the queue). Never raises for a job's sake; a database that does not answer
        for a while is waited for, until the lease runs out."""
        self.lease = lease = Lease(job.id, self.worker_id, self.heartbeat_seconds)
        try:
            try:
                self.before_start(job)
                self.execute(job)
                return lease.call(self.on_complete, job)
            except ReturnToQueue:
                returned = lease.call(jobs.hand_back, job.id, self.worker_id)
                log.info("job %s handed back to the queue (%s)", job.id, "ok" if returned else "lease lost")
                return JobStatus.QUEUED if returned else None
            except Cancelled:
                done = lease.call(jobs.finish_job, job.id, self.worker_id, JobStatus.CANCELLED,
                                  error="cancelled by the user")
                return JobStatus.CANCELLED if done else None
            except StageFailed as exc:
                return self.on_failure(job, exc.message, exc.detail)
            except LeaseLost:
                raise
            except Exception as exc:  # the platform itself failed: say so on the job, and go on
                log.exception("job %s: the workbench failed while processing it", job.id)
                return self.on_failure(job, f"the workbench failed: {type(exc).__name__}: {exc}",
                                       {"ename": type(exc).__name__, "platform": True})
        except LeaseLost as exc:
            log.warning("job %s: %s; nothing written", job.id, str(exc) or "lease lost to another worker")
            return None

    GPU_POLL_SECONDS = 1.0

    def lease_gpus(self, job: Job, on_wait=None) -> list[str] | None:
        """Lease the GPUs `job`'s stage needs from this worker's (`gpus_needed`), waiting while another
        stage or a live server holds them (the job's lease renewed meanwhile; a cancel or a stopping
        worker ends the wait). None: GPUs are not managed here. `on_wait(message)` is told once."""
        if self.gpus is None:
            return None
        count, required = gpus_needed(job, len(self.gpus))
        if count > len(self.gpus):
            raise StageFailed("NotEnoughGPUs", f"NUM_GPUS={count}", platform=True, message=(
                f"the job asks for NUM_GPUS={count} and its worker has {len(self.gpus)} GPU(s) "
                f"({','.join(self.gpus) or 'none'}): run a worker with --gpus naming {count}, or lower NUM_GPUS"))
        if count == 0:
            return []
        lease = self.lease = self.lease or Lease(job.id, self.worker_id, self.heartbeat_seconds)
        told = False
        while (leased := lease.call(gpus.acquire, self.worker_id, job.id, count, self.gpus)) is None:
            if not required:  # a save runs on the CPU rather than wait hours for a training's card
                return []
            if not told and on_wait is not None:
                on_wait(f"waiting for {count} free GPU(s) of {','.join(self.gpus)}: another stage or a live "
                        f"model's server holds them")
                told = True
            current = lease.read()
            if current is not None:
                if current.status == JobStatus.CANCELLING:
                    raise Cancelled()
                if current.lease_owner != self.worker_id:
                    raise LeaseLost()
            if self.stopping.is_set():
                raise ReturnToQueue()
            lease.renew()
            time.sleep(self.GPU_POLL_SECONDS)
        return leased

    def release_gpus(self, job: Job, succeeded: bool) -> None:
        """Free the stage's GPUs; a deploy job's pass to the server it started, until that server stops."""
        if self.gpus is None:
            return
        try:
            server = deployments.read_server_file(job) if job.kind == JobKind.DEPLOY and succeeded else {}
            if server.get("pid") and not server.get("shared"):
                gpus.hand_to_server(self.worker_id, job.id, job.params.get("SERVED_NAME", ""), server["pid"])
            else:
                gpus.release(self.worker_id, job.id)
        except Exception:  # freed with the job's lease all the same, once it is no longer held
            log.exception("job %s: could not free its GPUs", job.id)

    def warm(self, kernel: str) -> None:
        """Get ready to run a stage in `kernel` soon (a backend may start it ahead)."""

    def close(self) -> None:
        """The worker is stopping: release what `warm` holds."""

    def before_start(self, job: Job) -> None:
        Path(job.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(job.run_dir) / STOP_FILE).unlink(missing_ok=True)

    def execute(self, job: Job) -> None:
        raise NotImplementedError

    def follow(self, job: Job, stage: RunningStage) -> None:
        """The one heartbeat loop: until `stage` ends, renew the job's lease on the heartbeat period, and stop
        the stage for a cancel (Cancelled), a lost lease (LeaseLost), STAGE_TIMEOUT (StageFailed) or a
        stopping worker (ReturnToQueue, through `stage.worker_stopping`)."""
        lease = self.lease = self.lease or Lease(job.id, self.worker_id, self.heartbeat_seconds)
        timeout = stage_timeout(job)
        # while the database does not answer, wait longer between tries
        while not stage.wait(max(stage.poll_seconds, lease.retry_seconds)):
            since = stage.running_since()
            if timeout and since is not None and time.monotonic() - since > timeout:
                message = timeout_message(job.stage, timeout)
                stage.stop(message)
                raise StageFailed("StageTimeout", f"STAGE_TIMEOUT={timeout:g}", extra=stage.detail, message=message)
            current = lease.read()
            if current is not None:
                if current.status == JobStatus.CANCELLING:
                    stage.stop("cancelled")
                    raise Cancelled()
                if current.lease_owner != self.worker_id:
                    raise LeaseLost()
            if self.stopping.is_set():
                stage.worker_stopping(self.stop_now)
            lease.renew()

    def on_failure(self, job: Job, message: str, detail: dict) -> str | None:
        try:
            lease = self.lease or Lease(job.id, self.worker_id, self.heartbeat_seconds)
            done = lease.call(jobs.finish_job, job.id, self.worker_id, JobStatus.FAILED, error=message,
                              error_detail=detail)
        except LeaseLost:
            raise
        except Exception:  # the database refuses the write: the lease runs out and the reaper retries
            log.exception("job %s: could not record its failure", job.id)
            return None
        return JobStatus.FAILED if done else None

    def on_complete(self, job: Job) -> str | None:
        """Publish what the job made and mark it succeeded, in one transaction that holds the lease:
        a worker that lost its lease publishes nothing."""
        try:
            outputs = publishing.planned_outputs(job)
            warnings = publishing.job_warnings(job)
            with store.session() as s:
                if not jobs.finish_job(job.id, self.worker_id, JobStatus.SUCCEEDED, conn=s.connection(),
                                       warnings=warnings):
                    s.rollback()
                    log.warning("job %s: lease lost before it could be published; nothing written", job.id)
                    return None
                for output in outputs:
                    models.add_model(session=s, **output)
        except DeepeError as exc:
            raise StageFailed(type(exc).__name__, exc.message, platform=True, message=f"the stage finished but "
                              f"its model could not be registered: {exc.message}") from exc
        if warnings:
            log.warning("job %s succeeded with warnings: %s", job.id, "; ".join(warnings))
            publishing.annotate_record(job, warnings)
        if job.kind == JobKind.TRAIN:
            try:  # its model on the rows it held out, and its base beside it
                queued = evaluations.after_training(job)
                if queued:
                    log.info("job %s: queued evaluation job(s) %s", job.id, ", ".join(str(j.id) for j in queued))
            except Exception:  # the training stands whatever becomes of its evaluation
                log.exception("job %s: could not queue its evaluation", job.id)
        if job.kind == JobKind.EVALUATE:
            try:
                publishing.publish_evaluation(job)
            except Exception:  # the scores are kept in the run folder and the database all the same
                log.exception("job %s: could not add the scores to the model's card", job.id)
        return JobStatus.SUCCEEDED


# STAGE_TIMEOUT (seconds) when a job does not give one: a training may take days, the other stages
# are bounded (a save, a deployment's start-up, trying a model). 0 or None: no limit.
INFER = "infer"  # `deepe infer` runs its stage in the caller's process, not as a job
STAGE_TIMEOUT_DEFAULTS: dict[str, float | None] = {JobKind.TRAIN: None, JobKind.SAVE: 1800.0,
                                                   JobKind.DEPLOY: 1800.0, INFER: 1800.0,
                                                   JobKind.EVALUATE: 7200.0}


def stage_timeout(job: Job) -> float | None:
    """How long the job's stage may run before it is stopped and the job fails (None: no limit)."""
    value = job.params.get("STAGE_TIMEOUT", STAGE_TIMEOUT_DEFAULTS.get(job.kind))
    try:
        seconds = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        seconds = 0.0
    return seconds if seconds > 0 else None


def timeout_message(stage: str, seconds: float) -> str:
    """The job's error when its stage ran too long (the stage was stopped, its record kept)."""
    return f"stage {stage} ran past STAGE_TIMEOUT={seconds:g} s"


# Built-ins that never use CUDA (mlx-lm computes on Apple silicon or the CPU).
CPU_ONLY_METHODS = ("MLX-Demo",)


def gpus_needed(job: Job, available: int) -> tuple[int, bool]:
    """How many GPUs a job's stage leases, and whether it must wait for them (else it runs with none).

    NUM_GPUS set on the job, or declared by its method, is taken as is (rounded up: a card is not split
    between local stages). Unset, it means "the GPU if this worker has one": 1 for every stage, but 0
    for MLX-Demo, for a deployment on the CPU, and for an adapter joining a server live here; a save
    takes a free GPU, or runs on the CPU rather than wait for a training's."""
    try:
        defaults = methods.get_method(job.method).default_params if job.kind != JobKind.DEPLOY else {}
    except DeepeError:
        defaults = {}
    raw = job.params.get("NUM_GPUS", paramlib.default_value(defaults["NUM_GPUS"]) if "NUM_GPUS" in defaults else None)
    if raw not in (None, ""):
        try:
            return max(0, math.ceil(float(raw))), True
        except (TypeError, ValueError):
            return 0, True
    if available == 0 or job.method in CPU_ONLY_METHODS:
        return 0, True
    if job.kind == JobKind.DEPLOY:
        if job.params.get("ENGINE_DEVICE", "cpu") == "cpu" or deployments.joins_live_server(job):
            return 0, True
        return 1, True
    return 1, job.kind != JobKind.SAVE


def stage_kernel(job: Job) -> str | None:
    """The kernelspec a job's current stage runs in (None: its method is gone)."""
    try:
        if job.kind == JobKind.DEPLOY:
            return deployments.stage_info(job).kernel
        if job.kind == JobKind.EVALUATE:
            return evaluations.stage_info(job).kernel
        return methods.stage_of(methods.get_method(job.method), job.stage).kernel
    except (DeepeError, KeyError):
        return None


