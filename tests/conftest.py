"""Shared fixtures: a fresh workspace per test, a tiny real model, and cleanup of
every worker and kernel a test started (so nothing holds CI's output pipe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a ChatML tokenizer trained on the demo data (built once per session)."""
    from deepe_widgets.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _stop_workers(home: Path) -> None:
    from deepe_widgets import store
    from deepe_widgets.executors import kill_process_tree

    try:
        with store.session() as s:
            pids = [w.pid for w in s.exec(store.select(store.Worker))]
    except Exception:
        pids = []
    for pid in pids:
        kill_process_tree(pid)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty `$DEEPE_HOME` with its own SQLite database; workers exit when idle."""
    from deepe_widgets import store

    path = tmp_path / "deepe-home"
    monkeypatch.setenv("DEEPE_HOME", str(path))
    monkeypatch.delenv("DEEPE_DB_URL", raising=False)
    monkeypatch.setenv("DEEPE_WORKER_IDLE_EXIT", "5")
    store.dispose_engines()
    yield path
    _stop_workers(path)
    store.dispose_engines()


@pytest.fixture
def workspace(home, tiny_model_dir):
    """A workspace with the built-ins, the demo datasets and the tiny model registered as `tiny`."""
    from deepe_widgets import datasets, methods, models

    methods.ensure_builtins()
    datasets.ensure_demo_datasets()
    models.add_model("tiny", tiny_model_dir)
    return home


def deepe(*args: str, check: bool = True, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `deepe` CLI as a user would, in a subprocess."""
    done = subprocess.run([sys.executable, "-m", "deepe_widgets.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"deepe {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def deepe_json(*args: str, **kwargs):
    return json.loads(deepe(*args, **kwargs).stdout)


FAST_PARAMS = ["--param", "max_steps=6", "--param", "batch_size=4", "--param", "learning_rate=5e-3",
               "--param", "max_seq_length=64", "--param", "save_steps=0"]
