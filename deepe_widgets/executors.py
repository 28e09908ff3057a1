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

    def __init__(self, worker_id: str, heartbeat_seconds: float | None = None):
        from . import config

        self.worker_id = worker_id
        self.heartbeat_seconds = heartbeat_seconds or max(1.0, config.lease_seconds() / 3)

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


class LocalExecutor(ExecutionManager):
    """Runs each stage in a subprocess on this machine (papermill → the stage's kernel)."""

    features = {"cancel": True, "resume": True}
    poll_seconds = 0.25

    def execute(self, job: Job) -> None:
        from .jobs import worker_environment

        run_dir = Path(job.run_dir)
        result_path = run_dir / f".{job.stage}.result.json"
        result_path.unlink(missing_ok=True)
        with open(run_dir / "runner.log", "ab") as runner_log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deepe_widgets.runner", str(job.id), job.stage, str(result_path)],
                stdin=subprocess.DEVNULL, stdout=runner_log, stderr=subprocess.STDOUT,
                start_new_session=True, env=worker_environment(), cwd=str(run_dir))
        last_beat = time.monotonic()
        try:
            while proc.poll() is None:
                time.sleep(self.poll_seconds)
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
