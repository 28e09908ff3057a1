"""Shared pieces of the widgets: a status line, an action wrapper that shows errors
instead of tracebacks, decimation for charts, live polling that survives a lost database,
closing a view's whole widget tree, and small formatting helpers."""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import traceback

import ipywidgets as w

from ..errors import DeepeError

MAX_POINTS = 2000  # per line: the browser never gets more than this
RETRY_FIRST, RETRY_MAX = 1.0, 10.0  # seconds between tries while the database does not answer: 1, 2, 4, 8, 10, 10 …

log = logging.getLogger("deepe.ui")


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


def action(button: w.Button, status: Status, busy: str = "working …"):
    """Decorate a handler: the button is disabled while it runs, and any error becomes
    a short message in `status` (never a traceback in the page)."""

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
                button.disabled = False
        button.on_click(lambda _b: handler())
        return handler
    return wrap


def decimate(xs: list[float], ys: list[float], max_points: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most `max_points` points: each bucket keeps its min and max, so spikes survive."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    buckets = max_points // 2
    size = n / buckets
    out_x, out_y = [], []
    for b in range(buckets):
        lo, hi = int(b * size), min(n, int((b + 1) * size))
        if lo >= hi:
            continue
        seg = range(lo, hi)
        i_min = min(seg, key=ys.__getitem__)
        i_max = max(seg, key=ys.__getitem__)
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    if out_x[-1] != xs[-1]:  # always show the newest point
        out_x.append(xs[-1])
        out_y.append(ys[-1])
    return out_x, out_y


def html_table(headers: list[str], rows: list[list], css_class: str = "deepe-table") -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 10px'>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table class='{css_class}' style='border-collapse:collapse'><thead><tr>{head}</tr></thead>" \
           f"<tbody>{body}</tbody></table>"


def start_poller(coro_factory):
    """Run `coro_factory()` as a task on the kernel's running loop; None outside one (tests poll by hand)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
        if not loop.is_running():
            return None
    return loop.create_task(coro_factory())


async def poll_forever(poll_once, note: ConnectionNote, seconds: float) -> None:
    """Await `poll_once()` every `seconds` until it returns True. A failed poll shows "reconnecting…"
    in `note` and is retried after 1 s, 2 s, 4 s … at most 10 s; the note goes once a poll succeeds."""
    retry = None  # seconds to the next try while polls fail
    while True:
        await asyncio.sleep(retry or seconds)
        try:
            done = await poll_once()
        except Exception as exc:  # e.g. the database is away: the view says so and keeps trying
            retry = min(retry * 2, RETRY_MAX) if retry else RETRY_FIRST
            log.warning("live view: poll failed (%s: %s); next try in %g s", type(exc).__name__, exc, retry)
            note.show(f"reconnecting… (next try in {retry:g} s)", "warn")
            continue
        retry = None
        if note.value:
            note.clear()
        if done:
            return


def _held(widget: w.Widget):
    """The widgets `widget` refers to in its synced state: children, layout, style, marks, axes, scales …"""
    for name in widget.keys:
        value = getattr(widget, name, None)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        yield from (v for v in values if isinstance(v, w.Widget))


def close_tree(root: w.Widget) -> None:
    """Close `root` and every widget under it, so a closed view leaves nothing in the kernel.

    A view found inside is closed by its own `close()` (which also stops its poller)."""
    found, stack = {id(root): root}, [root]
    while stack:
        for held in _held(stack.pop()):
            if id(held) not in found:
                found[id(held)] = held
                stack.append(held)
    w.Widget.close(root)
    for widget in found.values():
        if widget is not root:
            widget.close()
