"""Shared pieces of the widgets: a status line, an action wrapper that shows errors
instead of tracebacks, decimation for charts, live polling that survives a lost database,
closing a view's whole widget tree, and small formatting helpers."""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import os
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


def run_in_background(work, done, failed) -> asyncio.Task | None:
    """Run the blocking `work()` in a thread, then `done(result)` (or `failed(exc)`) on the kernel's
    loop, where widgets may be touched; the page stays live meanwhile. Outside a running loop
    (a plain Python test) it all runs here and now, and None is returned."""

    async def run():
        try:
            result = await asyncio.to_thread(work)
        except Exception as exc:
            failed(exc)
        else:
            done(result)

    task = start_poller(run)
    if task is None:
        try:
            result = work()
        except Exception as exc:
            failed(exc)
        else:
            done(result)
    return task


def in_voila_app() -> bool:
    """True inside a Voila app (which never serves run folders), False in JupyterLab."""
    return bool(os.environ.get("VOILA_KERNEL_ID") or os.environ.get("VOILA_BASE_URL"))


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


# One stylesheet for every view (a <style> in an HTML widget applies to the whole page). Widgets get
# these classes with `add_class`; the layout traits cannot say "sticky" or "anchor the scroll".
CSS = """
.deepe-table {border-collapse:collapse}
.deepe-table th {text-align:left;padding:3px 10px;border-bottom:1px solid #d0d7de;font-weight:600}
.deepe-table td {padding:3px 10px;border-bottom:1px solid #eee;vertical-align:top}
.deepe-grid-scroll {overflow:auto}
.deepe-grid > .deepe-cell {margin:0 !important;min-width:0;width:auto !important;border-bottom:1px solid #eee;
  height:34px;align-self:stretch;align-items:center;padding:0 4px;overflow:hidden;box-sizing:border-box}
.deepe-grid > .widget-button.deepe-cell {height:28px;align-self:center;margin:3px 0 !important}
.deepe-grid > .widget-hprogress.deepe-cell .progress {width:100%}
.deepe-grid > .deepe-cell .widget-html-content {white-space:nowrap;overflow:hidden;text-overflow:ellipsis;
  line-height:32px}
.deepe-grid > .deepe-head {position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #d0d7de;
  font-weight:600}
.deepe-grid > .deepe-head .widget-html-content {font-size:12px}
.deepe-grid > .deepe-chosen {background:#ddf4ff}
.deepe-grid > .deepe-cells, .deepe-grid > .deepe-cells > .widget-html-content {display:contents}
.deepe-grid .deepe-subcell {min-width:0;border-bottom:1px solid #eee;height:34px;line-height:34px;padding:0 4px;
  white-space:nowrap;overflow:hidden;text-overflow:ellipsis;box-sizing:border-box}
.deepe-log-box {overflow:auto;display:flex;flex-direction:column-reverse;border:1px solid #d0d7de;
  background:#fbfbfc}
.deepe-log-box pre {margin:0;padding:0 6px;line-height:1.4;font-size:12px;white-space:pre-wrap;
  word-break:break-word}
.deepe-log-box .widget-html-content {line-height:1.4}
.deepe-log-box .widget-html, .deepe-log-box .widget-vbox {margin:0}
.deepe-log-box .deepe-noise {color:#8c959f}
.deepe-log-box .deepe-warning {color:#9a6700}
.deepe-log-box .deepe-error {color:#cf222e}
.deepe-log-box .deepe-log-cut {color:#9a6700;font-style:italic}
.deepe-field-message .widget-html-content {line-height:1.3}
.deepe-field-error {color:#cf222e}
.deepe-field-warning {color:#9a6700}
.deepe-question {color:#9a6700;font-weight:600;margin-right:8px}
.deepe-legend span {margin-right:18px;white-space:nowrap}
.deepe-record {border:1px solid #d0d7de;padding:8px 12px;max-height:640px;overflow:auto;background:#fff;
  line-height:1.45}
.deepe-record .widget-html-content {line-height:1.45}
.deepe-record .cell {margin-bottom:10px}
.deepe-record .input {display:flex;gap:6px}
.deepe-record .prompt {color:#8c959f;font-size:11px;min-width:56px;font-family:monospace}
.deepe-record .inner_cell, .deepe-record .output_subarea {flex:1;min-width:0}
.deepe-record .input_area, .deepe-record .highlight {background:#f6f8fa;border-radius:4px}
.deepe-record pre {margin:0;padding:4px 6px;font-size:12px;line-height:1.4;white-space:pre-wrap;
  word-break:break-word}
.deepe-record .output_wrapper {margin:2px 0 0 62px}
.deepe-record .output_stderr pre {background:#fff8f0;color:#6e4a00}
.deepe-record .text_cell_render h1 {font-size:1.5em;margin:0.4em 0}
.deepe-record .text_cell_render h2 {font-size:1.25em}
.deepe-record .anchor-link {display:none}
.deepe-record img {max-width:100%}
.deepe-answer {border:1px solid #d0d7de;border-radius:6px;padding:8px;min-height:60px;white-space:pre-wrap;
  background:#fff;line-height:1.4}
"""


def stylesheet() -> w.HTML:
    """The views' stylesheet: put one in each top-level view (two copies do no harm)."""
    sheet = w.HTML(f"<style>{CSS}</style>", layout=w.Layout(display="none"))
    sheet.add_class("deepe-stylesheet")
    return sheet


class GridTable(w.Box):
    """A table of widgets that stays aligned at any width: header and rows are cells of one CSS grid
    (a row of HBoxes aligns only while every box fits); the header sticks while the rows scroll.

    `columns` is [(title, CSS grid track)], e.g. ("Name", "minmax(110px, 1.5fr)")."""

    def __init__(self, columns: list[tuple[str, str]], max_height: str | None = None, **kwargs):
        self.head = [self.cell(w.HTML(f"<span title='{html.escape(title, quote=True)}'>{html.escape(title)}</span>"),
                               "deepe-head") for title, _track in columns]
        self.grid = w.GridBox(self.head, layout=w.Layout(
            grid_template_columns=" ".join(track for _title, track in columns), width="100%"))
        self.grid.add_class("deepe-grid")
        self.rows: list[list[w.Widget]] = []
        super().__init__([self.grid], layout=w.Layout(max_height=max_height, width="100%", **kwargs))
        self.add_class("deepe-grid-scroll")

    @staticmethod
    def cell(widget: w.Widget, *classes: str) -> w.Widget:
        widget.add_class("deepe-cell")
        for name in classes:
            widget.add_class(name)
        return widget

    @staticmethod
    def text_cells(cells: list[str]) -> w.HTML:
        """One widget drawing several read-only cells of a row (HTML strings, escaped by the caller):
        a table of text costs one widget model per row instead of three per cell."""
        widget = w.HTML("".join(f"<div class='deepe-subcell'>{cell}</div>" for cell in cells))
        widget.add_class("deepe-cells")
        return widget

    def set_rows(self, rows: list[list[w.Widget]]) -> None:
        """Show these rows (lists of cell widgets, as many as columns, `text_cells` counting for as
        many as it draws); unchanged leading rows keep their views in the page."""
        for row in rows:
            for widget in row:
                if not {"deepe-cell", "deepe-cells"} & set(widget._dom_classes):
                    self.cell(widget)
        self.rows = rows
        children = tuple(self.head) + tuple(widget for row in rows for widget in row)
        if tuple(self.grid.children) != children:
            self.grid.children = children


def html_table(headers: list[str], rows: list[list], css_class: str = "deepe-table") -> str:
    """A plain HTML table; cells are HTML (escape what you put in), headers are text."""
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
