"""View Details: "Train Overview", "Evaluation Data" (live bqplot charts of the training rows and of the
held-out rows, then the Evaluation: tuned and base model side by side), "Train Log" and "Record"."""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path

import bqplot as bq
import ipywidgets as w

from .. import jobs, methods, metrics, reruns, worker
from .. import params as paramlib
from ..errors import DeepeError
from ..jobs import format_duration as duration
from ..jobs import format_time as when
from ..store import FINISHED, JobKind, JobStatus
from .charts import MAX_POINTS, decimate
from .common import stylesheet
from .evaluation_view import EvaluationSection
from .feedback import ConnectionNote, Status, confirm_row, error_text
from .gallery import ValidationGallery
from .labels import metric_label, metric_order, param_label, show_value, used_parameters
from .polling import PollingView
from .record import RecordView, size_words
from .state import in_voila_app
from .tables import html_table
from .training_list import status_html

LEVELS = (("all lines", "all"), ("info", "INFO"), ("warnings", "WARNING"), ("errors", "ERROR"))
TAB_OVERVIEW, TAB_CHARTS, TAB_LOG, TAB_RECORD = range(4)
LOG_KEEP = 5000       # lines kept in the kernel
LOG_SHOWN = 1000      # lines put in the page at a rebuild
LOG_CHUNKS = 60       # appended chunks before they are merged into one
LOG_READ_BYTES = 256 * 1024  # of one log per read: a first look reads its end, a poll at most this much new
RECORD_EVERY = 2.0    # seconds between looks at a running stage's record
EVALUATION_EVERY = 2.0  # seconds between looks at the evaluate jobs of the training's model
HELD_OUT_PREFIXES = ("eval_", "val_")  # the trainer's metrics on the held-out rows (MLX logs val_loss)
# what a trainer's evaluation logs about itself, not about the rows: charted last, never on a training chart
EVAL_BOOKKEEPING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_num_tokens")
TRAIN_COLOUR, HELD_OUT_COLOUR = "#0969da", "#e16f24"

# What the Train Log calls noise: the kernel's own chatter and library warnings with their
# follow-up line, and progress bars (the same steps are logged as lines of their own).
NOISE = re.compile(r"^\[IPKernelApp\]|^\S+\.py:\d+: \w*Warning:|^\s*\d+%\|.*\|")
CONTINUATION = re.compile(r"^\s+\S")
WARNING_WORDS = re.compile(r"\bWARNING\b|Warning:")
ERROR_WORDS = re.compile(r"\bERROR\b|Traceback|Error:|\bCRITICAL\b")
KIND_WORDS = {"customized": "Customized Model", "complete": "Complete Model", "live": "Live Model",
              "base": "Base Model"}


def is_summary_metric(name: str) -> bool:
    """End-of-training totals (one value per run): a table row, not a curve."""
    return name == "total_flos" or name.startswith("train_")


def is_held_out(name: str) -> bool:
    """A metric of the held-out rows (validation), charted beside the training curves."""
    return name.startswith(HELD_OUT_PREFIXES)


def training_twin(name: str) -> str:
    """The training-rows metric a held-out metric mirrors: eval_loss -> loss, val_loss -> loss."""
    for prefix in HELD_OUT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def y_axis(scale, label: str) -> bq.Axis:
    # "~g": 0.0035 and 5.998 read as such; the label sits clear of the tick numbers
    return bq.Axis(scale=scale, side="left", label=label, grid_lines="dashed", tick_format="~g", label_offset="62px")


def metric_figure(title: str, x_label: str, colour: str = TRAIN_COLOUR) -> tuple[bq.Figure, bq.Lines]:
    """One chart: axes with labels, a line we only ever update (never recreate)."""
    x, y = bq.LinearScale(), bq.LinearScale()
    line = bq.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=[colour], labels=[title],
                    display_legend=False, marker="circle" if colour == HELD_OUT_COLOUR else None,
                    marker_size=16)
    fig = bq.Figure(marks=[line], axes=[bq.Axis(scale=x, label=x_label, grid_lines="dashed", side="bottom"),
                                        y_axis(y, title)],
                    title=title, layout=w.Layout(width="420px", height="280px"),
                    fig_margin={"top": 40, "bottom": 45, "left": 80, "right": 15}, animation_duration=0)
    return fig, line


