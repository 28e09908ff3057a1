"""A one-host Ray cluster on 127.0.0.1 with a temp dir of its own: for tests, benchmarks and
trying the ray executor on a laptop. A team's cluster is started by its own admins (README).

`ray stop` stops every Ray process of the user on the machine; `RayHead.stop` stops only the
processes of its own head (those naming its temp dir, and everything below them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

# Ray resolves 127.0.0.1 to the host's first address unless told it is not a cluster: keep every
# address it hands out on loopback.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                # a busy machine registers the agents slower than the raylet's default
                "RAY_agent_register_timeout_ms": "120000",
                "RAY_USAGE_STATS_ENABLED": "0"}


class RayHead:
    """`ray start --head` on 127.0.0.1 in `temp_dir`; `address` is the dashboard URL the Jobs API uses."""

    def __init__(self, temp_dir: str | Path, *, num_cpus: int = 4, num_gpus: int = 0, log: str | Path | None = None):
        self.temp_dir = Path(temp_dir).resolve()
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.log = Path(log) if log else self.temp_dir.parent / f"{self.temp_dir.name}-start.log"
        self.address: str | None = None
        self.gcs_address: str | None = None
        self.started_seconds: float | None = None

    def environment(self) -> dict:
        return {**os.environ, **LOOPBACK_ENV}

    def start(self, timeout: float = 180, tries: int = 3) -> "RayHead":
        """Start the head; a start that fails is stopped and tried again (on a busy machine the raylet's
        fixed 15 s wait for the dashboard agent's ports can run out)."""
        began = time.monotonic()
        for attempt in range(1, tries + 1):
            try:
                self._start_once(timeout)
                self.started_seconds = time.monotonic() - began
                return self
            except RuntimeError:
                self.stop()
                if attempt == tries:
                    raise
        return self

    def _start_once(self, timeout: float) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ray = Path(sys.executable).with_name("ray")
        gcs_port = free_port()
        command = [str(ray) if ray.exists() else "ray", "start", "--head", f"--port={gcs_port}",
                   f"--ray-client-server-port={free_port()}",
                   "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                   # the agent's port too: its default (52365) is taken by any other head on this machine
                   "--dashboard-port=0", f"--dashboard-agent-listen-port={free_port()}",
                   f"--temp-dir={self.temp_dir}", f"--num-cpus={self.num_cpus}",
                   f"--num-gpus={self.num_gpus}", "--disable-usage-stats"]
        self.gcs_address = f"127.0.0.1:{gcs_port}"
        with open(self.log, "ab") as out:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  env=self.environment(), timeout=timeout, start_new_session=True)
        text = self.log.read_text(errors="replace")
        found = re.findall(r"RAY_API_SERVER_ADDRESS='(http://[^']+)'", text)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"ray start failed (exit {done.returncode}); see {self.log}")
        self.address = found[-1]

    def processes(self) -> list[psutil.Process]:
        """This head's processes: those naming its temp dir (or its GCS address, as Ray's client
        server does), and everything below them."""
        marks = [str(self.temp_dir)] + ([f"--address={self.gcs_address}"] if self.gcs_address else [])
        roots = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(mark in part for part in proc.info["cmdline"] or () for mark in marks):
                    roots.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found = {p.pid: p for p in roots}
        for root in roots:
            try:
                for child in root.children(recursive=True):
                    found.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass
        return [p for p in found.values() if p.pid != os.getpid()]

    def stop(self, grace: float = 3) -> list[int]:
        """Stop this head's processes (SIGTERM, then SIGKILL after `grace` s); returns the pids left."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive + self.processes():  # and anything started meanwhile
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        return [p.pid for p in self.processes() if _running(p)]

    def remove(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
