"""View Details: "Train Overview", "Evaluation Data" (live bqplot charts) and "Train Log"."""

from __future__ import annotations

import asyncio
import html
import os
from pathlib import Path

import bqplot as bq
import ipywidgets as w

from .. import jobs, methods, metrics
from .. import params as paramlib
from ..errors import DeepeError
from ..jobs import format_duration as duration
from ..jobs import format_time as when
from ..store import FINISHED
from .common import MAX_POINTS, ConnectionNote, Status, close_tree, decimate, html_table, poll_forever, start_poller

LEVELS = ("all", "INFO", "WARNING", "ERROR")


def is_summary_metric(name: str) -> bool:
    """End-of-training totals (one value per run): a table row, not a curve."""
    return name == "total_flos" or name.startswith("train_")


def y_axis(scale, label: str) -> bq.Axis:
    # "~g": 0.0035 and 5.998 read as such; the label sits clear of the tick numbers
    return bq.Axis(scale=scale, side="left", label=label, grid_lines="dashed", tick_format="~g", label_offset="62px")


def metric_figure(title: str, x_label: str) -> tuple[bq.Figure, bq.Lines]:
    """One chart: axes with labels, a line we only ever update (never recreate)."""
    x, y = bq.LinearScale(), bq.LinearScale()
    line = bq.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=["#0969da"], labels=[title],
                    display_legend=False)
    fig = bq.Figure(marks=[line], axes=[bq.Axis(scale=x, label=x_label, grid_lines="dashed", side="bottom"),
                                        y_axis(y, title)],
                    title=title, layout=w.Layout(width="420px", height="280px"),
                    fig_margin={"top": 40, "bottom": 45, "left": 80, "right": 15})
    return fig, line


