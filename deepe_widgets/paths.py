"""Allowed roots: model, dataset and stage-file paths must resolve (symlinks followed) under them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import config
from .errors import DeepeError


def allowed_roots() -> list[Path]:
    """`DEEPE_ALLOWED_ROOTS` (os.pathsep-separated), or: your home, the workspace, the current
    folder and the temporary folder."""
    configured = os.environ.get("DEEPE_ALLOWED_ROOTS")
    if configured:
        roots = [Path(p) for p in configured.split(os.pathsep) if p.strip()]
    else:
        roots = [Path.home(), config.deepe_home(), Path.cwd(), Path(tempfile.gettempdir())]
    return [r.expanduser().resolve() for r in roots]


def is_allowed(path: str | Path) -> bool:
    """Whether `path` resolves (symlinks followed) under an allowed root."""
    resolved = Path(path).expanduser().resolve()
    # Component-wise: /data2 is not under /data (a plain string prefix check would say it is).
    return any(resolved == root or resolved.is_relative_to(root) for root in allowed_roots())


def check_allowed(path: str | Path, field: str, what: str) -> Path:
    """The resolved path, or a DeepeError when it lies outside every allowed root."""
    resolved = Path(path).expanduser().resolve()
    roots = allowed_roots()
    if not is_allowed(resolved):
        listed = ", ".join(str(r) for r in roots)
        raise DeepeError(f"{what} {str(path)!r} resolves to {resolved}, outside the allowed folders ({listed}); "
                         f"set DEEPE_ALLOWED_ROOTS to allow another folder", field=field)
    return resolved
