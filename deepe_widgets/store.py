"""The database: SQLModel tables and the engine (SQLite by default, PostgreSQL by URL).

SQLite runs in WAL mode with a busy timeout and `BEGIN IMMEDIATE` transactions,
so several workers and notebook kernels can share one file without
"database is locked" reaching a user.
"""

from __future__ import annotations

import os
import threading
import time
import uuid as uuidlib
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator, Optional

from sqlalchemy import JSON, Column, Float, Index, UniqueConstraint, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Field, Session, SQLModel, create_engine, select

from . import config
from .config import StageName
from .errors import DatabaseUnavailable, DeepeError, NotFound

SCHEMA_VERSION = 1

class JobStatus(StrEnum):
    """A job's status; every transition is a compare-and-set in jobs.py."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE = (JobStatus.RUNNING, JobStatus.CANCELLING)  # a worker holds the lease


class JobKind(StrEnum):
    TRAIN = "train"
    SAVE = "save"
    DEPLOY = "deploy"
    EVALUATE = "evaluate"


class ModelKind(StrEnum):
    BASE = "base"
    CUSTOMIZED = "customized"
    COMPLETE = "complete"
    LIVE = "live"


def now() -> float:
    return time.time()


def db_now():
    """The database's clock as epoch seconds, in SQL: leases compare against one clock, not
    each host's (`time.time()` differs between machines sharing a PostgreSQL server)."""
    return _DbNow()


class _DbNow(FunctionElement):
    type = Float()
    inherit_cache = True


@compiles(_DbNow)
def _db_now_default(element, compiler, **kw):
    return "extract(epoch from clock_timestamp())"


@compiles(_DbNow, "sqlite")
def _db_now_sqlite(element, compiler, **kw):
    return "((julianday('now') - 2440587.5) * 86400.0)"


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Method(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    display_name: str = ""
    training_type: str = "chat"
    lifecycle: str = "customized"
    builtin: bool = False
    description: str = ""
    # stage -> {"file": workspace copy, "source": original path, "sha256": …, "kernel": …}
    stages: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    default_params: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)


class ModelRecord(SQLModel, table=True):
    """A base model, or an artifact a job produced (customized / complete / live)."""

    __tablename__ = "model"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    kind: str = ModelKind.BASE
    path: str
    job_id: Optional[int] = Field(default=None, index=True)
    parent: Optional[str] = None
    method: Optional[str] = None
    meta: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: float = Field(default_factory=now)


class DatasetRecord(SQLModel, table=True):
    __tablename__ = "dataset"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str
    format: str
    columns: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    rows: int = 0
    created_at: float = Field(default_factory=now)