class TrainingDetail(w.VBox):
    """Everything about one job; charts and log follow it live while it runs."""

    poll_seconds = 0.5

    def __init__(self, job_id: int, on_copy=None):
        self.job_id = int(job_id)
        self.on_copy = on_copy
        self.header = w.HTML()
        self.progress = w.FloatProgress(min=0, max=1, description="progress", layout=w.Layout(width="420px"))
        self.overview = w.HTML()
        self.copy = w.Button(description="Copy the Train", icon="copy", button_style="info")
        self.copy.on_click(lambda _b: self.on_copy and self.on_copy(jobs.get_job(self.job_id)))
        self.x_axis = w.ToggleButtons(options=[("by step", "step"), ("by epoch", "epoch")], value="step")
        self.x_axis.observe(lambda _c: self._redraw(), "value")
        self.charts = w.Box(layout=w.Layout(flex_flow="row wrap"))
        self.no_data = w.HTML("<i>No metrics yet: they appear here as the trainer logs them.</i>")
        self.totals = w.HTML()
        self.level = w.Dropdown(options=LEVELS, description="level")
        self.level.observe(lambda _c: self._render_log(), "value")
        self.log_view = w.HTML(layout=w.Layout(max_height="420px", overflow="auto", border="1px solid #ddd"))
        self.status = Status()
        self.connection = ConnectionNote()
        self.tabs = w.Tab(children=[w.VBox([self.overview, self.copy]),
                                    w.VBox([self.x_axis, self.no_data, self.charts, self.totals]),
                                    w.VBox([self.level, self.log_view])],
                          titles=("Train Overview", "Evaluation Data", "Train Log"))
        self.series: dict[str, dict[str, list]] = {}
        self.lines: dict[str, bq.Lines] = {}
        self.figures: dict[str, bq.Figure] = {}
        self._last_id = 0
        self._log_offsets: dict[Path, int] = {}
        self._log_lines: list[str] = []
        self._task = None
        super().__init__([self.header, self.connection, self.progress, self.tabs, self.status])
        if not self.refresh():  # a finished job has nothing more to follow
            self._task = start_poller(lambda: poll_forever(self.poll_once, self.connection, self.poll_seconds))

    # --- polling -------------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """One poll of the live view: reads in a thread (the kernel's loop stays free), widget
        updates here on the loop; True once the job has finished."""
        return self._show(await asyncio.to_thread(self._read))

    def refresh(self) -> bool:
        """Read new metric rows, log lines and the job row and show them; True once the job has finished."""
        return self._show(self._read())

    def _read(self) -> dict:
        """Everything a refresh needs from the database and the log files (blocking: no widget is touched)."""
        job = jobs.get_job(self.job_id)
        return {"job": job, "summary": jobs.job_summary(job), "params": self._all_params(job),
                "metrics": metrics.metrics_for(self.job_id, after_id=self._last_id), "log": self._read_log(job)}

    def _show(self, read: dict) -> bool:
        job = read["job"]
        self._render_overview(job, read["summary"], read["params"])
        new = read["metrics"]
        for m in new:
            series = self.series.setdefault(m.name, {"step": [], "epoch": [], "value": []})
            series["step"].append(m.step)
            series["epoch"].append(m.epoch if m.epoch is not None else float("nan"))
            series["value"].append(m.value)
            self._last_id = m.id
        if new:
            self._redraw(set(m.name for m in new))
        offsets, lines = read["log"]
        self._log_offsets.update(offsets)
        if lines:
            self._log_lines = (self._log_lines + lines)[-5000:]
            self._render_log()
        return job.status in FINISHED

    def close(self) -> None:
        """Stop following the job and close every widget of the view (charts included)."""
        if self._task is not None:
            self._task.cancel()
        close_tree(self)

    # --- rendering -----------------------------------------------------------------------

    def _render_overview(self, job, summary: dict, params: list[tuple[str, object, bool]]) -> None:
        colour = {"succeeded": "#1a7f37", "failed": "#cf222e", "running": "#0969da"}.get(job.status, "#555")
        self.header.value = (f"<h3>Job {job.id}: {html.escape(job.name)} — "
                             f"<span class='deepe-job-status' style='color:{colour}'>{job.status}</span></h3>")
        if job.progress_total:
            self.progress.value = job.progress_step / job.progress_total
            self.progress.description = f"{job.progress_step}/{job.progress_total}"
        rows = [["method", html.escape(job.method)], ["base model", html.escape(str(job.base_model))],
                ["dataset", html.escape(str(job.dataset))], ["started", when(job.started_at)],
                ["duration", duration(job)], ["attempt", job.attempt],
                ["copied from", job.copied_from or "-"], ["run folder", html.escape(str(job.run_dir))]]
        if job.error:
            rows.append(["error", f"<span style='color:#cf222e'>{html.escape(job.error)}</span>"])
        params = [[f"<b>{html.escape(k)}</b>" if changed else html.escape(k), html.escape(repr(v)),
                   "changed" if changed else ""] for k, v, changed in params]
        records = "".join(f"<li>{self._record(r)}</li>"
                          for r in summary["records"]) or "<li>none yet</li>"
        artifacts = "".join(f"<li>{a['kind']}: <b>{html.escape(a['name'])}</b> ({html.escape(a['path'])})</li>"
                            for a in summary["artifacts"]) or "<li>none yet</li>"
        self.overview.value = (html_table(["", ""], rows) + "<h4>Parameters</h4>"
                               + html_table(["name", "value", ""], params)
                               + f"<h4>Records (executed notebooks)</h4><ul>{records}</ul>"
                               f"<h4>Artifacts</h4><ul>{artifacts}</ul>")

    def _all_params(self, job) -> list[tuple[str, object, bool]]:
        """Every parameter the run got: the method's defaults with this job's changes (marked)."""
        if getattr(self, "_params_for", None) != (job.id, job.params):
            try:
                defaults = methods.get_method(job.method).default_params
            except DeepeError:  # the method was deleted since: its changes are all we know
                defaults = {}
            values = {k: paramlib.default_value(v) for k, v in defaults.items() if k not in paramlib.PLATFORM_SET}
            values.update(job.params)
            self._params_cache = [(k, values[k], k in job.params) for k in sorted(values)]
            self._params_for = (job.id, job.params)
        return self._params_cache

    @staticmethod
    def _record(path: str) -> str:
        """In JupyterLab, a link it opens as a document (relative to the notebook's folder, so from
        `/lab/tree/<notebook>` it lands on `/lab/tree/<record>`); in Voila, the path only: the app
        never serves run records."""
        if os.environ.get("VOILA_KERNEL_ID") or os.environ.get("VOILA_BASE_URL"):
            return f"<code>{html.escape(path)}</code> <i>(open it in JupyterLab)</i>"
        try:
            href = os.path.relpath(path)
        except ValueError:
            href = path
        return f"<a href='{html.escape(href)}' target='_blank' title='{html.escape(path)}'>{html.escape(path)}</a>"

    def _redraw(self, names=None) -> None:
        self.no_data.layout.display = "none" if self.series else None
        names = sorted(names or self.series)
        curves = [n for n in names if not is_summary_metric(n)]
        added = [n for n in curves if n not in self.figures]
        for name in added:
            self.figures[name], self.lines[name] = metric_figure(name, self.x_axis.value)
        if added:  # one children update per poll: views of a box are created once, not raced
            self.charts.children = tuple(self.figures[n] for n in sorted(self.figures))
        totals = sorted(n for n in self.series if is_summary_metric(n))
        if totals:
            self.totals.value = "<h4>At the end of training</h4>" + html_table(
                ["metric", "value"], [[html.escape(n), f"{self.series[n]['value'][-1]:.6g}"] for n in totals])
        for name in curves:
            series = self.series[name]
            xs = series[self.x_axis.value]
            pairs = [(x, y) for x, y in zip(xs, series["value"]) if x == x]  # epoch may be missing (nan)
            x, y = decimate([p[0] for p in pairs], [p[1] for p in pairs], MAX_POINTS)
            line = self.lines[name]
            with line.hold_sync():
                line.x, line.y = x, y
            self.figures[name].axes[0].label = self.x_axis.value

    def _read_log(self, job) -> tuple[dict[Path, int], list[str]]:
        """The lines the stage logs gained since the last read, and the offsets to read on from."""
        offsets, lines = {}, []
        if not job.run_dir:  # queued: no run folder yet (and never the kernel's working folder)
            return offsets, lines
        for log in sorted(Path(job.run_dir).glob("*.log")):
            if log.name == "runner.log":
                continue
            with open(log, encoding="utf-8", errors="replace") as handle:
                handle.seek(self._log_offsets.get(log, 0))
                lines.extend(handle.read().replace("\r", "\n").splitlines())
                offsets[log] = handle.tell()
        return offsets, lines

    def _render_log(self) -> None:
        level = self.level.value
        lines = self._log_lines if level == "all" else [line for line in self._log_lines if f" {level} " in line
                                                         or (level == "WARNING" and "Warning" in line)]
        text = html.escape("\n".join(lines[-1000:]))
        self.log_view.value = f"<pre class='deepe-log' style='margin:0;font-size:12px'>{text}</pre>"
