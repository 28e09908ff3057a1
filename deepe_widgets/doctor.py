"""`deepe doctor`: finds what a crash or a manual change can leave behind, and offers the fix."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import text

from . import config, deployments, jobs, methods, models, store
from .kernels import installed_kernels


@dataclass
class Finding:
    problem: str
    fix: str
    apply: Callable[[], None] | None = None  # None: a person has to act
    fixed: bool = field(default=False)


def check() -> list[Finding]:
    """Every problem found, each with the fix it offers."""
    found: list[Finding] = []
    engine = store.get_engine()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            result = conn.execute(text("PRAGMA integrity_check")).scalar()
            if result != "ok":
                found.append(Finding(f"database integrity check failed: {result}",
                                     "restore deepe.db from a backup (sqlite3 deepe.db '.recover')"))
        else:
            conn.execute(text("SELECT 1"))
    with engine.connect() as conn:
        now = conn.execute(store.db_now().select()).scalar()  # leases are on the database's clock
    for job in jobs.list_jobs():
        if job.status in store.ACTIVE and (job.lease_expires or 0) < now:
            found.append(Finding(f"job {job.id} is marked {job.status} but no worker holds its lease",
                                 "requeue it (or fail it after its last attempt)", jobs.reap_expired))
    known = {Path(j.run_dir).name for j in jobs.list_jobs() if j.run_dir}
    for folder in sorted(config.runs_dir().iterdir()):
        if folder.is_dir() and folder.name not in known:
            target = config.workspace_dir("orphaned-runs") / folder.name
            found.append(Finding(f"run folder {folder} has no job",
                                 f"move it to {target}", lambda f=folder, t=target: shutil.move(str(f), str(t))))
    kernels = installed_kernels()
    for method in methods.list_methods():
        for stage, info in methods.stages_of(method).items():
            if info.kernel not in kernels:
                found.append(Finding(f"method {method.name!r} runs its {stage} stage in kernel {info.kernel!r}, "
                                     f"which is not installed",
                                     f"install it (python -m ipykernel install --user --name {info.kernel}) "
                                     f"or delete the method"))
            if not Path(info.file).is_file():
                found.append(Finding(f"method {method.name!r} lost its {stage} file {info.file}",
                                     "register the method again"))
    for live in deployments.gone_servers():
        pid = deployments.LiveState.from_meta(live.meta).pid
        found.append(Finding(f"live model {live.name!r} is marked live but its server (pid {pid}) "
                             f"is gone", "mark it failed (deploy it again with: deepe deploy "
                             f"{live.parent})", deployments.refresh))
    for model in models.list_models():
        if not Path(model.path).exists():
            found.append(Finding(f"{model.kind} model {model.name!r} points at {model.path}, which is gone",
                                 "unregister it", lambda m=model: _unregister(m)))
    return found


def _unregister(model) -> None:
    with store.session() as s:
        row = s.get(store.ModelRecord, model.id)
        if row is not None:
            s.delete(row)


def fix(found: list[Finding]) -> None:
    for finding in found:
        if finding.apply is not None:
            finding.apply()
            finding.fixed = True