class Job(SQLModel, table=True):
    __table_args__ = (Index("ix_job_status_id", "status", "id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=lambda: uuidlib.uuid4().hex, index=True)
    name: str = ""
    kind: str = JobKind.TRAIN
    method: str
    base_model: Optional[str] = None
    dataset: Optional[str] = None
    params: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=JobStatus.QUEUED)
    stage: str = StageName.TRAINING
    attempt: int = 0
    max_attempts: int = 3
    lease_owner: Optional[str] = None
    lease_expires: Optional[float] = None
    created_at: float = Field(default_factory=now)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    error: Optional[str] = None
    error_detail: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    run_dir: Optional[str] = None
    copied_from: Optional[int] = None
    progress_step: int = 0
    progress_total: int = 0
    # what a person should know about a finished job that succeeded all the same (no metric logged …)
    warnings: Optional[list] = Field(default=None, sa_column=Column(JSON, nullable=True))
    # what the run was made from (file hashes, seed, model fingerprint, packages, device): the
    # record's metadata.deepe.provenance, kept here so a re-run compares without reading notebooks
    provenance: Optional[dict] = Field(default=None, sa_column=Column(JSON, nullable=True))


class Metric(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("job_id", "step", "name", name="uq_metric_job_step_name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(index=True)
    step: int
    name: str
    value: float
    epoch: Optional[float] = None
    wall_time: float = Field(default_factory=now)


class Worker(SQLModel, table=True):
    id: str = Field(primary_key=True)
    pid: int
    host: str
    started_at: float = Field(default_factory=now)
    heartbeat_at: float = Field(default_factory=now)


class GpuLease(SQLModel, table=True):
    """A GPU of a host leased to one stage (`job_id`, held by the worker slot `holder`, freed with the
    job's lease) or to a live vLLM server (`server_pid`, held until that process ends): two workers of
    a host never hand one card to two stages. `gpu` is the id CUDA_VISIBLE_DEVICES takes."""

    __tablename__ = "gpu_lease"
    __table_args__ = (UniqueConstraint("host", "gpu", name="uq_gpu_lease_host_gpu"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    host: str = Field(index=True)
    gpu: str
    holder: str
    job_id: Optional[int] = None
    server_pid: Optional[int] = None
    server_started: Optional[float] = None  # the process's start time: a reused pid is not the server
    created_at: float = Field(default_factory=now)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's `begin` event own transaction start (see below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writes: IMMEDIATE takes the write lock up front, so two writers queue on
        # busy_timeout instead of failing with "database is locked" mid-transaction.
        # Reads (read_session): a plain BEGIN, which in WAL mode never waits for a writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("deepe_read") else "BEGIN IMMEDIATE")


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the configured database), created and migrated once per process."""
    url = url or config.db_url()
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            try:
                if url.startswith("sqlite"):
                    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                    _configure_sqlite(engine)
                    path = url.split("///", 1)[-1]
                else:
                    engine = create_engine(url, pool_pre_ping=True)
                    path = None
                migrate(engine)
            except (OperationalError, InterfaceError, ArgumentError, ImportError, ValueError) as exc:
                # cannot connect, or no URL at all; other errors (a race on CREATE TABLE) stay as they are
                if engine is not None:
                    engine.dispose()
                raise _database_error(url, exc) from exc
            if path:
                try:
                    os.chmod(path, 0o600)
                except OSError:
                    pass
            _engines[url] = engine
    return engine


def _database_error(url: str, exc: Exception) -> DeepeError:
    """What went wrong opening the database, in a sentence naming the setting to fix (never the password)."""
    shown = config.display_db_url(url)
    setting = "DEEPE_DB_URL" if os.environ.get("DEEPE_DB_URL", "").strip() else "DEEPE_HOME"
    if isinstance(exc, NoSuchModuleError | ImportError):  # NoSuchModuleError is an ArgumentError too
        why = (f"needs a database driver that is not installed ({exc}); install it, or use PostgreSQL "
               f"(pip install 'deepe-widgets[postgres]')")
    elif isinstance(exc, ArgumentError):
        return DeepeError(f"{setting} is not a database URL (give one like sqlite:////path/deepe.db or "
                          f"postgresql+psycopg://USER:PASSWORD@HOST/DB); fix {setting}", field=setting)
    elif isinstance(exc, ValueError):
        why = f"is not a valid URL ({exc})"
    else:  # OperationalError and kin: the driver's first line says why (refused, unknown host, no file …)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        why = f"cannot be opened: {detail[0] if detail else type(exc).__name__}"
        if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).parent.is_dir():
            why = "cannot be opened: its folder does not exist"
        else:  # a server that does not answer now may answer in a moment: callers may try again
            return DatabaseUnavailable(f"the database {shown} ({setting}) {why}; fix {setting}", field=setting)
    return DeepeError(f"the database {shown} ({setting}) {why}; fix {setting}", field=setting)


def dispose_engines() -> None:
    """Forget cached engines (tests switch `DEEPE_HOME` between cases)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


MIGRATE_LOCK_KEY = 0x6465657065  # "deepe": PostgreSQL's advisory lock for creating and migrating tables


def migrate(engine: Engine) -> None:
    """Create missing tables and columns, so a database from an older version opens."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # processes opening a new database at once take turns
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
        SQLModel.metadata.create_all(conn)
        inspector = inspect(conn)
        for table in SQLModel.metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                coltype = column.type.compile(dialect=engine.dialect)
                default = _sql_default(column)
                conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {coltype}{default}'))
        row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise DeepeError(
                f"the database at {engine.url!r} was written by a newer deepe-widgets "
                f"(schema {found}, this version knows {SCHEMA_VERSION}); upgrade deepe-widgets")
        if row is None:
            conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"),
                         {"v": str(SCHEMA_VERSION)})
        elif found < SCHEMA_VERSION:
            conn.execute(text("UPDATE meta SET value=:v WHERE key='schema_version'"),
                         {"v": str(SCHEMA_VERSION)})


def _sql_default(column) -> str:
    """A literal default for an added column, so old rows get a usable value."""
    default = column.default.arg if column.default is not None and not callable(column.default.arg) else None
    if default is None:
        if isinstance(column.type, JSON):
            return " DEFAULT '{}'" if not column.nullable else ""
        return ""
    if isinstance(default, bool):
        return f" DEFAULT {int(default)}"
    if isinstance(default, (int, float)):
        return f" DEFAULT {default}"
    return " DEFAULT '" + str(default).replace("'", "''") + "'"


@contextmanager
def session() -> Iterator[Session]:
    """A session that commits on success and keeps loaded objects usable after."""
    with Session(get_engine(), expire_on_commit=False) as s:
        yield s
        s.commit()


@contextmanager
def read_session() -> Iterator[Session]:
    """A session for reading only: it never waits on, or blocks, a writer."""
    with Session(get_engine().execution_options(deepe_read=True), expire_on_commit=False) as s:
        yield s


def get_one(model: type[SQLModel], **where: Any):
    """The row matching `where`, or None."""
    with read_session() as s:
        stmt = select(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return s.exec(stmt).first()


def require_named(model: type[SQLModel], name: str, what: str, field: str):
    """The row called `name`, or NotFound listing the names there are."""
    row = get_one(model, name=name)
    if row is None:
        with read_session() as s:
            names = sorted(s.exec(select(model.name)))
        raise NotFound(f"no {what} named {name!r}; {what}s: {', '.join(names) or 'none'}", field=field)
    return row
