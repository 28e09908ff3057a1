"""The trainings list: status, progress, method, base model, started, duration, last loss."""

from __future__ import annotations

import asyncio
import html

import ipywidgets as w

from .. import jobs
from ..errors import DeepeError
from ..store import FINISHED
from ..jobs import format_duration as duration, format_time as when
from .common import Status, start_poller

COLUMNS = (("", "30px"), ("ID", "45px"), ("Name", "120px"), ("Status", "90px"), ("Progress", "150px"),
           ("Method", "110px"), ("Base model", "190px"), ("Started", "130px"), ("Duration", "75px"),
           ("Last loss", "80px"))


class TrainingList(w.VBox):
    """Select rows for "View Details", "Compare" or cancel; refreshes itself every few seconds."""

    poll_seconds = 2.0

    def __init__(self, on_details=None, on_compare=None, limit: int = 200):
        self.on_details, self.on_compare, self.limit = on_details, on_compare, limit
        self.rows = w.VBox()
        self.selected: dict[int, w.Checkbox] = {}
        self._rows: dict[int, dict] = {}
        self._unfinished = False
        self._head = w.HBox([w.HTML(f"<b>{title}</b>", layout=w.Layout(width=width)) for title, width in COLUMNS])
        self.details = w.Button(description="View Details", icon="search")
        self.compare = w.Button(description="Compare", icon="columns")
        self.cancel = w.Button(description="Cancel", icon="stop", button_style="warning")
        self.reload = w.Button(description="Refresh", icon="refresh")
        self.status = Status()
        self.details.on_click(lambda _b: self._on_details())
        self.compare.on_click(lambda _b: self._on_compare())
        self.cancel.on_click(lambda _b: self._on_cancel())
        self.reload.on_click(lambda _b: self.refresh())
        super().__init__([w.HTML("<h3>Trainings</h3>"),
                          w.HBox([self.details, self.compare, self.cancel, self.reload, self.status]), self.rows])
        self.refresh()
        self._task = start_poller(self._poll)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            # refresh while a job shown (or in the table now) is unfinished: the last transition shows too
            if self._unfinished or any(j.status not in FINISHED for j in jobs.list_jobs(limit=self.limit)):
                self.refresh()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        super().close()

    def chosen(self) -> list[int]:
        return [job_id for job_id, box in self.selected.items() if box.value]

    def refresh(self) -> None:
        """Update the rows in place (a re-render would drop a click that lands mid-refresh)."""
        listed = jobs.list_jobs(limit=self.limit)
        self._unfinished = any(j.status not in FINISHED for j in listed)
        for job in listed:
            row = self._rows.get(job.id) or self._new_row(job.id)
            fraction = job.progress_step / job.progress_total if job.progress_total else \
                (1.0 if job.status == "succeeded" else 0.0)
            row["bar"].value = fraction
            row["bar"].bar_style = {"succeeded": "success", "failed": "danger"}.get(job.status, "info")
            loss = jobs.last_metric(job.id, "loss")
            values = (job.id, job.name, job.status, job.method, job.base_model or "-", when(job.started_at),
                      duration(job), f"{loss:.4f}" if loss is not None else "-")
            for cell, value in zip(row["cells"], values):
                text = html.escape(str(value))
                if cell.value != text:
                    cell.value = text
        shown = [j.id for j in listed]
        for gone in set(self._rows) - set(shown):
            self._rows.pop(gone)["box"].close()
            self.selected.pop(gone, None)
        children = (self._head, *(self._rows[i]["box"] for i in shown))
        if tuple(self.rows.children) != children:
            self.rows.children = children

    def _new_row(self, job_id: int) -> dict:
        check = w.Checkbox(value=False, indent=False, layout=w.Layout(width="30px"))
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
