"""Where the workbench keeps its state: `$DEEPE_HOME` and the database URL."""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

from .errors import DeepeError


class StageName(StrEnum):
    """A method's stage; its value is the key of `Method.stages` and `Job.stage` in the database."""

    TRAINING = "training"
    SAVING = "saving"
    INFERENCE_CUSTOMIZED = "inference-customized"
    INFERENCE_COMPLETE = "inference-complete"
    DEPLOYMENT = "deployment"
    EVALUATION = "evaluation"


class TrainingTypeName(StrEnum):
    """A method's `training_type` (the registry in `deepe_widgets.trainings` gives each its behaviour)."""

    CHAT = "chat"
    EMBEDDING = "embedding"
    VISION_LANGUAGE = "vision-language"
    IMAGE_GENERATION = "image-generation"


class Lifecycle(StrEnum):
    """How far a method takes a model: a Customized Model, a Complete Model, or a Live Model."""

    CUSTOMIZED = "customized"
    COMPLETE = "complete"
    LIVE = "live"


# in the order the forms and messages list them
STAGES = tuple(StageName)
TRAINING_TYPES = tuple(TrainingTypeName)
LIFECYCLES = tuple(Lifecycle)
DEFAULT_KERNEL = "python3"


_checked_homes: set[Path] = set()


def deepe_home() -> Path:
    """The workspace root: `$DEEPE_HOME`, default `~/.deepe`; created owner-only."""
    home = Path(os.environ.get("DEEPE_HOME") or Path.home() / ".deepe").expanduser().resolve()
    if home in _checked_homes and home.is_dir():
        return home
    try:
        if not home.exists():
            home.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise _home_error(home, f"cannot be created ({exc.strerror})") from None
    if not home.is_dir():
        raise _home_error(home, "is not a folder")
    if not os.access(home, os.W_OK | os.X_OK):
        raise _home_error(home, "is not writable")
    _checked_homes.add(home)
    return home


def _home_error(home: Path, problem: str) -> DeepeError:
    return DeepeError(f"the workspace {home} (DEEPE_HOME) {problem}; set DEEPE_HOME to a folder you can "
                      f"write, or unset it for ~/.deepe", field="DEEPE_HOME")


def db_url() -> str:
    """`DEEPE_DB_URL`, or the embedded SQLite file `$DEEPE_HOME/deepe.db`.

    `postgres://` (Heroku's and libpq's spelling, which SQLAlchemy refuses) and a driverless
    `postgresql://` mean PostgreSQL through psycopg 3, the driver the `postgres` extra installs."""
    url = os.environ.get("DEEPE_DB_URL", "").strip()
    if not url:
        return f"sqlite:///{deepe_home() / 'deepe.db'}"
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}" if _has_psycopg() else f"postgresql://{rest}"
    return url


@functools.cache
def _has_psycopg() -> bool:
    return importlib.util.find_spec("psycopg") is not None


def display_db_url(url: str | None = None) -> str:
    """The database URL with its password masked, for printing and error messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = url or db_url()
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL at all: show its scheme only, it may hold a secret
        return url.split("://", 1)[0] + "://…" if "://" in url else "(not a database URL)"


def workspace_dir(*parts: str) -> Path:
    """A folder under the workspace, created owner-only on first use."""
    path = deepe_home()
    for part in parts:  # mkdir(parents=True) would give the parents the default mode
        path = path / part
        try:
            path.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _home_error(deepe_home(), f"has no usable folder {path.name!r} ({exc.strerror})") from None
    return path


@contextmanager
def workspace_lock(name: str):
    """Hold `$DEEPE_HOME/.<name>.lock` (an advisory file lock): the processes that share a workspace
    (a notebook, the app, the CLI) take turns at what they must not do twice at once, such as its
    first set-up."""
    import fcntl

    home = deepe_home()
    try:
        handle = open(home / f".{name}.lock", "a")
    except OSError as exc:
        raise _home_error(home, f"cannot hold a lock file ({exc.strerror})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def runs_dir() -> Path:
    return workspace_dir("runs")


def env_number(name: str, default: float, *, minimum: float = 0, above: bool = False,
               whole: bool = False) -> float:
    """A numeric setting from the environment, or a DeepeError naming the variable and the fix."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum or (above and value == minimum):
        kind = "a whole number" if whole else "a number"
        bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
        raise DeepeError(f"{name} must be {kind} {bound}, not {raw!r}; fix it, or unset it for the default "
                         f"({default:g})", field=name)
    return value


def lease_seconds() -> float:
    """How long a claimed job stays owned without a heartbeat."""
    return env_number("DEEPE_LEASE_SECONDS", 30, above=True)


def worker_idle_exit_seconds() -> float:
    """An auto-started worker exits after this long with nothing to do."""
    return env_number("DEEPE_WORKER_IDLE_EXIT", 300)


def warm_kernels() -> int:
    """How many kernelspecs a worker keeps a kernel started for, ready for the next stage
    (`DEEPE_WARM_KERNELS`, default 2; 0 starts every stage's kernel when its job comes)."""
    return int(env_number("DEEPE_WARM_KERNELS", 2, whole=True))


def check_environment() -> None:
    """Read every numeric setting once, so a bad one is refused where the user typed the command,
    not later in a background worker."""
    lease_seconds()
    worker_idle_exit_seconds()
    warm_kernels()
    stop_grace_seconds()


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
    return env_number("DEEPE_STOP_GRACE_SECONDS", 120)


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
