"""Executors run a claimed job's stage and report back: `base` (the template, the lease and its
heartbeat loop), `local` (a stage runner subprocess here) and `ray` (a Ray job on a cluster's node).

Backends are found by name through `get_executor`, which imports only the one asked for: a worker
that runs locally never imports Ray.
"""

from __future__ import annotations

import importlib

from .base import (
    DB_UNAVAILABLE,
    INFER,
    STAGE_TIMEOUT_DEFAULTS,
    Cancelled,
    ExecutionManager,
    Lease,
    LeaseLost,
    ReturnToQueue,
    stage_kernel,
    stage_timeout,
    timeout_message,
)

# executor name -> "module:class", imported on first use
EXECUTORS: dict[str, str] = {"local": "deepe_widgets.executors.local:LocalExecutor",
                             "ray": "deepe_widgets.executors.ray:RayExecutor"}


def get_executor(name: str) -> type[ExecutionManager]:
    """The executor class named `name` (a key of EXECUTORS), its module imported now."""
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["DB_UNAVAILABLE", "EXECUTORS", "INFER", "STAGE_TIMEOUT_DEFAULTS", "Cancelled", "ExecutionManager",
           "ReturnToQueue", "Lease", "LeaseLost", "get_executor",
           "stage_kernel", "stage_timeout", "timeout_message"]
