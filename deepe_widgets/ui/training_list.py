"""The trainings list: status, progress, method, base model, started, duration, last loss."""

from __future__ import annotations

import asyncio
import html

import ipywidgets as w

from .. import jobs, metrics
from ..errors import DeepeError
from ..jobs import format_duration as duration
from ..jobs import format_time as when
from ..store import FINISHED
from .common import ConnectionNote, Status, close_tree, poll_forever, start_poller

COLUMNS = (("", "30px"), ("ID", "45px"), ("Name", "120px"), ("Status", "90px"), ("Progress", "150px"),
           ("Method", "110px"), ("Base model", "190px"), ("Started", "130px"), ("Duration", "75px"),
           ("Last loss", "80px"))


class TrainingList(w.VBox):
    """Select rows for "View Details", "Compare" or cancel; refreshes itself every few seconds.

    Shows one page of jobs at a time (newest first), so ten thousand jobs cost what twenty-five do;
    a selection survives paging."""

    poll_seconds = 2.0

    def __init__(self, on_details=None, on_compare=None, page_size: int = 25):
        self.on_details, self.on_compare, self.page_size = on_details, on_compare, page_size
        self.page = 0
        self.rows = w.VBox()
        self.selected: dict[int, w.Checkbox] = {}  # the rows on this page
        self._chosen: set[int] = set()             # every selected job, on any page
        self._rows: dict[int, dict] = {}
        self._unfinished = False
        self._seen = None
        self._head = w.HBox([w.HTML(f"<b>{title}</b>", layout=w.Layout(width=width)) for title, width in COLUMNS])
        self.details = w.Button(description="View Details", icon="search")
        self.compare = w.Button(description="Compare", icon="columns")
        self.cancel = w.Button(description="Cancel", icon="stop", button_style="warning")
        self.reload = w.Button(description="Refresh", icon="refresh")
        self.newer = w.Button(description="Newer", icon="chevron-left", layout=w.Layout(width="90px"))
        self.older = w.Button(description="Older", icon="chevron-right", layout=w.Layout(width="90px"))
        self.position = w.HTML()
        self.status = Status()
        self.connection = ConnectionNote()
        self.details.on_click(lambda _b: self._on_details())
        self.compare.on_click(lambda _b: self._on_compare())
        self.cancel.on_click(lambda _b: self._on_cancel())
        self.reload.on_click(lambda _b: self.refresh())
        self.newer.on_click(lambda _b: self.show_page(self.page - 1))
        self.older.on_click(lambda _b: self.show_page(self.page + 1))
        super().__init__([w.HTML("<h3>Trainings</h3>"),
                          w.HBox([self.details, self.compare, self.cancel, self.reload, self.status, self.connection]),
                          self.rows,
                          w.HBox([self.newer, self.older, self.position])])
        self.refresh()
        self._task = start_poller(lambda: poll_forever(self.poll_once, self.connection, self.poll_seconds))

    async def poll_once(self) -> bool:
        """One poll: the reads in a thread (the kernel's loop stays free), the rows updated here."""
        # one cheap query; rows are read only when a job was added, or one shown is still running
        # (so its last transition shows too)
        if self._unfinished or await asyncio.to_thread(jobs.jobs_overview) != self._seen:
            page = self.page
            read = await asyncio.to_thread(self._read, page)
            if page == self.page:  # a click on Newer/Older meanwhile has shown its own page
                self._show(read)
        return False

    def close(self) -> None:
        """Stop polling and close every widget of the list."""
        if self._task is not None:
            self._task.cancel()
        close_tree(self)

    def chosen(self) -> list[int]:
        return sorted(self._chosen)

    def show_page(self, page: int) -> None:
        self.page = max(0, page)
        self.refresh()

    def refresh(self) -> None:
        """Update the rows in place (a re-render would drop a click that lands mid-refresh)."""
        self._show(self._read(self.page))

    def _read(self, page: int) -> dict:
        """The jobs on `page` (the last one if it is past the end) and their last losses (blocking)."""
        seen = jobs.jobs_overview()
        last_page = max(0, (seen[0] - 1) // self.page_size)
        page = min(page, last_page)
        listed = jobs.list_jobs(limit=self.page_size, offset=page * self.page_size)
        return {"seen": seen, "page": page, "last_page": last_page, "listed": listed,
                "losses": metrics.last_metrics([j.id for j in listed], "loss")}

    def _show(self, read: dict) -> None:
        self._seen, self.page, listed, losses = read["seen"], read["page"], read["listed"], read["losses"]
        total, last_page = self._seen[0], read["last_page"]
        self._unfinished = any(j.status not in FINISHED for j in listed)
        for job in listed:
            row = self._rows.get(job.id) or self._new_row(job.id)
            fraction = job.progress_step / job.progress_total if job.progress_total else \
                (1.0 if job.status == "succeeded" else 0.0)
            row["bar"].value = fraction
            row["bar"].bar_style = {"succeeded": "success", "failed": "danger"}.get(job.status, "info")
            loss = losses.get(job.id)
            values = (job.id, job.name, job.status, job.method, job.base_model or "-", when(job.started_at),
                      duration(job), f"{loss:.4f}" if loss is not None else "-")
            for cell, value in zip(row["cells"], values):
                text = html.escape(str(value))
                if cell is row["cells"][2] and job.warnings:  # a success that should not look silent
                    tip = html.escape("; ".join(job.warnings), quote=True)
                    text += f" <span class='deepe-warning' title='{tip}' style='color:#9a6700'>⚠ warning</span>"
                if cell.value != text:
                    cell.value = text
        shown = [j.id for j in listed]
        for gone in set(self._rows) - set(shown):  # close every widget of the row: none is left in the kernel
            close_tree(self._rows.pop(gone)["box"])
            del self.selected[gone]
        children = (self._head, *(self._rows[i]["box"] for i in shown))
        if tuple(self.rows.children) != children:
            self.rows.children = children
        first = self.page * self.page_size
        self.position.value = (f"jobs {first + 1}–{first + len(listed)} of {total:,}" if listed
                               else "<i>No trainings yet: start one under Train.</i>")
        self.newer.disabled, self.older.disabled = self.page == 0, self.page >= last_page

    def _new_row(self, job_id: int) -> dict:
        check = w.Checkbox(value=job_id in self._chosen, indent=False, layout=w.Layout(width="30px"))
        check.observe(lambda change: (self._chosen.add if change["new"] else self._chosen.discard)(job_id), "value")
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="150px"))
        widths = [width for _title, width in COLUMNS[1:4] + COLUMNS[5:]]
        cells = [w.HTML(layout=w.Layout(width=width)) for width in widths]
        box = w.HBox([check, *cells[:3], bar, *cells[3:]], layout=w.Layout(border_bottom="1px solid #eee"))
        self.selected[job_id] = check
        self._rows[job_id] = {"box": box, "bar": bar, "cells": cells}
        return self._rows[job_id]

    def _on_details(self) -> None:
        chosen = self.chosen()
        if len(chosen) != 1:
            self.status.show("select one training to view", "warn")
            return
        self.status.clear()
        if self.on_details:
            self.on_details(chosen[0])

    def _on_compare(self) -> None:
        chosen = self.chosen()
        if len(chosen) < 2:
            self.status.show("select two or more trainings to compare", "warn")
            return
        self.status.clear()
        if self.on_compare:
            self.on_compare(sorted(chosen))

    def _on_cancel(self) -> None:
        for job_id in self.chosen():
            try:
                job = jobs.cancel_job(job_id)
                self.status.show(f"job {job_id}: {job.status}", "ok")
            except DeepeError as exc:
                self.status.show(exc.message, "error")
        self.refresh()
