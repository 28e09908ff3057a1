"""`deepe worker`: claims queued jobs in submit order and runs them.

A worker has two slots: the first runs any job, one at a time (a training, usually); the
second runs only the short kinds (save, deploy), so they never wait behind a multi-hour
training. An evaluation loads its model and generates like a training does: it takes the first
slot. Each slot holds its jobs' leases under its own id.

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
import uuid

import psutil
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from . import config, deployments, gpus, jobs, store
from .errors import DeepeError
from .executors import EXECUTORS, get_executor, stage_kernel
from .params import cli_seconds

log = logging.getLogger("deepe.worker")

GRACEFUL_SIGNAL = signal.SIGTERM
NOW_SIGNAL = signal.SIGUSR1


def live_workers() -> list[store.Worker]:
    """Workers whose heartbeat is younger than a lease (on the database's clock), but for those of
    this host whose process is gone (killed with -9, it leaves a fresh heartbeat behind)."""
    with store.read_session() as s:
        rows = list(s.exec(select(store.Worker).where(
            store.Worker.heartbeat_at >= store.db_now() - config.lease_seconds())))
    return [row for row in rows if not _gone_here(row.host, row.pid)]


def _gone_here(host: str, pid: int) -> bool:
    """A worker of this host whose process no longer runs (another host's cannot be looked at)."""
    return host == socket.gethostname() and not _alive(pid)


# A save or a deploy takes minutes, a training hours; an evaluation holds a model in (GPU) memory
# as long as it runs, beside a training it could starve.
QUICK_KINDS = tuple(kind.value for kind in store.JobKind if kind not in (store.JobKind.TRAIN, store.JobKind.EVALUATE))
START_LOCK_KEY = "worker_start_lock"  # a `meta` row whose row lock serialises `ensure_worker`


def new_worker_id() -> str:
    """A worker's id: its host and a uuid (host and pid alone collide across containers, and
    then two workers could run one job)."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex}"


def ensure_worker() -> int | None:
    """Start a background worker when none is alive; returns its pid (None: one was running).

    Race-free across processes and hosts: the check and the new worker's row are one
    transaction that first locks a fixed `meta` row, so of two submits at the same instant
    one starts the worker and the other finds it. Rows of workers whose heartbeat aged out
    are removed on the way. The worker runs detached in its own session, with output to a
    file, so it outlives the notebook kernel, Voila app or shell that submitted the job.
    """
    if live_workers():  # the usual case, answered by a read that takes no lock
        return None
    table = store.Worker.__table__
    alive_since = store.db_now() - config.lease_seconds()
    worker_id = new_worker_id()
    with store.get_engine().begin() as conn:
        _take_start_lock(conn)
        conn.execute(table.delete().where(table.c.heartbeat_at < alive_since))
        if any(not _gone_here(host, pid) for host, pid in conn.execute(
                select(table.c.host, table.c.pid).where(table.c.heartbeat_at >= alive_since))):
            return None
        logs = config.workspace_dir("logs")
        log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deepe_widgets.worker", "--worker-id", worker_id,
                 "--idle-exit", str(config.worker_idle_exit_seconds())],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, env=config.worker_environment())
        # Registered in the same transaction, under the id the worker adopts, so a second submit a
        # moment later finds it alive (the worker's own first heartbeat waits for this commit).
        conn.execute(table.insert().values(id=worker_id, pid=proc.pid, host=socket.gethostname(),
                                           started_at=time.time(), heartbeat_at=store.db_now()))
    return proc.pid


def _take_start_lock(conn) -> None:
    """Lock the fixed starter row until `conn`'s transaction ends (SQLite: its `BEGIN IMMEDIATE`
    already serialises writers; PostgreSQL: the row lock does). A crashed starter's transaction
    rolls back and frees it, so the lock needs no expiry."""
    conn.execute(text("INSERT INTO meta (key, value) VALUES (:key, '0') ON CONFLICT (key) DO NOTHING"),
                 {"key": START_LOCK_KEY})
    conn.execute(text("UPDATE meta SET value = :value WHERE key = :key"),
                 {"key": START_LOCK_KEY, "value": str(time.time())})


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
    row until the heartbeat ages out): signal only a process that is a deepe worker. Through
    psutil, so it works where there is no /proc (macOS)."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and _is_worker_command(proc.cmdline())
    except psutil.Error:
        return False


def _is_worker_command(cmdline: list[str]) -> bool:
    """`python -m deepe_widgets.worker …` (started by `ensure_worker`), or `deepe worker` and
    `python -m deepe_widgets.cli worker` (a worker in the foreground)."""
    if any("deepe_widgets.worker" in part for part in cmdline):
        return True
    for at, part in enumerate(cmdline):
        if part == "deepe_widgets.cli" or os.path.basename(part) == "deepe":
            rest = [arg for arg in cmdline[at + 1:] if not arg.startswith("-")]
            return bool(rest) and rest[0] == "worker" and "stop" not in rest[1:2]
    return False


def _alive(pid: int) -> bool:
    """The process runs (a zombie child of this process, as tests start workers, has exited)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


class Worker:
    # A worker about to exit keeps no kernel started ahead: it would be started for nothing.
    WARM_WHEN_IDLE_EXIT_AT_LEAST = 10.0
    MAX_BACKOFF_SECONDS = 30.0
    SUPERVISE_SECONDS = 2.0  # how often the Live Models' servers of this host are checked

    def __init__(self, executor: str = "local", idle_exit: float | None = None, poll_seconds: float = 0.1,
                 worker_id: str | None = None, quick_slot: bool = True, gpus_spec: str | None = None):
        """`worker_id`: the id `ensure_worker` registered for this process (default: a new one);
        `quick_slot`: run save and deploy jobs beside a training, in a second slot; `gpus_spec`: the GPUs
        its local stages lease from (`--gpus 0,1`; default DEEPE_GPUS, else every GPU of the host)."""
        self.id = worker_id or new_worker_id()
        keep_warm = idle_exit is None or idle_exit >= self.WARM_WHEN_IDLE_EXIT_AT_LEAST
        self.executor = get_executor(executor)(self.id, warm_kernels=None if keep_warm else 0)
        # Its own executor and lease owner: the slots share no state but the database.
        self.quick_executor = get_executor(executor)(f"{self.id}/1", warm_kernels=0) if quick_slot else None
        # Ray reserves a node's GPUs itself (NUM_GPUS); locally both slots lease from the same cards
        self.gpus = gpus.worker_gpus(gpus_spec) if executor == "local" else None
        for slot in self.executors:
            slot.gpus = self.gpus
        self.idle_exit = idle_exit
        self.poll_seconds = poll_seconds  # an idle poll is one indexed read
        self.warm_kernel = config.DEFAULT_KERNEL  # then the kernel of the last stage run
        self._stop = threading.Event()
        self.serving = 0  # Live Models of this host still starting or live (then the worker is not idle)
        self.running: dict[str, int] = {}  # slot's lease owner id -> the job it runs
        self._idle_since = time.monotonic()

    @property
    def executors(self) -> list:
        return [e for e in (self.executor, self.quick_executor) if e is not None]

    def _beat(self) -> None:
        """Mark this worker alive; its row may be the one `ensure_worker` registered for it."""
        table = store.Worker.__table__
        values = dict(pid=os.getpid(), host=socket.gethostname(), heartbeat_at=store.db_now())
        try:
            with store.get_engine().begin() as conn:
                if conn.execute(table.update().where(table.c.id == self.id).values(**values)).rowcount:
                    return
                conn.execute(table.insert().values(id=self.id, started_at=time.time(), **values))
        except IntegrityError:  # registered meanwhile (PostgreSQL: by the starter's commit)
            with store.get_engine().begin() as conn:
                conn.execute(table.update().where(table.c.id == self.id).values(**values))

    def stop(self, now: bool = False) -> None:
        """Claim nothing more; the running jobs save a checkpoint and go back to the queue
        (`now`: without the checkpoint)."""
        for executor in self.executors:
            if now:
                executor.stop_now = True
            executor.stopping.set()
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

    def run_once(self, quick: bool = False) -> bool:
        """Reap, claim and run at most one job (`quick`: in the second slot, no training);
        True when one ran."""
        executor = self.quick_executor if quick else self.executor
        jobs.reap_expired()
        job = jobs.claim_next_job(executor.worker_id, QUICK_KINDS if quick else None)
        if job is None:
            return False
        self.running[executor.worker_id] = job.id
        try:
            log.info("job %s (%s, attempt %s) started in slot %s", job.id, job.kind, job.attempt,
                     executor.worker_id)
            status = executor.process(job)
            log.info("job %s -> %s", job.id, status)
            if job.kind == store.JobKind.DEPLOY:  # its Live Model: live, or failed with the reason
                deployments.refresh()
        finally:
            self.running.pop(executor.worker_id, None)
            self._idle_since = time.monotonic()
        if not quick:
            self.warm_kernel = stage_kernel(job) or self.warm_kernel
        return True

    def _run_quick_jobs(self) -> None:
        # The second slot's loop, in a thread: save and deploy jobs run beside a long training.
        backoff = 0.0
        while not self._stop.is_set():
            try:
                ran = self.run_once(quick=True)
                backoff = 0.0
            except Exception:  # as the main loop: wait, then try again
                backoff = min(self.MAX_BACKOFF_SECONDS, max(1.0, backoff * 2))
                log.exception("the quick slot failed; retrying in %.0f s", backoff)
                self._stop.wait(backoff)
                continue
            if not ran:
                self._stop.wait(self.poll_seconds)

    def _supervise(self) -> int:
        """Mark this host's Live Models whose server died `failed`; returns how many still run."""
        try:
            for row in deployments.refresh():
                log.warning("live model %s: its deployment ended (%s)", row.name,
                            deployments.LiveState.from_meta(row.meta).status)
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
        log.info("worker %s started (idle exit: %s, GPUs: %s); SIGTERM stops it after the running job's checkpoint",
                 self.id, "never" if self.idle_exit is None else f"{self.idle_exit:g} s",
                 "not managed" if self.gpus is None else ",".join(self.gpus) or "none")
        done = threading.Event()
        threading.Thread(target=self._beat_forever, args=(done,), daemon=True).start()
        threading.Thread(target=self._supervise_forever, args=(done,), name="deepe-live-models", daemon=True).start()
        quick = None
        if self.quick_executor is not None:
            quick = threading.Thread(target=self._run_quick_jobs, name="deepe-quick-slot", daemon=True)
            quick.start()
        self._idle_since = time.monotonic()
        backoff = 0.0
        try:
            while not self._stop.is_set():
                if self.serving or self.running:  # supervising Live Models, or a quick job runs: not idle
                    self._idle_since = time.monotonic()
                try:
                    ran = self.run_once()
                    backoff = 0.0
                except Exception:  # the database went away, a disk filled up …: wait, then try again
                    backoff = min(self.MAX_BACKOFF_SECONDS, max(1.0, backoff * 2))
                    log.exception("worker loop failed; retrying in %.0f s", backoff)
                    self._stop.wait(backoff)
                    continue
                if ran:
                    continue
                if self.idle_exit is not None and time.monotonic() - self._idle_since > self.idle_exit:
                    break
                try:
                    self.executor.warm(self.warm_kernel)
                except Exception:
                    log.exception("could not start a kernel ahead for %r", self.warm_kernel)
                self._stop.wait(self.poll_seconds)
        except BaseException:  # Ctrl-C in a foreground worker: the quick slot hands its job back at once
            self.stop(now=True)
            raise
        finally:
            self._stop.set()
            if quick is not None:  # it finishes (or, stopping, hands back) a job it claimed meanwhile
                quick.join()
            done.set()
            for executor in self.executors:
                executor.close()
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
    parser.add_argument("--gpus", default=None,
                        help="the GPUs this worker's stages lease, one stage per card: 0,1 (indexes or UUIDs, "
                             "taken as given), none (CPU only) or all; default: DEEPE_GPUS, else every GPU "
                             "nvidia-smi lists")
    parser.add_argument("--worker-id", default=None,
                        help="this worker's id: the row `ensure_worker` registered for it (default: a new one)")


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
        runner = Worker(executor, idle_exit=args.idle_exit, worker_id=args.worker_id,
                        gpus_spec=getattr(args, "gpus", None))
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
