"""Where the workbench keeps its state: `$DEEPE_HOME` and the database URL."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

STAGES = ("training", "saving", "inference-customized", "inference-complete", "deployment")
TRAINING_TYPES = ("chat", "embedding", "vision-language", "image-generation")
LIFECYCLES = ("customized", "complete", "live")
DEFAULT_KERNEL = "python3"


def deepe_home() -> Path:
    """The workspace root: `$DEEPE_HOME`, default `~/.deepe`; created owner-only."""
    home = Path(os.environ.get("DEEPE_HOME") or Path.home() / ".deepe").expanduser().resolve()
    if not home.exists():
        home.mkdir(parents=True, mode=0o700)
    return home


def db_url() -> str:
    """`DEEPE_DB_URL`, or the embedded SQLite file `$DEEPE_HOME/deepe.db`."""
    return os.environ.get("DEEPE_DB_URL") or f"sqlite:///{deepe_home() / 'deepe.db'}"


def workspace_dir(*parts: str) -> Path:
    """A folder under the workspace, created owner-only on first use."""
    path = deepe_home()
    for part in parts:  # mkdir(parents=True) would give the parents the default mode
        path = path / part
        path.mkdir(exist_ok=True, mode=0o700)
    return path


@contextmanager
def workspace_lock(name: str):
    """Hold `$DEEPE_HOME/.<name>.lock` (an advisory file lock): the processes that share a workspace
    (a notebook, the app, the CLI) take turns at what they must not do twice at once, such as its
    first set-up."""
    import fcntl

    with open(deepe_home() / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def runs_dir() -> Path:
    return workspace_dir("runs")


def lease_seconds() -> float:
    """How long a claimed job stays owned without a heartbeat."""
    return float(os.environ.get("DEEPE_LEASE_SECONDS", "30"))


def worker_idle_exit_seconds() -> float:
    """An auto-started worker exits after this long with nothing to do."""
    return float(os.environ.get("DEEPE_WORKER_IDLE_EXIT", "300"))


def warm_kernels() -> int:
    """How many kernelspecs a worker keeps a kernel started for, ready for the next stage
    (`DEEPE_WARM_KERNELS`, default 2; 0 starts every stage's kernel when its job comes)."""
    return max(0, int(os.environ.get("DEEPE_WARM_KERNELS", "2")))


# What Voila tells a page's kernel about the page's request: its URL and query hold the app's token,
# so neither reaches the processes a kernel starts (workers, and their kernels running user code).
WEB_REQUEST_VARIABLES = ("VOILA_REQUEST_URL", "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO", "DEEPE_APP_TOKEN")


def worker_environment() -> dict:
    """The environment workers, stage runners and kernels get: the same workspace and database
    (without a web page's request variables)."""
    env = {k: v for k, v in os.environ.items() if k not in WEB_REQUEST_VARIABLES}
    env["DEEPE_HOME"] = str(deepe_home())
    env["DEEPE_DB_URL"] = db_url()
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def stop_grace_seconds() -> float:
    """How long a stopping worker lets its running stage save a checkpoint before it kills it."""
    return float(os.environ.get("DEEPE_STOP_GRACE_SECONDS", "120"))


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging() -> None:
    """One log format for the workbench's own background processes (worker, stage runner),
    whose output goes to their log files under `$DEEPE_HOME/logs/` or the run folder."""
    import logging

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout, force=True)


def skip_slow_optional_imports() -> None:
    """For the workbench's own processes (CLI, worker, stage runner), which run no user code.

    When `rfc3987_syntax` is installed (jupyter-events pulls it in), jsonschema builds its IRI
    grammar on import: 0.75 s for every process that imports nbformat (measured). nbformat
    never checks the `iri` format, so these processes skip it; kernels and Voila keep it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)


def package_templates_dir() -> Path:
    """`method_templates/`: inside the wheel, or at the repository root in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "method_templates", here.parent / "method_templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("method_templates/ is missing from this installation")
