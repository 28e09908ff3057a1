"""`deepe worker`: claims queued jobs in submit order and runs them, one at a time."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

from . import config, jobs, store
from .executors import EXECUTORS, stage_kernel


class Worker:
    # A worker about to exit keeps no kernel started ahead: it would be started for nothing.
    WARM_WHEN_IDLE_EXIT_AT_LEAST = 10.0

    def __init__(self, executor: str = "local", idle_exit: float | None = None, poll_seconds: float = 0.1):
        self.id = f"{socket.gethostname()}-{os.getpid()}"
        keep_warm = idle_exit is None or idle_exit >= self.WARM_WHEN_IDLE_EXIT_AT_LEAST
        self.executor = EXECUTORS[executor](self.id, warm_kernels=None if keep_warm else 0)
        self.idle_exit = idle_exit
        self.poll_seconds = poll_seconds  # an idle poll is one indexed read
        self.warm_kernel = config.DEFAULT_KERNEL  # then the kernel of the last stage run
        self._stop = False

    def _beat(self) -> None:
        with store.session() as s:
            row = s.get(store.Worker, self.id)
            if row is None:
                row = store.Worker(id=self.id, pid=os.getpid(), host=socket.gethostname())
            row.heartbeat_at = store.now()
            s.add(row)

    def stop(self, *_args) -> None:
        self._stop = True

    def _beat_forever(self, done: threading.Event) -> None:
        # A thread, so the worker shows as alive while a long stage runs.
        while not done.wait(1.0):
            try:
                self._beat()
            except Exception as exc:  # a busy database: the next beat will do
                print(f"[worker {self.id}] heartbeat failed: {exc}", flush=True)

    def run(self) -> None:
        """Loop until stopped, or idle for `idle_exit` seconds."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
        self._beat()
        done = threading.Event()
        threading.Thread(target=self._beat_forever, args=(done,), daemon=True).start()
        idle_since = time.monotonic()
        last_reap = 0.0
        try:
            while not self._stop:
                if time.monotonic() - last_reap > 1.0:
                    jobs.reap_expired()
                    last_reap = time.monotonic()
                job = jobs.claim_next_job(self.id)
                if job is None:
                    if self.idle_exit is not None and time.monotonic() - idle_since > self.idle_exit:
                        break
                    self.executor.warm(self.warm_kernel)
                    time.sleep(self.poll_seconds)
                    continue
                print(f"[worker {self.id}] job {job.id} ({job.kind}, attempt {job.attempt}) started", flush=True)
                status = self.executor.process(job)
                print(f"[worker {self.id}] job {job.id} -> {status}", flush=True)
                self.warm_kernel = stage_kernel(job) or self.warm_kernel
                idle_since = time.monotonic()
        finally:
            done.set()
            self.executor.close()
            with store.session() as s:
                row = s.get(store.Worker, self.id)
                if row is not None:
                    s.delete(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepe worker")
    parser.add_argument("--idle-exit", type=float, default=None,
                        help="exit after this many seconds without work (default: run until stopped)")
    parser.add_argument("--executor", default="local", choices=sorted(EXECUTORS))
    args = parser.parse_args(argv)
    config.skip_slow_optional_imports()
    config.deepe_home()
    Worker(args.executor, idle_exit=args.idle_exit).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
