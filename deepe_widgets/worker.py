"""`deepe worker`: claims queued jobs in submit order and runs them, one at a time.

A worker survives any one job and any passing error (logged, then retried with a
backoff). SIGTERM (or `deepe worker stop`) stops it gracefully: it claims nothing more,
lets the running training save a checkpoint and hands the job back to the queue,
where it resumes from that checkpoint. SIGUSR1 (`deepe worker stop --now`) hands the
job back at once, without the checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from sqlmodel import select

from . import config, deployments, jobs, store
from .errors import DeepeError
from .executors import stage_kernel
from .executors_ray import EXECUTORS
from .params import cli_seconds

log = logging.getLogger("deepe.worker")

GRACEFUL_SIGNAL = signal.SIGTERM
NOW_SIGNAL = signal.SIGUSR1


def live_workers() -> list[store.Worker]:
    """Workers whose heartbeat is younger than a lease (on the database's clock)."""
    with store.read_session() as s:
        return list(s.exec(select(store.Worker).where(
            store.Worker.heartbeat_at >= store.db_now() - config.lease_seconds())))


def ensure_worker() -> int | None:
    """Start a background worker when none is alive; returns its pid (None: one was running).

    Detached in its own session, with output to a file, so it outlives the
    notebook kernel, Voila app or shell that submitted the job.
    """
    if live_workers():
        return None
    logs = config.workspace_dir("logs")
    log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deepe_widgets.worker", "--idle-exit", str(config.worker_idle_exit_seconds())],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env=config.worker_environment())
    # Register at once so a second submit a moment later does not start another.
    with store.session() as s:
        s.add(store.Worker(id=f"{socket.gethostname()}-{proc.pid}", pid=proc.pid, host=socket.gethostname(),
                           heartbeat_at=store.db_now()))
    return proc.pid


def stop_workers(now: bool = False, timeout: float | None = None) -> list[int]:
    """Ask this host's live workers to stop (gracefully, or `now`); wait up to `timeout` seconds
    for them to exit. Returns the pids that were asked."""
    host = socket.gethostname()
    asked = []
    for row in live_workers():
        if row.host != host or not _is_worker_process(row.pid):
            continue
        try:
            os.kill(row.pid, NOW_SIGNAL if now else GRACEFUL_SIGNAL)
            asked.append(row.pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + (timeout if timeout is not None else config.stop_grace_seconds() + 15)
    while asked and time.monotonic() < deadline and any(_alive(pid) for pid in asked):
        time.sleep(0.2)
    return asked


def _is_worker_process(pid: int) -> bool:
    """A pid in the table may since belong to another process (a worker killed with -9 leaves its
    row until the heartbeat ages out): signal only a process that is a deepe worker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"deepe_widgets.worker" in cmdline.read()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process (tests start workers) has exited
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


class Worker:
    # A worker about to exit keeps no kernel started ahead: it would be started for nothing.
    WARM_WHEN_IDLE_EXIT_AT_LEAST = 10.0
    MAX_BACKOFF_SECONDS = 30.0
    SUPERVISE_SECONDS = 2.0  # how often the Live Models' servers of this host are checked

    def __init__(self, executor: str = "local", idle_exit: float | None = None, poll_seconds: float = 0.1):
        self.id = f"{socket.gethostname()}-{os.getpid()}"
        keep_warm = idle_exit is None or idle_exit >= self.WARM_WHEN_IDLE_EXIT_AT_LEAST
        self.executor = EXECUTORS[executor](self.id, warm_kernels=None if keep_warm else 0)
        self.idle_exit = idle_exit
        self.poll_seconds = poll_seconds  # an idle poll is one indexed read
        self.warm_kernel = config.DEFAULT_KERNEL  # then the kernel of the last stage run
        self._stop = threading.Event()
        self.serving = 0  # Live Models of this host still starting or live (then the worker is not idle)

    def _beat(self) -> None:
        with store.session() as s:
            row = s.get(store.Worker, self.id)
            if row is None:
                row = store.Worker(id=self.id, pid=os.getpid(), host=socket.gethostname())
            row.heartbeat_at = store.db_now()
            s.add(row)

    def stop(self, now: bool = False) -> None:
        """Claim nothing more; the running job saves a checkpoint and goes back to the queue
        (`now`: without the checkpoint)."""
        if now:
            self.executor.stop_now = True
        self.executor.stopping.set()
        self._stop.set()

    def _on_signal(self, signum, _frame) -> None:
        log.info("received %s: stopping%s", signal.Signals(signum).name,
                 " now" if signum == NOW_SIGNAL else " after the running job's checkpoint")
        self.stop(now=signum == NOW_SIGNAL)

    def _supervise_forever(self, done: threading.Event) -> None:
        # A thread of its own: a server that dies while a long training runs is marked failed at once.
        while True:
            self.serving = self._supervise()
            if done.wait(self.SUPERVISE_SECONDS):
                return

    def _beat_forever(self, done: threading.Event) -> None:
        # A thread, so the worker shows as alive while a long stage runs.
        while not done.wait(1.0):
            try:
                self._beat()
            except Exception as exc:  # a busy database: the next beat will do
                log.warning("heartbeat failed: %s", exc)

    def run_once(self) -> bool:
        """Reap, claim and run at most one job; True when one ran."""
        jobs.reap_expired()
        job = jobs.claim_next_job(self.id)
        if job is None:
            return False
        log.info("job %s (%s, attempt %s) started", job.id, job.kind, job.attempt)
        status = self.executor.process(job)
        log.info("job %s -> %s", job.id, status)
        if job.kind == store.JobKind.DEPLOY:  # its Live Model: live, or failed with the reason
            deployments.refresh()
        self.warm_kernel = stage_kernel(job) or self.warm_kernel
        return True

    def _supervise(self) -> int:
        """Mark this host's Live Models whose server died `failed`; returns how many still run."""
        try:
            for row in deployments.refresh():
                log.warning("live model %s: its deployment ended (%s)", row.name, row.meta.get("status"))
            return deployments.supervised_count()
        except Exception:
            log.exception("could not check the live models")
            return 0

    def _hand_over_servers(self) -> None:
        """Never orphan a server: another worker of this host takes over supervising them, or
        (this is the last one) they are stopped."""
        try:
            others = [w for w in live_workers() if w.host == socket.gethostname() and w.id != self.id
                      and _is_worker_process(w.pid)]
            if others:
                if deployments.supervised_count():
                    log.info("live models handed over to worker %s", others[0].id)
                return
            stopped = deployments.stop_host_servers("its worker stopped")
            if stopped:
                log.info("stopped the live models %s (no other worker supervises them)", ", ".join(stopped))
        except Exception:
            log.exception("could not hand over or stop the live models")

    def run(self) -> None:
        """Loop until stopped, or idle for `idle_exit` seconds."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(GRACEFUL_SIGNAL, self._on_signal)
            signal.signal(NOW_SIGNAL, self._on_signal)
        self._beat()
        log.info("worker %s started (idle exit: %s); SIGTERM stops it after the running job's checkpoint",
                 self.id, "never" if self.idle_exit is None else f"{self.idle_exit:g} s")
        done = threading.Event()
        threading.Thread(target=self._beat_forever, args=(done,), daemon=True).start()
        threading.Thread(target=self._supervise_forever, args=(done,), name="deepe-live-models", daemon=True).start()
        idle_since = time.monotonic()
        backoff = 0.0
        try:
            while not self._stop.is_set():
                if self.serving:  # a worker supervising Live Models is not idle
                    idle_since = time.monotonic()
                try:
                    ran = self.run_once()
                    backoff = 0.0
                except Exception:  # the database went away, a disk filled up …: wait, then try again
                    backoff = min(self.MAX_BACKOFF_SECONDS, max(1.0, backoff * 2))
                    log.exception("worker loop failed; retrying in %.0f s", backoff)
                    self._stop.wait(backoff)
                    continue
                if ran:
                    idle_since = time.monotonic()
                    continue
                if self.idle_exit is not None and time.monotonic() - idle_since > self.idle_exit:
                    break
                try:
                    self.executor.warm(self.warm_kernel)
                except Exception:
                    log.exception("could not start a kernel ahead for %r", self.warm_kernel)
                self._stop.wait(self.poll_seconds)
        finally:
            done.set()
            self.executor.close()
            self._hand_over_servers()
            try:
                with store.session() as s:
                    row = s.get(store.Worker, self.id)
                    if row is not None:
                        s.delete(row)
            except Exception:
                log.exception("could not unregister the worker")
            log.info("stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's flags, for `python -m deepe_widgets.worker` and `deepe worker` alike."""
    parser.add_argument("--idle-exit", type=cli_seconds(above_zero=False), default=None,
                        help="exit after this many seconds without work (default: run until stopped)")
    parser.add_argument("--executor", default=None, choices=sorted(EXECUTORS),
                        help="where stages run: local (this machine) or ray (a Ray cluster's Jobs API); "
                             "default: DEEPE_EXECUTOR, else local")
    parser.add_argument("--address", default=None,
                        help="the ray executor's Ray dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")


def run(args: argparse.Namespace) -> int:
    """Run a worker in the foreground with `add_arguments`' flags, until it stops; the exit code."""
    executor = args.executor or os.environ.get("DEEPE_EXECUTOR") or "local"
    if executor not in EXECUTORS:
        print(f"error: DEEPE_EXECUTOR={executor!r} is not an executor; choose from {', '.join(sorted(EXECUTORS))}",
              file=sys.stderr)
        return 2
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    config.skip_slow_optional_imports()
    config.configure_logging()
    config.deepe_home()
    try:
        runner = Worker(executor, idle_exit=args.idle_exit)
    except DeepeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    runner.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepe worker")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
