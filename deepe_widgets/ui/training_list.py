"""The trainings list: one row per job (status, progress, method, base model, started, duration,
last loss) with its own "View Details"; tick rows to Compare, Cancel or Remove them."""

from __future__ import annotations

import asyncio
import html
import time

import ipywidgets as w

from .. import jobs, metrics
from ..errors import DeepeError
from ..jobs import format_duration as duration
from ..store import FINISHED, JobKind, JobStatus
from .common import close_tree, stylesheet
from .feedback import ConnectionNote, Status, confirm_row
from .polling import PollingView
from .tables import GridTable

# Fits 800 px without a scroll bar; the cells of a narrow column cut their text with "…"
COLUMNS = (("", "24px"), ("Training", "minmax(80px, 1.4fr)"), ("Status", "78px"), ("Progress", "72px"),
           ("Method", "minmax(64px, 1fr)"), ("Base model", "minmax(64px, 1fr)"), ("Started", "96px"),
           ("Duration", "70px"), ("Last loss", "70px"), ("", "112px"))
JOB_KIND_WORDS = {JobKind.SAVE: "saves", JobKind.EVALUATE: "evaluates"}
STATUS_COLOURS = {JobStatus.SUCCEEDED: "#1a7f37", JobStatus.FAILED: "#cf222e", JobStatus.RUNNING: "#0969da",
                  JobStatus.CANCELLING: "#9a6700", JobStatus.CANCELLED: "#57606a", JobStatus.QUEUED: "#57606a"}