def classify(line: str, after_noise: bool) -> tuple[str, str]:
    """(kind, level) of a log line: kind "noise" (kernel chatter, library warnings, progress bars)
    or "line"; level ERROR, WARNING or INFO."""
    noise = bool(NOISE.search(line)) or (after_noise and bool(CONTINUATION.match(line)))
    level = "ERROR" if ERROR_WORDS.search(line) else "WARNING" if WARNING_WORDS.search(line) else "INFO"
    return ("noise" if noise else "line"), level


class LeftOut(str):
    """A Train Log line of ours, not the stage's: which lines were left out and where they are."""


def read_log_lines(path: Path, offset: int, job_id: int, limit: int = LOG_READ_BYTES) -> tuple[int, list[str]]:
    """(the offset to read on from, the lines `path` gained after `offset`), reading at most `limit`
    bytes: when more was written, its older part is skipped and a `LeftOut` line says so."""
    try:
        size = path.stat().st_size
    except OSError:
        return offset, []
    if size < offset:  # the log was started again (a retried stage writes it anew)
        offset = 0
    start = max(offset, size - limit)
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(limit)
    end = start + len(data)
    lines: list[str] = []
    if start > offset:
        data = data[data.find(b"\n") + 1:] if b"\n" in data else b""  # the line the skip cut in two goes too
        where = (f"{path.name} in job {job_id}'s run folder (deepe jobs logs {job_id} prints it all)"
                 if in_voila_app() else str(path))
        lines.append(LeftOut(f"… {size_words(start - offset)} of {'earlier ' if offset == 0 else ''}lines "
                             f"left out here: the whole log is {where}"))
    lines.extend(data.decode("utf-8", errors="replace").replace("\r", "\n").splitlines())
    return end, lines


