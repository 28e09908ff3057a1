"""The GPUs of a host, shared between its workers' stages and its live servers by leases in the store.

A worker knows its GPUs (`--gpus 0,1`, `DEEPE_GPUS`, else every GPU nvidia-smi lists) and leases
from them the ones a stage needs; the stage then sees only those (`CUDA_VISIBLE_DEVICES`). A stage's
lease is freed with its job's lease: once the job finished, went to another worker, or its lease
expired (a worker killed with -9 frees its GPUs as it frees its jobs). A deploy job's lease passes to
the vLLM server it started and is held until that process ends.
"""

from __future__ import annotations

import os
import re
import socket

import psutil
from sqlalchemy import and_, exists, select
from sqlalchemy.exc import IntegrityError

from . import store
from .errors import DeepeError
from .runtime.devices import nvidia_smi_gpus
from .store import ACTIVE, GpuLease, Job

GPUS_ENV = "DEEPE_GPUS"
SERVER_HOLDER_PREFIX = "server:"
# What CUDA_VISIBLE_DEVICES accepts: an index, or a GPU / MIG UUID
GPU_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


def parse_gpus(spec: str) -> list[str]:
    """`0,1` -> ["0", "1"]; `none` or empty -> [] (run every stage on the CPU). Ids are taken as given,
    present or not: a worker is trusted with the cards it is told to use."""
    spec = spec.strip()
    if spec.lower() in ("", "none"):
        return []
    ids = [part.strip() for part in spec.split(",")]
    bad = [part for part in ids if not GPU_ID.match(part)]
    if bad:
        raise DeepeError(f"--gpus takes GPU indexes or UUIDs separated by commas (0,1), or none; "
                         f"not {', '.join(map(repr, bad))}", field="gpus")
    if len(set(ids)) != len(ids):
        raise DeepeError(f"--gpus names a GPU twice: {spec}", field="gpus")
    return ids


def detected_gpus() -> list[str] | None:
    """The GPUs of this host: those the host's CUDA_VISIBLE_DEVICES names, else every one nvidia-smi
    lists (None: no NVIDIA GPU here, and GPUs are not managed)."""
    count = len(nvidia_smi_gpus() or [])
    if not count:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return parse_gpus(visible) if visible.strip() and visible.strip() != "-1" else []
    return [str(index) for index in range(count)]


def worker_gpus(spec: str | None = None) -> list[str] | None:
    """A worker's GPUs: `spec` (its --gpus), else DEEPE_GPUS, else `detected_gpus()`. None: this host has
    no GPU and none was named, so stages keep the environment they would have had."""
    if spec is None:
        spec = os.environ.get(GPUS_ENV)
    if spec is None or spec.strip().lower() == "all":
        return detected_gpus()
    return parse_gpus(spec)


def stage_environment(leased: list[str] | None) -> dict[str, str]:
    """What a stage's environment gets for its GPUs: exactly the leased ones (an empty string hides
    every GPU: a stage that leased none never lands on a card another uses, nor wraps its model in
    DataParallel). Nothing when GPUs are not managed here."""
    return {} if leased is None else {"CUDA_VISIBLE_DEVICES": ",".join(leased)}


def _server_running(pid: int | None, started: float | None) -> bool:
    try:
        proc = psutil.Process(int(pid or 0))
        return proc.status() != psutil.STATUS_ZOMBIE and (started is None or abs(proc.create_time() - started) < 1)
    except (psutil.Error, ValueError):
        return False


def _free_stale(conn, host: str) -> None:
    """Free this host's leases whose stage's job no longer holds its lease under the same holder, and
    those of servers whose process has ended."""
    table, jobs = GpuLease.__table__, Job.__table__
    job_holds = exists().where(and_(jobs.c.id == table.c.job_id, jobs.c.status.in_(list(ACTIVE)),
                                    jobs.c.lease_owner == table.c.holder, jobs.c.lease_expires >= store.db_now()))
    conn.execute(table.delete().where(table.c.host == host, table.c.server_pid.is_(None), ~job_holds))
    for row_id, pid, started in conn.execute(select(table.c.id, table.c.server_pid, table.c.server_started)
                                             .where(table.c.host == host, table.c.server_pid.is_not(None))):
        if not _server_running(pid, started):
            conn.execute(table.delete().where(table.c.id == row_id))


def acquire(holder: str, job_id: int, count: int, gpus: list[str], host: str | None = None) -> list[str] | None:
    """Lease `count` of `gpus` on this host for the stage of `job_id` run by `holder` (the worker slot
    that holds the job's lease); the ids leased, or None while too few are free. A lease `holder`
    already has for this job counts (a retry after the database went away)."""
    host = host or socket.gethostname()
    table = GpuLease.__table__
    try:
        with store.get_engine().begin() as conn:  # SQLite: BEGIN IMMEDIATE; PostgreSQL: the unique key
            _free_stale(conn, host)
            mine = [gpu for gpu, in conn.execute(select(table.c.gpu).where(
                table.c.host == host, table.c.holder == holder, table.c.job_id == job_id))]
            if len(mine) >= count:
                return mine
            taken = {gpu for gpu, in conn.execute(select(table.c.gpu).where(table.c.host == host))}
            free = [gpu for gpu in gpus if gpu not in taken]
            if len(mine) + len(free) < count:
                return None
            picked = free[:count - len(mine)]
            for gpu in picked:
                conn.execute(table.insert().values(host=host, gpu=gpu, holder=holder, job_id=job_id,
                                                   created_at=store.now()))
            return mine + picked
    except IntegrityError:  # another worker of this host leased one of them at the same instant
        return None


def release(holder: str, job_id: int | None = None) -> None:
    """Free what `holder` leased (for `job_id` only, when given)."""
    table = GpuLease.__table__
    where = [table.c.holder == holder] + ([table.c.job_id == job_id] if job_id is not None else [])
    with store.get_engine().begin() as conn:
        conn.execute(table.delete().where(*where))


def hand_to_server(holder: str, job_id: int, live_name: str, pid: int) -> list[str]:
    """A deploy job's GPUs pass to the server it started (`live_name`, process `pid`), held until that
    process ends or the Live Model stops; returns the ids."""
    try:
        started = psutil.Process(int(pid)).create_time()
    except (psutil.Error, ValueError):
        release(holder, job_id)  # it is gone already
        return []
    table = GpuLease.__table__
    with store.get_engine().begin() as conn:
        rows = [gpu for gpu, in conn.execute(select(table.c.gpu).where(table.c.holder == holder,
                                                                        table.c.job_id == job_id))]
        conn.execute(table.update().where(table.c.holder == holder, table.c.job_id == job_id).values(
            holder=SERVER_HOLDER_PREFIX + live_name, server_pid=int(pid), server_started=started))
    return rows


def release_server(live_name: str) -> None:
    """Free the GPUs of a Live Model's server (it stopped)."""
    release(SERVER_HOLDER_PREFIX + live_name)


def leases(host: str | None = None) -> list[GpuLease]:
    """The GPU leases held now (of `host`, when given), stale ones of this host freed first."""
    with store.get_engine().begin() as conn:
        _free_stale(conn, socket.gethostname())
    with store.read_session() as s:
        stmt = select(GpuLease).order_by(GpuLease.host, GpuLease.gpu)
        if host is not None:
            stmt = stmt.where(GpuLease.host == host)
        return list(s.scalars(stmt))
