"""What a view tells its user: a status line, a "reconnecting…" note, an action wrapper that shows
errors instead of tracebacks, a failure in a sentence, and an "are you sure?" row."""

from __future__ import annotations

import functools
import html
import traceback

import ipywidgets as w

from ..errors import DeepeError


class Status(w.HTML):
    """A one-line message next to the buttons: info, success or error."""

    COLORS = {"info": "#555", "ok": "#1a7f37", "error": "#cf222e", "warn": "#9a6700"}

    def show(self, message: str, kind: str = "info") -> None:
        self.value = f'<span class="deepe-status deepe-{kind}" style="color:{self.COLORS[kind]}">' \
                     f"{html.escape(message)}</span>"

    def clear(self) -> None:
        self.value = ""


class ConnectionNote(Status):
    """A live view's "reconnecting…" while its polls fail; it takes no room otherwise."""

    def __init__(self, **kwargs):
        super().__init__(layout=w.Layout(display="none"), **kwargs)

    def show(self, message: str, kind: str = "warn") -> None:
        super().show(message, kind)
        self.layout.display = None

    def clear(self) -> None:
        super().clear()
        self.layout.display = "none"


def action(button: w.Button, status: Status, busy: str = "working …", ready=None):
    """Decorate a handler: the button is disabled while it runs, and any error becomes
    a short message in `status` (never a traceback in the page). Afterwards the button is
    enabled again, or as `ready()` says (a form that is still invalid keeps it disabled)."""

    def wrap(func):
        @functools.wraps(func)
        def handler(*args, **kwargs):
            button.disabled = True
            status.show(busy)
            try:
                func(*args, **kwargs)
            except DeepeError as exc:
                status.show(exc.message, "error")
            except Exception as exc:  # unexpected: say what, keep the page alive
                traceback.print_exc()
                status.show(f"{type(exc).__name__}: {exc}", "error")
            finally:
                button.disabled = not ready() if ready else False
        button.on_click(lambda _b: handler())
        return handler
    return wrap


def error_text(exc: Exception) -> str:
    """What a user reads about a failure: the core's own sentence, else the exception in a line."""
    if isinstance(exc, DeepeError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def confirm_row(question: w.HTML, yes: str, on_yes, no: str = "No, keep it") -> w.HBox:
    """"Are you sure?" in place: the question and two buttons, hidden until `ask()` is called on it.
    `row.ask(text)` shows it; a click on either button hides it again."""
    yes_button = w.Button(description=yes, button_style="danger")
    no_button = w.Button(description=no)
    row = w.HBox([question, yes_button, no_button], layout=w.Layout(display="none", align_items="center"))
    row.add_class("deepe-confirm")

    def hide(_b=None):
        row.layout.display = "none"

    def ask(text: str) -> None:
        question.value = f"<span class='deepe-question'>{html.escape(text)}</span>"
        row.layout.display = None

    yes_button.on_click(lambda _b: (hide(), on_yes()))
    no_button.on_click(hide)
    row.ask, row.hide, row.yes, row.no = ask, hide, yes_button, no_button
    return row
