"""Executors run a claimed job's stage and report back.

`ExecutionManager.process` is a fixed template (before start → execute →
on failure / on complete); a backend writes `execute()` and declares what it
supports in `features`, which the UI reads to hide what a backend can't do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import jobs
from .store import CANCELLED, CANCELLING, FAILED, SUCCEEDED, Job


class LeaseLost(Exception):
    """Another worker (or the reaper) took the job: stop and write nothing."""


class Cancelled(Exception):
    """The user cancelled the job while it ran."""


class ExecutionManager:
    features: dict[str, bool] = {"cancel": False, "resume": False}

    def __init__(self, worker_id: str, heartbeat_seconds: float | None = None, warm_kernels: int | None = None):
        """`warm_kernels`: how many kernelspecs `warm` may keep a kernel started for
        (None: `DEEPE_WARM_KERNELS`; 0: none)."""
        from . import config

        self.worker_id = worker_id
        self.heartbeat_seconds = heartbeat_seconds or max(1.0, config.lease_seconds() / 3)
        self.warm_kernels = config.warm_kernels() if warm_kernels is None else warm_kernels

    def process(self, job: Job) -> str | None:
        """Run `job` and write its final status; returns it (None if the lease was lost)."""
        self.before_start(job)
        try:
            self.execute(job)
        except LeaseLost:
            return None
        except Cancelled:
            jobs.finish_job(job.id, self.worker_id, CANCELLED, error="cancelled by the user")
            return CANCELLED
        except StageError as exc:
            return self.on_failure(job, exc.message, exc.detail)
        except Exception as exc:  # the platform itself failed: say so on the job
            return self.on_failure(job, f"{type(exc).__name__}: {exc}", {"ename": type(exc).__name__})
        return self.on_complete(job)

    def warm(self, kernel: str) -> None:
        """Get ready to run a stage in `kernel` soon (a backend may start it ahead)."""

    def close(self) -> None:
        """The worker is stopping: release what `warm` holds."""

    def before_start(self, job: Job) -> None:
        Path(job.run_dir).mkdir(parents=True, exist_ok=True)

    def execute(self, job: Job) -> None:
        raise NotImplementedError

    def on_failure(self, job: Job, message: str, detail: dict) -> str | None:
        return FAILED if jobs.finish_job(job.id, self.worker_id, FAILED, error=message,
                                         error_detail=detail) else None

    def on_complete(self, job: Job) -> str | None:
        register_outputs(job)
        return SUCCEEDED if jobs.finish_job(job.id, self.worker_id, SUCCEEDED) else None


class StageError(Exception):
    def __init__(self, message: str, detail: dict):
        super().__init__(message)
        self.message = message
        self.detail = detail


def kill_process_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Kill a process, its children and their process groups (kernels run in their own session)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    groups = set()
    for proc in procs:
        try:
            groups.add(os.getpgid(proc.pid))
        except ProcessLookupError:
            pass
    for group in groups:
        if group != os.getpgid(0):
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


class StandbyRunners:
    """Stage runners started ahead of their jobs, one per kernelspec, for the kernels used last.

    Each is `python -m deepe_widgets.runner --standby KERNEL`: papermill imported, kernel
    started, version probe done; the job that takes one skips ~2 s of start-up. A job still
    gets a kernel of its own (one kernel, one job), and a runner nobody takes is stopped.
    """

    RETRY_SECONDS = 30.0  # after a standby runner died untaken, before starting another

    def __init__(self, size: int):
        self.size = size
        self._runners: dict[str, subprocess.Popen] = {}  # kernel -> runner, oldest first
        self._died_at: dict[str, float] = {}

    def take(self, kernel: str) -> subprocess.Popen | None:
        proc = self._runners.pop(kernel, None)
        if proc is not None and proc.poll() is not None:
            return None
        return proc

    def fill(self, kernel: str) -> None:
        """Start a standby runner for `kernel` unless one is waiting; forget the least recent."""
        if self.size <= 0:
            return
        proc = self._runners.pop(kernel, None)
        if proc is not None and proc.poll() is not None:
            self._died_at[kernel] = time.monotonic()  # see standby-runners.log
            proc = None
        if proc is None:
            died = self._died_at.get(kernel)
            if died is not None and time.monotonic() - died < self.RETRY_SECONDS:
                return
            from . import config
            from .jobs import worker_environment

            with open(config.workspace_dir("logs") / "standby-runners.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "deepe_widgets.runner", "--standby", kernel],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    env=worker_environment(), cwd=str(config.runs_dir()))
        self._runners[kernel] = proc  # re-inserted: most recent last
        while len(self._runners) > self.size:
            self._stop(self._runners.pop(next(iter(self._runners))))

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        try:
            proc.stdin.close()  # "no job": it stops its kernel and exits
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            kill_process_tree(proc.pid)

    def close(self) -> None:
        for proc in self._runners.values():
            self._stop(proc)
        self._runners.clear()


def stage_kernel(job: Job) -> str | None:
    """The kernelspec a job's current stage runs in (None: its method is gone)."""
    from . import methods
    from .errors import DeepeError

    try:
        return methods.get_method(job.method).stages[job.stage]["kernel"]
    except (DeepeError, KeyError):
        return None


