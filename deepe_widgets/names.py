"""Validation of user-given names: they label rows and may become folder names."""

from __future__ import annotations

import re

from .errors import DeepeError

MAX_NAME_LENGTH = 128
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}$")


def check_name(name: str, what: str, field: str = "name") -> str:
    """A name of letters, digits, `.`, `_`, `-`; never a path."""
    if not isinstance(name, str) or not name.strip():
        raise DeepeError(f"{what} name must not be empty", field=field)
    if name != name.strip():
        raise DeepeError(f"{what} name {name!r} has leading or trailing spaces", field=field)
    if not _NAME.match(name) or ".." in name:
        raise DeepeError(
            f"{what} name {name!r} may only use letters, digits, '.', '_' and '-' "
            f"(no '/', '..', spaces or control characters; at most 128 characters)", field=field)
    return name