class TrainingDetail(PollingView, w.VBox):
    """Everything about one job; charts, log and record follow it live while it runs."""

    poll_seconds = 0.5

    def __init__(self, job_id: int, on_copy=None, on_close=None, on_rerun=None, start_worker: bool = True):
        self.job_id = int(job_id)
        self.on_copy, self.on_rerun, self.start_worker = on_copy, on_rerun, start_worker
        self.header = w.HTML()
        self.close_button = w.Button(description="Close details", icon="times", layout=w.Layout(width="130px"))
        self.close_button.layout.display = None if on_close else "none"
        self.close_button.on_click(lambda _b: on_close and on_close())
        self.progress = w.FloatProgress(min=0, max=1, description="progress", layout=w.Layout(width="420px"))
        self.stage_note = w.HTML()
        self.overview = w.HTML()
        self.copy = w.Button(description="Copy the Train", icon="copy", button_style="info",
                             tooltip="a new training with this configuration, ready to change and run")
        self.copy.on_click(lambda _b: self.on_copy and self.on_copy(jobs.get_job(self.job_id)))
        self.rerun = w.Button(description="Re-run", icon="redo",
                              tooltip="the same method files, parameters, dataset and seed, as a new training "
                                      "linked to this one (refused when one of them changed since)")
        self.rerun.on_click(lambda _b: self._rerun(force=False))
        self.rerun_note = w.HTML()
        self.rerun_force = confirm_row(w.HTML(), "Re-run anyway", lambda: self._rerun(force=True),
                                       no="No, leave it")
        self.x_axis = w.ToggleButtons(options=[("by step", "step"), ("by epoch", "epoch")], value="step")
        self.x_axis.observe(lambda _c: self._redraw(), "value")
        self.charts = w.Box(layout=w.Layout(flex_flow="row wrap"))
        self.held_out_charts = w.Box(layout=w.Layout(flex_flow="row wrap"))
        self.charts_title = w.HTML("<h4 style='margin:6px 0 0'>On the training rows</h4>",
                                   layout=w.Layout(display="none"))
        self.held_out_title = w.HTML(
            "<h4 style='margin:6px 0 0'>On the held-out rows <span style='color:#57606a;font-weight:normal'>"
            "(validation: rows the training never sees)</span></h4>", layout=w.Layout(display="none"))
        self.legend = w.HTML(
            f"<div class='deepe-legend'><span><span style='color:{TRAIN_COLOUR};font-weight:700'>━━</span> training "
            f"rows</span><span><span style='color:{HELD_OUT_COLOUR};font-weight:700'>╍●╍</span> held-out rows "
            "(drawn on the training chart too, where both are logged)</span></div>", layout=w.Layout(display="none"))
        self.evaluation = EvaluationSection(job_id=self.job_id)
        self.no_data = w.HTML("<i>No metrics yet: they appear here as the trainer logs them.</i>")
        self.totals = w.HTML()
        self.gallery = ValidationGallery()  # text-to-image trainings: pictures by step
        self.level = w.Dropdown(options=LEVELS, value="all", description="show", layout=w.Layout(width="220px"))
        self.show_noise = w.Checkbox(description="library and kernel messages", indent=False, value=False)
        self.log_note = w.HTML()
        self.log_lines = w.VBox(layout=w.Layout(flex="0 0 auto"))  # chunks, only ever appended to
        self.log_view = w.Box([self.log_lines], layout=w.Layout(max_height="420px", width="100%"))
        self.log_view.add_class("deepe-log-box")  # column-reverse: it sticks to the newest line
        self.log_empty = w.HTML()
        self.level.observe(lambda _c: self._rebuild_log(), "value")
        self.show_noise.observe(lambda _c: self._rebuild_log(), "value")
        self.record = RecordView(download_prefix=f"job{self.job_id}-")
        self.status = Status()
        self.connection = ConnectionNote()
        actions = w.HBox([self.copy, self.rerun, self.rerun_note], layout=w.Layout(align_items="center"))
        self.tabs = w.Tab(children=[w.VBox([self.overview, actions, self.rerun_force]),
                                    w.VBox([self.x_axis, self.no_data, self.legend, self.charts_title, self.charts,
                                            self.held_out_title, self.held_out_charts, self.totals,
                                            self.evaluation]),
                                    w.VBox([w.HBox([self.level, self.show_noise, self.log_note],
                                                   layout=w.Layout(align_items="center")),
                                            self.log_empty, self.log_view]),
                                    self.record],
                          titles=("Train Overview", "Evaluation Data", "Train Log", "Record"))
        self.tabs.observe(self._on_tab, "selected_index")
        charts_tab = self.tabs.children[TAB_CHARTS]  # a text-to-image run's pictures under its charts
        charts_tab.children = (*charts_tab.children, self.gallery)
        self.series: dict[str, dict[str, list]] = {}
        self.lines: dict[str, bq.Lines] = {}
        self.figures: dict[str, bq.Figure] = {}
        self.overlays: dict[str, bq.Lines] = {}  # held-out metric -> its line on the training twin's chart
        self._evaluation_checked = 0.0
        self._last_id = 0
        self._log_offsets: dict[Path, int] = {}
        self._log_entries: list[tuple[str, str, str]] = []  # (kind, level, text)
        self._after_noise = False
        self._job = None
        self._record_checked = 0.0
        super().__init__([stylesheet(), w.HBox([self.header, self.close_button],
                                               layout=w.Layout(justify_content="space-between",
                                                               align_items="center")),
                          self.connection, w.HBox([self.progress, self.stage_note],
                                                  layout=w.Layout(align_items="center")),
                          self.tabs, self.status])
        if not self.refresh():  # a finished job has nothing more to follow
            self.start_polling()

    # --- re-run --------------------------------------------------------------------------

    def _rerun(self, force: bool) -> None:
        """Queue this training again as it ran (`reruns.rerun_job`); when something it was made from
        changed since, say what and offer to re-run it anyway."""
        self.rerun.disabled = True
        try:
            job, notes = reruns.rerun_job(self.job_id, force=force)
            if self.start_worker:
                worker.ensure_worker()
        except DeepeError as exc:
            self.rerun_note.value = ""
            self.rerun_force.ask(exc.message.replace(" (--force re-runs it anyway)", "")
                                 .replace("; --force queues it anyway", "") + ". Re-run it anyway?")
            return
        except Exception as exc:  # unexpected: say what, keep the page alive
            self.rerun_note.value = f"<span class='deepe-field-error'>{html.escape(error_text(exc))}</span>"
            return
        finally:
            self.rerun.disabled = False
        extra = f" ({html.escape('; '.join(notes))})" if notes else ""
        self.rerun_note.value = (f"<span class='deepe-status deepe-ok' style='color:#1a7f37'>Re-run queued as job "
                                 f"{job.id} ({html.escape(job.name)}){extra}.</span>")
        self.last_rerun = job
        if self.on_rerun:
            self.on_rerun(job)

    # --- polling -------------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """One poll of the live view: reads in a thread (the kernel's loop stays free), widget
        updates here on the loop; True once the job has finished."""
        return self._show(await asyncio.to_thread(self._read))

    def refresh(self) -> bool:
        """Read new metric rows, log lines and the job row and show them; True once the job has finished."""
        return self._show(self._read())

    def _read(self) -> dict:
        """Everything a refresh needs from the database and the files (blocking: no widget is touched)."""
        job = jobs.get_job(self.job_id)
        read = {"job": job, "summary": jobs.job_summary(job), "params": self._all_params(job),
                "metrics": metrics.metrics_for(self.job_id, after_id=self._last_id), "log": self._read_log(job),
                "record": None}
        # the record is rendered only while its tab is open, at most every RECORD_EVERY seconds
        if self.tabs.selected_index == TAB_RECORD and time.monotonic() - self._record_checked > RECORD_EVERY:
            self._record_checked = time.monotonic()
            read["record"] = self.record.read_if_changed(paths=read["summary"]["records"])
        read["evaluation"] = None
        if time.monotonic() - self._evaluation_checked > EVALUATION_EVERY:
            self._evaluation_checked = time.monotonic()
            read["evaluation"] = self.evaluation.read(job)
        return read

    def _show(self, read: dict) -> bool:
        job = read["job"]
        self._job = job
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
        self._render_waiting(job)
        self.gallery.refresh(job.run_dir)
        offsets, lines = read["log"]
        self._log_offsets.update(offsets)
        if lines:
            self._add_log_lines(lines)
        elif not self._log_entries:
            self._render_log_state()
        if read["record"] is not None or self.tabs.selected_index == TAB_RECORD:
            self.record.set_paths(read["summary"]["records"])
            self.record.show(read["record"])
        if read["evaluation"] is not None:
            self.evaluation.show(read["evaluation"])
        # a finished training is followed on until its evaluate jobs have finished too
        return job.status in FINISHED and self.evaluation.settled

    def _on_tab(self, change) -> None:
        if change["new"] == TAB_RECORD:  # shown now, kept current by the poller while the run runs
            self.record.set_paths(jobs.job_records(self._job) if self._job is not None else [])
            self._record_checked = time.monotonic()
            self.record.refresh()

    # --- rendering -----------------------------------------------------------------------

    def _render_overview(self, job, summary: dict, params: list[tuple[str, object, bool]]) -> None:
        kind = "" if job.kind == JobKind.TRAIN else f" ({html.escape(job.kind)})"
        self.header.value = (f"<h3 style='margin:4px 0'>{html.escape(job.name)}{kind} "
                             f"<span style='color:#57606a;font-weight:normal'>job {job.id}</span> — "
                             f"{status_html(job)}</h3>")
        if job.progress_total:
            self.progress.value = job.progress_step / job.progress_total
            self.progress.description = f"{job.progress_step}/{job.progress_total}"
        elif job.status == JobStatus.SUCCEEDED:
            self.progress.value = 1.0
        rows = [["Training Method", html.escape(job.method)],
                ["Base Model" if job.kind == JobKind.TRAIN else "Model", html.escape(str(job.base_model or "-"))]]
        if job.kind == JobKind.TRAIN:
            rows.append(["Dataset", html.escape(str(job.dataset))])
        rows += [["Status", status_html(job)], ["Queued", when(job.created_at)], ["Started", when(job.started_at)],
                 ["Duration", duration(job)]]
        if job.attempt > 1:
            rows.append(["Attempt", f"{job.attempt} of {job.max_attempts}"])
        if job.kind == JobKind.TRAIN:
            rows.append(["Copied from", f"job {job.copied_from}" if job.copied_from else "-"])
        if not in_voila_app() and job.run_dir:  # JupyterLab users own the files; app users get the tabs
            rows.append(["Run folder", f"<code>{html.escape(str(job.run_dir))}</code>"])
        if job.status == JobStatus.CANCELLED:  # asked for, not a failure: said in grey, as the status is
            rows.append(["Cancelled", "<span style='color:#57606a'>by the user"
                         f"{' at step ' + str(job.progress_step) if job.progress_step else ' before its first step'}"
                         "</span>"])
        elif job.error:
            rows.append(["Error", f"<span style='color:#cf222e'>{html.escape(job.error)}</span>"])
        for warning in getattr(job, "warnings", None) or []:
            rows.append(["Warning", f"<span style='color:#9a6700'>{html.escape(str(warning))}</span>"])
        changed = [p for p in params if p[2]]
        rest = [p for p in params if not p[2]]
        param_rows = [[f"<b>{html.escape(param_label(k))}</b>", f"<b>{html.escape(show_value(v))}</b>",
                       "<span style='color:#0969da'>changed</span>"] for k, v, _c in changed]
        param_rows += [[html.escape(param_label(k)), html.escape(show_value(v)), "default"] for k, v, _c in rest]
        records = len(summary["records"])
        record_line = ("The executed notebook (the run's record) is under the <b>Record</b> tab." if records
                       else "The executed notebook appears under the <b>Record</b> tab once the stage starts.")
        artifacts = "".join(f"<li>{KIND_WORDS.get(a['kind'], a['kind'])}: <b>{html.escape(a['name'])}</b></li>"
                            for a in summary["artifacts"])
        artifacts = (f"<ul>{artifacts}</ul><div style='color:#57606a'>Save, try or delete it under "
                     "<b>Models</b>.</div>") if artifacts else "<div><i>None yet: a training that succeeds makes a " \
                                                               "Customized Model.</i></div>"
        self.overview.value = (html_table(["", ""], rows) + "<h4>Parameters</h4>"
                               + html_table(["parameter", "value", ""], param_rows)
                               + f"<h4>Record</h4><div>{record_line}</div>"
                               f"<h4>Models it made</h4>{artifacts}")
        self.copy.layout.display = None if job.kind == JobKind.TRAIN else "none"
        self.rerun.layout.display = self.copy.layout.display

    def _render_waiting(self, job) -> None:
        """What a job that has logged nothing yet is doing: queued, or starting (kernel, model, data)."""
        if job.status == JobStatus.QUEUED:
            note = "Queued: waiting for a worker to take it."
        elif job.status == JobStatus.RUNNING and not job.progress_step and not self.series:
            note = ("Starting… the stage kernel is loading the model and the dataset; "
                    "the first metrics appear after the first logged step.")
        else:
            note = ""
        if not self.series and job.status in FINISHED:  # no metric is coming any more: say why there are none
            ended = {JobStatus.CANCELLED: "it was cancelled", JobStatus.FAILED: "it failed"}.get(job.status)
            note = (f"No metrics: {ended} before the trainer logged any." if ended
                    else "No metrics: this job logged none.")
            self.stage_note.value = ""
            self.no_data.value = f"<i>{html.escape(note)}</i>"
            return
        self.stage_note.value = f"<span class='deepe-stage-note' style='color:#57606a'>{html.escape(note)}</span>" \
            if note else ""
        if not self.series:
            self.no_data.value = f"<i>{html.escape(note)}</i>" if note else \
                "<i>No metrics yet: they appear here as the trainer logs them.</i>"

    def _all_params(self, job) -> list[tuple[str, object, bool]]:
        """Every parameter the run got: the method's defaults with this job's changes (marked);
        parameters the method's code never reads are left out unless the job changed them."""
        if getattr(self, "_params_for", None) != (job.id, job.params):
            try:
                method = methods.get_method(job.method)
                defaults, used = method.default_params, used_parameters(method)
            except DeepeError:  # the method was deleted since: its changes are all we know
                defaults, used = {}, None
            values = {k: paramlib.default_value(v) for k, v in defaults.items() if k not in paramlib.PLATFORM_SET}
            if job.kind != JobKind.TRAIN:
                values = {}
            values.update({k: v for k, v in job.params.items() if k not in ("MODEL_PATH", "ADAPTER_PATH")})
            keep = [k for k in values if used is None or k in used or k in job.params]
            self._params_cache = [(k, values[k], k in job.params) for k in sorted(keep, key=param_label)]
            self._params_for = (job.id, job.params)
        return self._params_cache

    def _is_total(self, name: str) -> bool:
        # an evaluate job logs its scores once (step 0): a table, not curves
        return is_summary_metric(name) or (self._job is not None and self._job.kind == JobKind.EVALUATE)

    def _redraw(self, names=None) -> None:
        self.no_data.layout.display = "none" if self.series else None
        everything = names is None  # the x axis changed: every curve is drawn again
        names = set(names or self.series)
        curves = [n for n in self.series if not self._is_total(n)]
        added = [n for n in curves if n in names and n not in self.figures]
        for name in added:
            colour = HELD_OUT_COLOUR if is_held_out(name) else TRAIN_COLOUR
            self.figures[name], self.lines[name] = metric_figure(metric_label(name), self.x_axis.value, colour)
        # a held-out curve is drawn on its training twin's chart too (the gap between them is the point)
        pairs = [n for n in curves if is_held_out(n) and training_twin(n) in self.figures and n not in self.overlays
                 and n not in EVAL_BOOKKEEPING]
        for name in pairs:
            figure = self.figures[training_twin(name)]
            scales = figure.marks[0].scales
            self.overlays[name] = bq.Lines(x=[], y=[], scales=scales, colors=[HELD_OUT_COLOUR],
                                           labels=[metric_label(name)], display_legend=False, line_style="dashed",
                                           marker="circle", marker_size=16)
            figure.marks = [*figure.marks, self.overlays[name]]
            names.add(name)
        if added:  # one children update per poll: views of a box are created once, not raced
            ordered = sorted(metric_order(self.figures), key=lambda n: n in EVAL_BOOKKEEPING)
            self.charts.children = tuple(self.figures[n] for n in ordered if not is_held_out(n))
            self.held_out_charts.children = tuple(self.figures[n] for n in ordered if is_held_out(n))
            held = bool(self.held_out_charts.children)
            self.charts_title.layout.display = None if held and self.charts.children else "none"
            self.held_out_title.layout.display = None if held else "none"
        self.legend.layout.display = None if self.overlays else "none"
        totals = metric_order(n for n in self.series if self._is_total(n))
        if totals:
            title = "Scores" if self._job is not None and self._job.kind == JobKind.EVALUATE else \
                "At the end of training"
            self.totals.value = f"<h4>{title}</h4>" + html_table(
                ["metric", "value"], [[html.escape(metric_label(n)), f"{self.series[n]['value'][-1]:.6g}"]
                                      for n in totals])
        for name in curves:
            if name not in names and not everything:
                continue
            x, y = self._points(name)
            for line in (self.lines[name], self.overlays.get(name)):
                if line is None:
                    continue
                with line.hold_sync():
                    line.x, line.y = x, y
            self.figures[name].axes[0].label = self.x_axis.value

    def _points(self, name: str) -> tuple[list, list]:
        """A curve's (x, y) by the chosen axis, decimated for the browser."""
        series = self.series[name]
        xs = series[self.x_axis.value]
        pairs = [(x, y) for x, y in zip(xs, series["value"]) if x == x]  # epoch may be missing (nan)
        return decimate([p[0] for p in pairs], [p[1] for p in pairs], MAX_POINTS)

    # --- the log ---------------------------------------------------------------------------

    def _read_log(self, job) -> tuple[dict[Path, int], list[str]]:
        """The lines the stage logs gained since the last read, and the offsets to read on from;
        at most LOG_READ_BYTES of each log per read (a note line says what was left out)."""
        offsets, lines = {}, []
        if not job.run_dir:  # queued: no run folder yet (and never the kernel's working folder)
            return offsets, lines
        for log in sorted(Path(job.run_dir).glob("*.log")):
            if log.name == "runner.log":
                continue
            offsets[log], new = read_log_lines(log, self._log_offsets.get(log, 0), job.id)
            lines.extend(new)
        return offsets, lines

    def _wanted(self, entry: tuple[str, str, str]) -> bool:
        kind, level, _text = entry
        if kind == "cut":  # what was left out shows under every filter
            return True
        if kind == "noise" and not self.show_noise.value:
            return False
        wanted = self.level.value
        return wanted == "all" or level == wanted or (wanted == "WARNING" and level == "ERROR")

    @staticmethod
    def _chunk(entries) -> w.HTML:
        def one(entry):
            kind, level, text = entry
            css = {"noise": "deepe-noise", "cut": "deepe-log-cut"}.get(kind) or \
                {"ERROR": "deepe-error", "WARNING": "deepe-warning"}.get(level, "")
            return f"<span class='{css}'>{html.escape(text)}</span>" if css else html.escape(text)
        return w.HTML("<pre class='deepe-log'>" + "\n".join(one(e) for e in entries) + "</pre>")

    def _add_log_lines(self, lines: list[str]) -> None:
        entries = []
        for text in lines:
            if isinstance(text, LeftOut):
                entries.append(("cut", "INFO", text))
                continue
            if not text.strip():
                continue  # blank lines only spread the log out
            kind, level = classify(text, self._after_noise)
            self._after_noise = kind == "noise"
            entries.append((kind, level, text))
        self._log_entries = (self._log_entries + entries)[-LOG_KEEP:]
        shown = [e for e in entries if self._wanted(e)]
        if len(self.log_lines.children) >= LOG_CHUNKS:
            self._rebuild_log()
        elif shown:  # appended, never replaced: the page keeps its scroll position (or the tail)
            self.log_lines.children = (*self.log_lines.children, self._chunk(shown))
            self._render_log_state()
        else:
            self._render_log_state()

    def _rebuild_log(self) -> None:
        shown = [e for e in self._log_entries if self._wanted(e)][-LOG_SHOWN:]
        old = self.log_lines.children
        self.log_lines.children = (self._chunk(shown),) if shown else ()
        for chunk in old:
            chunk.close()
        self._render_log_state()

    def _render_log_state(self) -> None:
        """Says why the log is empty, and how many lines the filters hide."""
        shown = sum(1 for e in self._log_entries if self._wanted(e))
        hidden_noise = sum(1 for e in self._log_entries if e[0] == "noise") if not self.show_noise.value else 0
        self.log_note.value = (f"<span style='color:#57606a'>{hidden_noise} library and kernel line"
                               f"{'s' if hidden_noise != 1 else ''} hidden</span>") if hidden_noise else ""
        if shown:
            self.log_empty.value, self.log_view.layout.display = "", None
            return
        self.log_view.layout.display = "none"
        if not self._log_entries:
            job = self._job
            text = ("No log yet: it starts when a worker takes the job." if job is None or
                    job.status == JobStatus.QUEUED else "No log lines yet.")
        else:
            level = {"all": "lines", "INFO": "info lines", "WARNING": "warnings or errors",
                     "ERROR": "errors"}[self.level.value]
            text = f"No {level} in this log" + ("" if self.show_noise.value else
                                                " (library and kernel messages are hidden)") + "."
        self.log_empty.value = f"<i class='deepe-log-empty'>{html.escape(text)}</i>"
