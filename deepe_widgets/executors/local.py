"""The local executor: each stage runs in a stage runner subprocess on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .. import config, gpus
from ..errors import StageFailed
from ..processes import kill_process_tree
from ..runtime import STOP_FILE
from ..store import Job
from .base import (
    ExecutionManager,
    ReturnToQueue,
    RunningStage,
    stage_kernel,
)
from .base import (
    stamp_log as _stamp,
)


class StandbyRunners:
    """Stage runners started ahead of their jobs, one per kernelspec, for the kernels used last.

    Each is `python -m deepe_widgets.runner --standby KERNEL`: papermill imported, kernel
    started, version probe done; the job that takes one skips ~2 s of start-up. A job still
    gets a kernel of its own (one kernel, one job), and a runner nobody takes is stopped.
    """

    RETRY_SECONDS = 30.0  # after a standby runner died untaken, before starting another

    def __init__(self, size: int):
        self.size = size
        # their kernels see no GPU where GPUs are managed, until a job hands them its own
        self.gpu_environment: dict[str, str] = {}
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
            with open(config.workspace_dir("logs") / "standby-runners.log", "ab") as runner_log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "deepe_widgets.runner", "--standby", kernel],
                    stdin=subprocess.PIPE, stdout=runner_log, stderr=subprocess.STDOUT, start_new_session=True,
                    env={**config.worker_environment(), **self.gpu_environment}, cwd=str(config.runs_dir()))
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



class LocalStage(RunningStage):
    """A stage runner subprocess on this machine."""

    poll_seconds = 0.25

    def __init__(self, proc: subprocess.Popen, run_dir: Path):
        self.proc = proc
        self.run_dir = run_dir
        self.started = time.monotonic()
        self.stop_asked_at: float | None = None

    def wait(self, seconds: float) -> bool:
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def running_since(self) -> float | None:
        return self.started

    def stop(self, why: str) -> None:
        kill_process_tree(self.proc.pid)

    def worker_stopping(self, now: bool) -> None:
        if now:
            raise ReturnToQueue()
        if self.stop_asked_at is None:  # the training saves a checkpoint and stops
            (self.run_dir / STOP_FILE).touch()
            self.stop_asked_at = time.monotonic()
        elif time.monotonic() - self.stop_asked_at > config.stop_grace_seconds():
            raise ReturnToQueue()


class LocalExecutor(ExecutionManager):
    """Runs each stage in a subprocess on this machine (papermill → the stage's kernel)."""

    def __init__(self, worker_id: str, heartbeat_seconds: float | None = None, warm_kernels: int | None = None):
        super().__init__(worker_id, heartbeat_seconds, warm_kernels)
        self.standby = StandbyRunners(self.warm_kernels)

    def warm(self, kernel: str) -> None:
        self.standby.gpu_environment = gpus.stage_environment(None if self.gpus is None else [])
        self.standby.fill(kernel)

    def close(self) -> None:
        self.standby.close()

    def _start_runner(self, job: Job, kernel: str | None, result_path: Path,
                      leased: list[str] | None = None) -> subprocess.Popen:
        """The job's stage runner: a standby one for its kernel if waiting, else a new process; either way
        its kernel sees the `leased` GPUs only."""
        gpu_environment = gpus.stage_environment(leased)
        proc = self.standby.take(kernel) if kernel else None
        if proc is not None:  # its kernel, started seeing no GPU, is given the job's before the first cell
            task = {"job": job.id, "stage": job.stage, "result": str(result_path), "environment": gpu_environment}
            try:
                proc.stdin.write((json.dumps(task) + "\n").encode())
                proc.stdin.close()
                return proc
            except OSError:  # it died since: start one the usual way
                kill_process_tree(proc.pid)
        with open(Path(job.run_dir) / "runner.log", "ab") as runner_log:
            return subprocess.Popen(
                [sys.executable, "-m", "deepe_widgets.runner", str(job.id), job.stage, str(result_path)],
                stdin=subprocess.DEVNULL, stdout=runner_log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**config.worker_environment(), **gpu_environment}, cwd=job.run_dir)

    def execute(self, job: Job) -> None:
        run_dir = Path(job.run_dir)
        result_path = run_dir / f".{job.stage}.result.json"
        result_path.unlink(missing_ok=True)
        kernel = stage_kernel(job)
        leased = self.lease_gpus(job, on_wait=lambda message: _stamp(run_dir / f"{job.stage}.log", message))
        result = {"ok": False}
        try:
            if leased:
                _stamp(run_dir / f"{job.stage}.log",
                       f"GPU(s) leased to this stage: CUDA_VISIBLE_DEVICES={','.join(leased)}")
            stage = LocalStage(self._start_runner(job, kernel, result_path, leased), run_dir)
            try:
                self.follow(job, stage)
            finally:
                if stage.proc.poll() is None:
                    kill_process_tree(stage.proc.pid)
                if kernel and not self.stopping.is_set():  # ready for the next stage in this kernel
                    self.warm(kernel)
            proc, stop_asked_at = stage.proc, stage.stop_asked_at
            result = json.loads(result_path.read_text()) if result_path.exists() else StageFailed(
                "RunnerDied", f"the stage runner exited with code {proc.returncode}", platform=True).to_dict()
        finally:
            self.release_gpus(job, succeeded=bool(result.get("ok")))
        if result["ok"]:
            return
        if stop_asked_at is not None:  # it stopped at a checkpoint because we asked, or failed meanwhile
            raise ReturnToQueue()
        raise StageFailed.from_dict(result)