def short_time(ts: float | None) -> str:
    """"11-23 15:25": a list's start time (the year is in the details)."""
    return time.strftime("%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def status_words(job) -> str:
    """A job's status as people read it: "starting…" while a running job has done no step yet."""
    if job.status == JobStatus.RUNNING and not job.progress_step:
        return "starting…"
    if job.status == JobStatus.CANCELLING:
        return "cancelling…"
    return str(job.status)


def status_html(job) -> str:
    """The status in its colour; a success with warnings says so (the reasons on hover)."""
    colour = STATUS_COLOURS.get(job.status, "#555")
    text = f"<span class='deepe-job-status' style='color:{colour}'>{html.escape(status_words(job))}</span>"
    warnings = getattr(job, "warnings", None)
    if warnings:  # a success that should not look silent
        tip = html.escape("; ".join(warnings), quote=True)
        text += f" <span class='deepe-warning' title='{tip}' style='color:#9a6700'>⚠ warning</span>"
    return text


class TrainingList(PollingView, w.VBox):
    """Each row has "View Details"; ticked rows can be compared, cancelled or removed (the last two
    after a question). Refreshes itself every few seconds.

    Shows one page of jobs at a time (newest first), so ten thousand jobs cost what twenty-five do;
    a selection survives paging. The rows scroll in a box of their own, so the details that open
    below it stay in sight."""

    poll_seconds = 2.0

    def __init__(self, on_details=None, on_compare=None, page_size: int = 25, on_removed=None):
        self.on_details, self.on_compare, self.page_size = on_details, on_compare, page_size
        self.on_removed = on_removed  # called with the ids removed (the dashboard closes their details)
        self.page = 0
        self.table = GridTable(list(COLUMNS), max_height="380px")
        self.table.add_class("deepe-trainings")
        self.selected: dict[int, w.Checkbox] = {}  # the rows on this page
        self._chosen: set[int] = set()             # every selected job, on any page
        self._rows: dict[int, dict] = {}
        self._unfinished = False
        self._seen = None
        self.open_job: int | None = None
        self.compare = w.Button(description="Compare", icon="columns", tooltip="compare the ticked trainings")
        self.cancel = w.Button(description="Cancel…", icon="stop", tooltip="cancel the ticked trainings (asks first)")
        self.remove = w.Button(description="Remove…", icon="trash",
                               tooltip="remove the ticked finished trainings from the list, with their run "
                                       "folders (asks first)")
        self.reload = w.Button(description="Refresh", icon="refresh")
        self.newer = w.Button(description="Newer", icon="chevron-left", layout=w.Layout(width="90px"))
        self.older = w.Button(description="Older", icon="chevron-right", layout=w.Layout(width="90px"))
        self.position = w.HTML()
        self.status = Status()
        self.connection = ConnectionNote()
        self.confirm = confirm_row(w.HTML(), "Yes, cancel them", self._cancel_asked, no="No, let them run")
        self.confirm_remove = confirm_row(w.HTML(), "Yes, remove them", self._remove_asked, no="No, keep them")
        self._to_cancel: list[int] = []
        self._to_remove: list[int] = []
        self._following: list[int] = []  # the jobs the status line speaks of while they are being cancelled
        self._cancelled: list | None = None  # those jobs as last read, while the line follows them
        self._cancel_failed: list[str] = []
        self.compare.on_click(lambda _b: self._on_compare())
        self.cancel.on_click(lambda _b: self._on_cancel())
        self.remove.on_click(lambda _b: self._on_remove())
        self.reload.on_click(lambda _b: self._on_reload())
        self.newer.on_click(lambda _b: self.show_page(self.page - 1))
        self.older.on_click(lambda _b: self.show_page(self.page + 1))
        super().__init__([stylesheet(), w.HTML("<h3>Trainings</h3>"),
                          w.HBox([self.compare, self.reload, self.cancel, self.remove, self.status,
                                  self.connection], layout=w.Layout(align_items="center", flex_flow="row wrap")),
                          self.confirm, self.confirm_remove, self.table,
                          w.HBox([self.newer, self.older, self.position], layout=w.Layout(align_items="center"))])
        self.refresh()
        self.start_polling()

    async def poll_once(self) -> bool:
        """One poll: the reads in a thread (the kernel's loop stays free), the rows updated here."""
        # one cheap query; rows are read only when a job was added, or one shown is still running
        # (so its last transition shows too)
        if self._unfinished or self._following or await asyncio.to_thread(jobs.jobs_overview) != self._seen:
            page = self.page
            read = await asyncio.to_thread(self._read, page)
            if page == self.page:  # a click on Newer/Older meanwhile has shown its own page
                self._show(read)
        return False

    def chosen(self) -> list[int]:
        return sorted(self._chosen)

    def show_page(self, page: int) -> None:
        self.page = max(0, page)
        self.refresh()

    def refresh(self) -> None:
        """Update the rows in place (a re-render would drop a click that lands mid-refresh)."""
        self._show(self._read(self.page))

    def _on_reload(self) -> None:
        """Refresh asked for by the user: an old message (a Cancel error, a hint) goes with it."""
        if not self._following:
            self.status.clear()
        self.refresh()

    def mark_open(self, job_id: int | None) -> None:
        """Highlight the row whose details are open."""
        self.open_job = job_id
        for row_id, row in self._rows.items():
            for cell in row["cells_all"]:
                (cell.add_class if row_id == job_id else cell.remove_class)("deepe-chosen")

    def _read(self, page: int) -> dict:
        """The jobs on `page` (the last one if it is past the end) and their last losses (blocking)."""
        seen = jobs.jobs_overview()
        last_page = max(0, (seen[0] - 1) // self.page_size)
        page = min(page, last_page)
        listed = jobs.list_jobs(limit=self.page_size, offset=page * self.page_size)
        followed = []
        for job_id in list(self._following):
            try:
                followed.append(jobs.get_job(job_id))
            except DeepeError:  # gone meanwhile: nothing more to say of it
                continue
        return {"seen": seen, "page": page, "last_page": last_page, "listed": listed,
                "losses": metrics.last_metrics([j.id for j in listed], "loss"), "followed": followed}

    def _show(self, read: dict) -> None:
        self._seen, self.page, listed, losses = read["seen"], read["page"], read["listed"], read["losses"]
        total, last_page = self._seen[0], read["last_page"]
        self._unfinished = any(j.status not in FINISHED for j in listed)
        if "followed" in read:
            self._show_cancelled(read["followed"])
        for job in listed:
            row = self._rows.get(job.id) or self._new_row(job.id)
            fraction = job.progress_step / job.progress_total if job.progress_total else \
                (1.0 if job.status == JobStatus.SUCCEEDED else 0.0)
            row["bar"].value = fraction
            row["bar"].bar_style = {JobStatus.SUCCEEDED: "success", JobStatus.FAILED: "danger"}.get(job.status, "info")
            loss = losses.get(job.id)
            # a save or evaluate job is not a training: it says what it does, to which model, and has no base
            kind = "" if job.kind == JobKind.TRAIN else f" ({JOB_KIND_WORDS.get(job.kind, job.kind)} " \
                f"{job.base_model or '-'})"
            base = (job.base_model or "-") if job.kind == JobKind.TRAIN else "-"
            values = (f"<span title='{html.escape(f'{job.name}{kind}, job {job.id}', quote=True)}'>"
                      f"{html.escape(job.name + kind)} <span class='deepe-job-id' style='color:#8c959f'>#{job.id}"
                      "</span></span>", status_html(job),
                      f"<span title='{html.escape(job.method, quote=True)}'>{html.escape(job.method)}</span>",
                      f"<span title='{html.escape(base, quote=True)}'>{html.escape(base)}</span>",
                      short_time(job.started_at), duration(job), f"{loss:.4f}" if loss is not None else "-")
            for cell, text in zip(row["cells"], values):
                if cell.value != text:
                    cell.value = text
        shown = [j.id for j in listed]
        for gone in set(self._rows) - set(shown):  # close every widget of the row: none is left in the kernel
            for cell in self._rows.pop(gone)["cells_all"]:
                close_tree(cell)
            del self.selected[gone]
        self.table.set_rows([self._rows[i]["cells_all"] for i in shown])
        self.mark_open(self.open_job)
        first = self.page * self.page_size
        self.position.value = (f"trainings {first + 1}–{first + len(listed)} of {total:,}" if listed
                               else "<i>No trainings yet: start one under Train.</i>")
        self.newer.disabled, self.older.disabled = self.page == 0, self.page >= last_page

    def _new_row(self, job_id: int) -> dict:
        check = w.Checkbox(value=job_id in self._chosen, indent=False, layout=w.Layout(width="26px"),
                           tooltip=f"tick job {job_id} to compare or cancel it")
        check.observe(lambda change: self._on_tick(job_id, change["new"]), "value")
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="90px"))
        cells = [w.HTML() for _ in range(7)]  # name, status, method, base model, started, duration, loss
        details = w.Button(description="View Details", icon="search", layout=w.Layout(width="112px"),
                           tooltip=f"job {job_id}: overview, charts, log and record")
        details.on_click(lambda _b: self._on_details(job_id))
        self.selected[job_id] = check
        row = [check, *cells[:2], bar, *cells[2:], details]
        self._rows[job_id] = {"bar": bar, "cells": cells, "status": cells[1], "details": details, "cells_all": row}
        return self._rows[job_id]

    def _on_tick(self, job_id: int, ticked: bool) -> None:
        (self._chosen.add if ticked else self._chosen.discard)(job_id)
        if self.status.value and not self._following:  # a hint or error about the old selection is stale
            self.status.clear()

    def _untick_all(self) -> None:
        self._chosen.clear()
        for check in self.selected.values():
            check.value = False

    def _on_details(self, job_id: int) -> None:
        self.status.clear()
        self.mark_open(job_id)
        if self.on_details:
            self.on_details(job_id)

    def _on_compare(self) -> None:
        chosen = self.chosen()
        if len(chosen) < 2:
            self.status.show("Tick two or more trainings (the boxes on the left), then Compare.", "warn")
            return
        self.status.clear()
        if self.on_compare:
            self.on_compare(sorted(chosen))

    def _on_cancel(self) -> None:
        """Seed-style "are you sure": says which trainings, and what cancelling does, before it does it."""
        chosen = self.chosen()
        self.confirm.hide()
        self.confirm_remove.hide()
        if not chosen:
            self.status.show("Tick the trainings to cancel first (the boxes on the left).", "warn")
            return
        found = []
        for job_id in chosen:
            try:
                found.append(jobs.get_job(job_id))
            except DeepeError:
                continue
        live = [j for j in found if j.status not in FINISHED]
        if not live:
            self.status.show("Only queued or running trainings can be cancelled; the ticked ones have finished.",
                             "warn")
            return
        self.status.clear()
        self._to_cancel = [j.id for j in live]
        names = ", ".join(j.name for j in live)
        what = "this training" if len(live) == 1 else f"these {len(live)} trainings"
        done = [j for j in found if j.status in FINISHED]
        # every ticked job is named: the finished ones as left alone
        also = (f" ({', '.join(f'{j.name} {j.status}' for j in done)}: nothing to cancel)") if done else ""
        self.confirm.yes.description = "Yes, cancel it" if len(live) == 1 else "Yes, cancel them"
        self.confirm.no.description = "No, let it run" if len(live) == 1 else "No, let them run"
        self.confirm.ask(f"Cancel {what} ({names})?{also} A running one stops now; its partial record stays.")

    def _cancel_asked(self) -> None:
        cancelled, failed = [], []
        for job_id in self._to_cancel:
            try:
                cancelled.append(jobs.cancel_job(job_id))
            except DeepeError as exc:
                failed.append(exc.message)
        self._to_cancel = []
        self._untick_all()  # done with them: a later Compare or Cancel starts from a clean selection
        # a running job is "cancelling…" until its worker has stopped it: the line follows it to "cancelled"
        self._following = [j.id for j in cancelled if j.status not in FINISHED]
        self._cancelled, self._cancel_failed = cancelled, failed
        self._show_cancelled(cancelled)
        self.refresh()

    def _show_cancelled(self, followed) -> None:
        """The status line after Cancel, as the cancelled jobs are now; it stops following them once
        each has finished (a job that ran to its end first says so)."""
        if self._cancelled is None:
            return
        now = {j.id: j for j in followed}
        jobs_now = [now.get(j.id, j) for j in self._cancelled]
        self._cancelled = jobs_now
        self._following = [j.id for j in jobs_now if j.status not in FINISHED]
        text = "; ".join([f"{j.name} {status_words(j)}" for j in jobs_now] + self._cancel_failed)
        self.status.show(text, "error" if self._cancel_failed else "ok")
        if not self._following:
            self._cancelled = None

    def _on_remove(self) -> None:
        """Ask before removing the ticked finished jobs; the ones that cannot go are named with the
        reason first (a running job, a job whose model is still registered), before any question."""
        chosen = self.chosen()
        self.confirm.hide()
        self.confirm_remove.hide()
        if not chosen:
            self.status.show("Tick the trainings to remove first (the boxes on the left).", "warn")
            return
        removable, refused = [], []
        for job_id in chosen:
            try:
                job = jobs.get_job(job_id)
                jobs.check_removable(job)
            except DeepeError as exc:
                refused.append(exc.message)
                continue
            removable.append(job)
        if not removable:
            self.status.show("Nothing to remove: " + "; ".join(refused) + ".", "error")
            return
        if refused:  # said beside the question, which names only the ones that go
            self.status.show("Not removed: " + "; ".join(refused) + ".", "warn")
        else:
            self.status.clear()
        self._to_remove = [j.id for j in removable]
        names = ", ".join(f"{j.name} ({j.status})" for j in removable)
        one = len(removable) == 1
        self.confirm_remove.yes.description = "Yes, remove it" if one else "Yes, remove them"
        self.confirm_remove.no.description = "No, keep it" if one else "No, keep them"
        self.confirm_remove.ask(f"Remove {'this training' if one else f'these {len(removable)} trainings'} "
                                f"({names}) from the list? Its metrics, log and run folder are deleted for good.")

    def _remove_asked(self) -> None:
        removed, failed = [], []
        for job_id in self._to_remove:
            try:
                jobs.delete_job(job_id)
            except DeepeError as exc:  # started or gained a model since the question
                failed.append(exc.message)
                continue
            removed.append(job_id)
        self._to_remove = []
        self._untick_all()
        if self.open_job in removed:
            self.open_job = None
        text = (f"removed {', '.join(f'job {i}' for i in removed)}" if removed else "") + \
            ("; " if removed and failed else "") + "; ".join(failed)
        self.status.show(text, "error" if failed else "ok")
        self.refresh()
        if removed and self.on_removed:
            self.on_removed(removed)
