"""Shared fixtures: a fresh workspace per test, a tiny real model, and cleanup of
every worker and kernel a test started (so nothing holds CI's output pipe). Helpers that are not
fixtures live in helpers.py: tests import them from there, never from a conftest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a ChatML tokenizer trained on the demo data (built once per session)."""
    from deepe_widgets.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _stop_workers(home: Path) -> None:
    from deepe_widgets import store
    from deepe_widgets.processes import kill_process_tree

    try:
        with store.session() as s:
            pids = [w.pid for w in s.exec(store.select(store.Worker))]
    except Exception:
        pids = []
    for pid in pids:
        kill_process_tree(pid)


class PostgresServer:
    """A real PostgreSQL server (Debian's package) in a temporary folder, on 127.0.0.1."""

    def __init__(self, root: Path):
        import glob
        import socket

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._counter = 0

    def _as_postgres(self, *cmd: str) -> list[str]:
        # PostgreSQL refuses to run as root; CI runs as root.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start(self) -> "PostgresServer":
        import shutil

        self.data.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data.parent, "postgres")
            os.chmod(self.data.parent, 0o755)
            for parent in self.data.parents:  # the server must reach its data folder
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        subprocess.run(self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust",
                                         "-U", "postgres", "--no-sync"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                         "-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data} -F",
                                         "start"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        subprocess.run(self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                         "-w", "stop"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        self._counter += 1
        name = f"deepe_{self._counter}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One PostgreSQL server for the session, started by the tests and stopped after."""
    pytest.importorskip("psycopg")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def home(request, tmp_path, monkeypatch) -> Path:
    """An empty `$DEEPE_HOME`; its database is SQLite, or a fresh PostgreSQL database when the
    test is parametrized with `home=["sqlite", "postgresql"]` (indirect). Workers exit when idle."""
    from deepe_widgets import store

    path = tmp_path / "deepe-home"
    monkeypatch.setenv("DEEPE_HOME", str(path))
    monkeypatch.delenv("DEEPE_DB_URL", raising=False)
    if getattr(request, "param", "sqlite") == "postgresql":
        monkeypatch.setenv("DEEPE_DB_URL", request.getfixturevalue("postgres").new_database())
    monkeypatch.setenv("DEEPE_WORKER_IDLE_EXIT", "5")
    monkeypatch.setenv("DEEPE_EVALUATE_AFTER_TRAINING", "0")  # the evaluation tests turn it on themselves
    store.dispose_engines()
    yield path
    _stop_workers(path)
    store.dispose_engines()


@pytest.fixture
def workspace(home, tiny_model_dir):
    """A workspace with the built-ins, the demo datasets and the tiny model registered as `tiny`."""
    from deepe_widgets import demo_data, methods, models

    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()
    models.add_model("tiny", tiny_model_dir)
    return home