class LocalExecutor(ExecutionManager):
    """Runs each stage in a subprocess on this machine (papermill → the stage's kernel)."""

    features = {"cancel": True, "resume": True}
    poll_seconds = 0.25

    def __init__(self, worker_id: str, heartbeat_seconds: float | None = None, warm_kernels: int | None = None):
        super().__init__(worker_id, heartbeat_seconds, warm_kernels)
        self.standby = StandbyRunners(self.warm_kernels)

    def warm(self, kernel: str) -> None:
        self.standby.fill(kernel)

    def close(self) -> None:
        self.standby.close()

    def _start_runner(self, job: Job, kernel: str | None, result_path: Path) -> subprocess.Popen:
        """The job's stage runner: a standby one for its kernel if waiting, else a new process."""
        proc = self.standby.take(kernel) if kernel else None
        if proc is not None:
            task = {"job": job.id, "stage": job.stage, "result": str(result_path)}
            try:
                proc.stdin.write((json.dumps(task) + "\n").encode())
                proc.stdin.close()
                return proc
            except OSError:  # it died since: start one the usual way
                kill_process_tree(proc.pid)
        from .jobs import worker_environment

        with open(Path(job.run_dir) / "runner.log", "ab") as runner_log:
            return subprocess.Popen(
                [sys.executable, "-m", "deepe_widgets.runner", str(job.id), job.stage, str(result_path)],
                stdin=subprocess.DEVNULL, stdout=runner_log, stderr=subprocess.STDOUT,
                start_new_session=True, env=worker_environment(), cwd=job.run_dir)

    def execute(self, job: Job) -> None:
        run_dir = Path(job.run_dir)
        result_path = run_dir / f".{job.stage}.result.json"
        result_path.unlink(missing_ok=True)
        kernel = stage_kernel(job)
        proc = self._start_runner(job, kernel, result_path)
        last_beat = time.monotonic()
        try:
            while True:
                try:
                    proc.wait(timeout=self.poll_seconds)
                    break
                except subprocess.TimeoutExpired:
                    pass
                current = jobs.get_job(job.id)
                if current.status == CANCELLING:
                    raise Cancelled()
                if current.lease_owner != self.worker_id:
                    raise LeaseLost()
                if time.monotonic() - last_beat >= self.heartbeat_seconds:
                    if not jobs.renew_lease(job.id, self.worker_id):
                        raise LeaseLost()
                    last_beat = time.monotonic()
        finally:
            if proc.poll() is None:
                kill_process_tree(proc.pid)
            if kernel:  # ready for the next stage in this kernel while this one is written up
                self.warm(kernel)
        result = json.loads(result_path.read_text()) if result_path.exists() else {
            "ok": False, "ename": "RunnerDied", "evalue": f"the stage runner exited with code {proc.returncode}"}
        if not result["ok"]:
            cell = result.get("cell")
            where = f" (cell {cell})" if cell is not None else ""
            raise StageError(f"{result['ename']}: {result['evalue']}{where}",
                             {k: result.get(k) for k in ("ename", "evalue", "cell", "source")})


def register_outputs(job: Job) -> None:
    """A succeeded training's adapter becomes a Customized Model; a save's output a Complete Model."""
    from . import models

    output = Path(job.run_dir) / "output"
    if not output.is_dir():
        return
    if job.kind == "train":
        day = time.strftime("%Y%m%d", time.localtime(job.started_at or time.time()))
        name = f"{job.base_model}_{job.name}_{day}_{job.uuid[:4]}"
        card = models.write_model_card(job, name, output)
        models.add_model(name, output, kind="customized", job_id=job.id, parent=job.base_model,
                         method=job.method, replace=True, meta=card)
    elif job.kind == "save":
        name = f"{job.base_model}_s_{job.uuid[:4]}"
        models.add_model(name, output, kind="complete", job_id=job.id, parent=job.base_model,
                         method=job.method, replace=True,
                         meta={"dtype": job.params.get("DTYPE"), "record": str(Path(job.run_dir) / "saving.ipynb")})


EXECUTORS = {"local": LocalExecutor}
