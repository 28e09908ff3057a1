"""`deepe app`: the dashboard as a Voila app."""

from __future__ import annotations

from ..app import add_arguments as add_app_arguments
from .workspace import prepare


def cmd_app(args) -> int:
    from ..app import serve

    prepare()
    return serve(args)


def add_arguments(sub, verb) -> None:
    """`deepe app`, with the app's own flags."""
    p = verb(sub, "app", cmd_app, "serve the dashboard as a Voila app on 127.0.0.1")
    add_app_arguments(p)
