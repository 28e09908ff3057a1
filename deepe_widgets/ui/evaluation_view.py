"""The Evaluation section: how a tuned model scores beside its base model on the same held-out
prompts (`evaluations.side_by_side`), the predictions table, the state of the evaluate jobs and
their records. The training detail (Evaluation Data) and the model card show it.

Reads are blocking and touch no widget (`read`), widget updates happen on the loop (`show`), so a
view's poller can keep it current while the evaluate jobs run.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import ipywidgets as w

from .. import evaluations, jobs, methods, metrics, models, trainings
from ..errors import DeepeError
from ..images import thumbnail_png
from ..paths import is_allowed
from ..store import FINISHED, JobKind, JobStatus, ModelKind
from .labels import metric_label, metric_order
from .record import RecordView

PENDING = (JobStatus.QUEUED, JobStatus.RUNNING)


def suite_label(suite: str) -> str:
    """`generation: answers to held-out prompts, …` (evaluations.SUITE_WORDS)."""
    return f"{suite}: {evaluations.SUITE_WORDS[suite]}" if suite in evaluations.SUITE_WORDS else suite
# what a predictions row's score is (`evaluations.side_by_side` takes the first of evaluations.ROW_SCORES)
ROW_SCORE_WORDS = {"retrieval": "the reciprocal rank of the query's own passage",
                   "images": "the denoising loss of each held-out image at fixed noise, lower is better"}
DEFAULT_ROW_SCORE = "ROUGE-L of each answer against the reference"
SORTS = (("tuned worse first", "worse"), ("largest gain first", "gain"), ("tuned score, lowest first", "low"),
         ("tuned score, highest first", "high"), ("prompt, A to Z", "prompt"), ("as evaluated", "order"))
ROWS_PER_PAGE = 50
AFTER_TRAINING_GRACE = 15.0  # seconds a succeeded training's evaluate jobs may take to be queued
CELL_CHARS = 1200  # of one prompt or answer drawn in the table (the record has them whole)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
THUMBNAIL = 160  # pixels a side of an image drawn in the table
# the per-row score first, then the suite's other scores; what is no quality (length) last
SCORE_ORDER = ("eval_rougeL", "eval_chrf", "eval_bleu", "eval_exact_match", "judge_win_rate", "judge_tie_rate",
               "judge_loss_rate")
LAST_SCORES = ("eval_answer_length",)

CSS = """
.deepe-eval-scores td.deepe-better {color:#1a7f37;font-weight:600}
.deepe-eval-scores td.deepe-worse {color:#cf222e;font-weight:600}
.deepe-eval-scores td.deepe-same {color:#57606a}
.deepe-eval-scores tr.deepe-suite-row td {background:#f6f8fa;font-weight:600;border-top:1px solid #d0d7de}
.deepe-predictions {border-collapse:collapse;width:100%;table-layout:fixed}
.deepe-predictions th {text-align:left;padding:4px 6px;border-bottom:1px solid #d0d7de;font-weight:600;
  position:sticky;top:0;background:#fff}
.deepe-predictions td {padding:4px 6px;border-bottom:1px solid #eee;vertical-align:top}
.deepe-predictions td .deepe-text {white-space:pre-wrap;word-break:break-word;max-height:9em;overflow:auto;
  line-height:1.35}
.deepe-predictions tr.deepe-worse-row td {background:#fff1f0}
.deepe-predictions tr.deepe-worse-row td:first-child {box-shadow:inset 4px 0 #cf222e}
.deepe-predictions .deepe-mark-worse {color:#cf222e;font-weight:600;white-space:nowrap}
.deepe-predictions .deepe-mark-better {color:#1a7f37;white-space:nowrap}
.deepe-predictions .deepe-mark-same {color:#57606a;white-space:nowrap}
.deepe-eval-state {margin:4px 0}
.deepe-eval-state .widget-html-content {line-height:1.4}
.deepe-predictions-box {max-height:560px;overflow:auto;border:1px solid #d0d7de}
"""


def score_text(value, sign: bool = False) -> str:
    """A score as people read it: 0.4123 (a rate, to 4 places), 12.3 (answer length), "-" when missing."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    plus = "+" if sign else ""
    text = f"{number:{plus}.4f}" if abs(number) <= 1 else f"{number:{plus}.4g}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def score_names(names) -> list[str]:
    """A suite's metrics in reading order: the per-row score (ROUGE-L) first, answer length last."""
    names = list(names)
    first = [n for n in SCORE_ORDER if n in names]
    last = [n for n in LAST_SCORES if n in names]
    return first + metric_order(n for n in names if n not in first and n not in last) + last


def change_words(name: str, base, tuned, declared: dict | None = None) -> tuple[str, str]:
    """("+0.031 better", css class) for a tuned score beside the base's, by the metric's direction
    (`metrics.direction`); a metric with no direction gets the change without a verdict."""
    if base is None or tuned is None:
        return "", ""
    delta = float(tuned) - float(base)
    text = score_text(delta, sign=True)
    way = metrics.direction(name, declared)
    if abs(delta) < 1e-12:
        return "= same", "deepe-same"
    if way is None:
        return text, ""
    better = delta > 0 if way == "max" else delta < 0
    return (f"{text} ▲ better", "deepe-better") if better else (f"{text} ▼ worse", "deepe-worse")


def sort_rows(rows: list[dict], how: str) -> list[dict]:
    """The predictions rows in the order the sort chooser names (a new list)."""
    def score(row, key):
        value = row.get(key)
        return float(value) if value is not None else float("nan")

    def gain(row):  # by the score's direction (evaluations.gain): positive is better
        change = row.get("gain")
        return float(change) if change is not None else 0.0

    if how == "worse":  # the rows the tuned model lost, the largest loss first
        return sorted(rows, key=lambda r: (not r.get("worse"), gain(r)))
    if how == "gain":
        return sorted(rows, key=lambda r: -gain(r))
    if how == "low":
        return sorted(rows, key=lambda r: (r.get("tuned_score") is None, score(r, "tuned_score")))
    if how == "high":
        return sorted(rows, key=lambda r: (r.get("tuned_score") is None, -score(r, "tuned_score")))
    if how == "prompt":
        return sorted(rows, key=lambda r: str(r.get("prompt", "")).casefold())
    return list(rows)


def cell_text(text) -> str:
    """A prompt or an answer for a table cell: escaped, its newlines kept, cut at CELL_CHARS; an
    image file (an image-generation answer or reference) as a thumbnail."""
    text = "" if text is None else str(text)
    if text.lower().endswith(IMAGE_SUFFIXES) and "\n" not in text:
        png = thumbnail_png(Path(text), THUMBNAIL) if is_allowed(Path(text)) else None
        if png is not None:
            return (f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}' "
                    f"title='{html.escape(Path(text).name, quote=True)}' style='width:100%;max-width:{THUMBNAIL}px'>")
    if len(text) > CELL_CHARS:
        text = text[:CELL_CHARS] + f" … ({len(text) - CELL_CHARS} more characters in the record)"
    return f"<div class='deepe-text'>{html.escape(text)}</div>" if text else "<i style='color:#8c959f'>(empty)</i>"


def predictions_html(rows: list[dict], *, tuned_title: str = "tuned answer", base_title: str = "base answer",
                     limit: int = ROWS_PER_PAGE, has_base: bool = True) -> str:
    """The predictions table: prompt, reference, base answer, tuned answer, the two scores and a mark
    (rows where the tuned model does worse than the base are tinted and marked)."""
    verdicts = any(r.get("verdict") for r in rows)
    head = ["#", "prompt", "reference", base_title, tuned_title, "base", "tuned", ""] + (
        ["judge"] if verdicts else [])
    widths = ["34px", "19%", "15%", "", "", "56px", "56px", "86px"] + (["16%"] if verdicts else [])
    cols = "".join(f"<col style='width:{w}'>" if w else "<col>" for w in widths)
    body = []
    for row in rows[:limit]:
        worse = bool(row.get("worse"))
        tuned, base, change = row.get("tuned_score"), row.get("base_score"), row.get("gain")
        if worse:
            mark = "<span class='deepe-mark-worse'>▼ worse</span>"
        elif change is not None and change > 0:
            mark = "<span class='deepe-mark-better'>▲ better</span>"
        elif change is not None:
            mark = "<span class='deepe-mark-same'>= same</span>"
        else:
            mark = ""
        cells = [str(row.get("index", "")), cell_text(row.get("prompt")), cell_text(row.get("reference")),
                 cell_text(row.get("base_answer")) if has_base or row.get("base_answer")
                 else "<i style='color:#8c959f'>(the base model was not evaluated on these rows)</i>",
                 cell_text(row.get("tuned_answer")), score_text(base), score_text(tuned), mark]
        if verdicts:
            verdict = row.get("verdict") or ""
            cells.append(f"<b>{html.escape(str(verdict))}</b>"
                         + (f"<div class='deepe-text'>{html.escape(str(row.get('reason') or ''))}</div>"))
        css = " class='deepe-worse-row'" if worse else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return (f"<table class='deepe-predictions'><colgroup>{cols}</colgroup><thead><tr>{heads}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _newest_per_suite(results: list[dict]) -> dict[str, dict]:
    """suite -> the newest evaluate job of that suite (results come newest first)."""
    out: dict[str, dict] = {}
    for result in results:
        out.setdefault(result.get("suite") or "generation", result)
    return out


def _short_sha(sha) -> str:
    return str(sha)[:12] if sha else "-"


class EvaluationSection(w.VBox):
    """The Evaluation of one model against its base model: a state line, the scores side by side,
    the predictions table (sortable, worse rows marked) and the evaluation records.

    `job_id`: a training (its model is the tuned one; before it exists, the state says what comes);
    or `model`: a model's name (the card). `on_job(job_id)` opens an evaluate job's details."""

    def __init__(self, job_id: int | None = None, model: str | None = None, on_job=None,
                 predictions_open: bool = True):
        self.job_id, self.model, self.on_job = job_id, model, on_job
        self.title = w.HTML("<h4 style='margin:12px 0 2px'>Evaluation <span style='color:#57606a;"
                            "font-weight:normal'>(the tuned model and its base model on the same held-out "
                            "prompts)</span></h4>")
        self.state = w.HTML()
        self.state.add_class("deepe-eval-state")
        self.scores = w.HTML()
        self.suite = w.Dropdown(description="Suite", layout=w.Layout(width="260px", display="none"))
        self.sort = w.Dropdown(options=SORTS, value="worse", description="Sort", layout=w.Layout(width="300px"))
        self.only_worse = w.Checkbox(description="only rows where the tuned model is worse", indent=False,
                                     value=False, layout=w.Layout(width="auto"))
        self.rows_note = w.HTML()
        self.predictions = w.HTML()
        self.predictions.add_class("deepe-predictions-box")
        self.more = w.Button(description="Show more rows", icon="angle-down", layout=w.Layout(width="170px"))
        self.more.on_click(lambda _b: self._show_more())
        self.suite.observe(lambda _c: self._render_predictions(reset=True), "value")
        self.sort.observe(lambda _c: self._render_predictions(reset=True), "value")
        self.only_worse.observe(lambda _c: self._render_predictions(reset=True), "value")
        self.record_choice = w.Dropdown(description="Record", layout=w.Layout(width="420px"))
        self.record_button = w.Button(description="Show the evaluation record", icon="book",
                                      tooltip="the executed evaluation notebook: the record of how the scores "
                                              "were made", layout=w.Layout(width="230px"))
        self.record_button.on_click(lambda _b: self.open_record())
        self.job_button = w.Button(description="View the evaluate job", icon="search", layout=w.Layout(
            width="200px", display=None if on_job else "none"))
        self.job_button.on_click(lambda _b: self.on_job and self.record_choice.value and self.on_job(
            self._record_jobs.get(self.record_choice.value)))
        self.record_choice.observe(lambda _c: self.record.layout.display != "none" and self.open_record(), "value")
        self.record = RecordView(download_prefix="evaluation-")
        self.record.layout.display = "none"
        self.record_row = w.HBox([self.record_choice, self.record_button, self.job_button],
                                 layout=w.Layout(align_items="center", display="none"))
        self.table_box = w.VBox([w.HBox([self.suite, self.sort, self.only_worse],
                                        layout=w.Layout(align_items="center")),
                                 self.rows_note, self.predictions, self.more])
        self.table_box.layout.display = "none"
        self.predictions_area = w.Accordion(children=[self.table_box], titles=("Predictions",))
        self.predictions_area.selected_index = 0 if predictions_open else None
        self.predictions_area.layout.display = "none"
        self._signature = None
        self._sides: dict[str, dict] = {}
        self._record_jobs: dict[str, int] = {}
        self._limit = ROWS_PER_PAGE
        self.settled = False
        self.last_read: dict | None = None
        super().__init__([w.HTML(f"<style>{CSS}</style>", layout=w.Layout(display="none")),
                          self.title, self.state, self.scores, self.predictions_area, self.record_row, self.record])
        self.add_class("deepe-evaluation")

    # --- reading (blocking, no widget touched) -------------------------------------------------

    def _tuned_model(self, job) -> str | None:
        if self.model:
            return self.model
        if job is None:
            return None
        if job.kind == JobKind.EVALUATE:
            return job.base_model
        made = [m for m in models.models_of_job(job.id) if m.kind != ModelKind.LIVE]
        return made[0].name if made else None

    def read(self, job=None) -> dict:
        """The evaluate jobs of the tuned model and of its base model, and (when they changed since the
        last read) the side-by-side tables of each suite. Blocking: a poller calls it in a thread."""
        if job is None and self.job_id is not None:
            job = jobs.get_job(self.job_id)
        model = self._tuned_model(job)
        read = {"job": job, "model": model, "base": None, "tuned_results": [], "base_results": [], "sides": None,
                "when": time.time()}
        if model is None:
            return read
        try:
            base = evaluations.base_of(model)
        except DeepeError:  # the model's base was deleted since: its own scores are all there is
            base = None
        read["base"] = base if base and base != model else None
        read["tuned_results"] = evaluations.results(model)
        read["base_results"] = evaluations.results(base) if read["base"] else []
        everything = read["tuned_results"] + read["base_results"]
        signature = tuple((r["job_id"], r["status"]) for r in everything)
        if signature != self._signature:
            suites = [s for s in evaluations.SUITES if any(r.get("suite") == s for r in everything)]
            read["sides"] = {suite: evaluations.side_by_side(model, suite=suite) for suite in suites}
            read["signature"] = signature
        return read

    # --- showing (on the loop) -------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read and show; True once no evaluation of this model is queued or running."""
        return self.show(self.read())

    def show(self, read: dict) -> bool:
        """Show what `read` found; True once nothing more is expected (no evaluate job queued or running,
        and a training that just succeeded had its time to queue them)."""
        self.last_read = read
        if read.get("sides") is not None:
            self._signature = read["signature"]
            self._sides = read["sides"]
            self._render_scores(read)
            self._render_suites()
            self._render_predictions(reset=False)
            self._render_records(read)
        self.settled = self._render_state(read)
        return self.settled

    def _render_state(self, read: dict) -> bool:
        job, model = read["job"], read["model"]
        tuned, base = read["tuned_results"], read["base_results"]
        pending = [r for r in tuned + base if r["status"] in PENDING]
        if model is None:
            return self._state_without_model(job)
        if pending:
            parts = []
            for result in pending:
                who = "the tuned model" if result in tuned else "the base model"
                parts.append(f"{who} ({html.escape(result.get('suite') or '')} suite, job {result['job_id']}): "
                             f"{'running' if result['status'] == JobStatus.RUNNING else 'queued'}")
            earlier = " (the scores below are the newest finished ones)" if any(
                side.get("tuned") for side in self._sides.values()) else ""
            self._state("info", "Evaluating… " + "; ".join(parts) + ". The scores appear here when it finishes"
                        + earlier + ".")
            return False
        if not tuned:
            if job is not None and job.kind == JobKind.TRAIN:
                finished = job.finished_at or 0
                if read["when"] - finished < AFTER_TRAINING_GRACE:
                    self._state("info", "The training succeeded: its evaluation is being queued…")
                    return False
                if self._held_out_fraction(job) == 0:
                    self._state("none", "No held-out rows (EVAL_FRACTION is 0): this training was not evaluated. "
                                        "Evaluate its model from <b>Models</b> on any dataset.")
                else:
                    self._state("none", "No held-out rows: this training was not evaluated. Evaluate its model "
                                        "from <b>Models</b> on any dataset.")
            else:
                self._state("none", "Not evaluated yet: <b>Evaluate</b> runs a suite on it.")
            return True
        failed = [r for r in _newest_per_suite(tuned).values() if r["status"] == JobStatus.FAILED]
        failed += [r for r in _newest_per_suite(base).values() if r["status"] == JobStatus.FAILED]
        words = []
        for suite, side in self._sides.items():
            result, beside = side.get("tuned"), side.get("base")
            if not result:
                continue
            rows = f"{result['rows']} rows of " if result.get("rows") else ""
            base_words = f", base model job {beside['job_id']}" if beside else ", the base model not evaluated"
            words.append(f"{html.escape(suite)} suite on {rows}<b>{html.escape(str(result.get('dataset') or '-'))}"
                         f"</b> (dataset sha256 <code>{_short_sha(result.get('dataset_sha256'))}</code>): "
                         f"tuned model job {result['job_id']}{base_words if read['base'] else ''}")
        text = ("Evaluated: " + "; ".join(words) + ".") if words else ""
        if failed:
            fails = "; ".join(f"{'tuned' if r in tuned else 'base'} model, {html.escape(r.get('suite') or '')} "
                              f"suite, job {r['job_id']}: {html.escape(str(r.get('error') or r['status']))}"
                              for r in failed)
            self._state("error", (text + " " if text else "") + f"An evaluation failed ({fails}).")
        elif text:
            self._state("ok", text)
        else:
            self._state("none", "No evaluation of this model succeeded (cancelled).")
        return True

    def _state_without_model(self, job) -> bool:
        if job is None:
            self._state("none", "Not evaluated.")
            return True
        if job.status in FINISHED and job.status != JobStatus.SUCCEEDED:
            self._state("none", "The training did not succeed: there is no model to evaluate.")
            return True
        if job.status == JobStatus.SUCCEEDED:
            self._state("none", "This job made no model to evaluate.")
            return True
        if self._held_out_fraction(job) == 0:
            self._state("none", "EVAL_FRACTION is 0: this training holds no rows out and will not be evaluated.")
        else:
            self._state("info", "When the training succeeds, its model and its base model answer the held-out "
                                "prompts (the rows it never trains on) and are scored side by side here.")
        return job.status in FINISHED

    @staticmethod
    def _held_out_fraction(job) -> float | None:
        value = (job.params or {}).get("EVAL_FRACTION")
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    def _state(self, kind: str, markup: str) -> None:
        colour = {"info": "#57606a", "ok": "#1a7f37", "error": "#cf222e", "none": "#57606a"}[kind]
        style = "font-style:italic;" if kind in ("info", "none") else ""
        self.state.value = f"<div class='deepe-eval-state-{kind}' style='color:{colour};{style}'>{markup}</div>"

    def _declared(self, model: str | None) -> dict:
        """The metric directions the tuned model's method declares (its training type's and notebook's)."""
        try:
            record = models.get_model(model) if model else None
            method = record.method if record is not None else None
            return trainings.metric_directions(methods.get_method(method)) if method else {}
        except DeepeError:
            return {}

    def _render_scores(self, read: dict) -> None:
        model, base = read["model"], read["base"]
        declared = self._declared(model)
        rows = []
        for suite, side in self._sides.items():
            tuned, base_result = side.get("tuned"), side.get("base")
            if not tuned and not base_result:
                continue
            tuned_metrics = (tuned or {}).get("metrics") or {}
            base_metrics = (base_result or {}).get("metrics") or {}
            source = tuned or base_result
            where = (f"{html.escape(suite)} suite on {html.escape(str(source.get('dataset') or 'held-out rows'))}"
                     f" · dataset sha256 <code>{_short_sha(source.get('dataset_sha256'))}</code>")
            if tuned and base_result and tuned.get("row_key") != base_result.get("row_key"):
                # no evaluation of the base on these very rows: the nearest there is, said so
                where += (f" · <span style='color:#9a6700;font-weight:normal'>the base model's scores are from other "
                          f"rows ({html.escape(str(base_result.get('dataset') or '-'))}, job "
                          f"{base_result['job_id']})</span>")
            rows.append(f"<tr class='deepe-suite-row'><td colspan='4'>{where}</td></tr>")
            for name in score_names(set(tuned_metrics) | set(base_metrics)):
                if name.endswith("_stderr"):
                    continue  # shown beside its metric
                change, css = change_words(name, base_metrics.get(name), tuned_metrics.get(name), declared)
                cells = [html.escape(metric_label(name)), self._with_stderr(base_metrics, name),
                         self._with_stderr(tuned_metrics, name), change]
                rows.append("<tr>" + "".join(f"<td class='{css}'>{c}</td>" if i == 3 else f"<td>{c}</td>"
                                             for i, c in enumerate(cells)) + "</tr>")
        if not rows:
            self.scores.value = ""
            return
        base_name = html.escape(base or "(no base model)")
        heads = ["metric", f"base: {base_name}", f"tuned: {html.escape(model or '')}", "change"]
        if not base:
            heads[1] = "base"
        head = "".join(f"<th>{h}</th>" for h in heads)
        self.scores.value = (f"<table class='deepe-table deepe-eval-scores' style='margin:4px 0 8px'><thead><tr>"
                             f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    @staticmethod
    def _with_stderr(found: dict, name: str) -> str:
        if name not in found:
            return "-"
        stderr = found.get(f"{name}_stderr")
        return score_text(found[name]) + (f" ± {score_text(stderr)}" if stderr is not None else "")

    def _render_suites(self) -> None:
        with_rows = [s for s, side in self._sides.items() if side.get("rows")]
        options = [(suite_label(s), s) for s in with_rows]
        if list(self.suite.options) != options:
            keep = self.suite.value
            self.suite.options = options
            self.suite.value = keep if keep in with_rows else (with_rows[0] if with_rows else None)
        self.suite.layout.display = None if len(with_rows) > 1 else "none"

    def rows(self) -> list[dict]:
        """The predictions rows as shown: the chosen suite's, sorted and filtered as chosen."""
        side = self._sides.get(self.suite.value) or {}
        rows = [dict(row, index=i + 1) for i, row in enumerate(side.get("rows") or [])]
        if self.only_worse.value:
            rows = [r for r in rows if r.get("worse")]
        return sort_rows(rows, self.sort.value)

    def _show_more(self) -> None:
        self._limit += ROWS_PER_PAGE
        self._render_predictions(reset=False)

    def _render_predictions(self, reset: bool) -> None:
        if reset:
            self._limit = ROWS_PER_PAGE
        side = self._sides.get(self.suite.value) or {}
        every = side.get("rows") or []
        if not every:
            self.predictions_area.layout.display = "none"
            self.table_box.layout.display = "none"
            return
        self.predictions_area.layout.display = None
        self.table_box.layout.display = None
        rows = self.rows()
        worse = sum(1 for r in every if r.get("worse"))
        shown = min(len(rows), self._limit)
        self.predictions_area.set_title(0, f"Predictions: {len(every)} held-out prompts, the tuned model worse "
                                           f"on {worse}")
        self.rows_note.value = (f"<span style='color:#57606a'>Score: "
                                f"{ROW_SCORE_WORDS.get(self.suite.value, DEFAULT_ROW_SCORE)}. "
                                f"Showing {shown} of {len(rows)} row{'s' if len(rows) != 1 else ''}"
                                f"{' (only the worse ones)' if self.only_worse.value else ''}; rows where the "
                                f"tuned model does worse than the base are tinted red.</span>")
        tuned = (side.get("tuned") or {}).get("model") or (self.last_read or {}).get("model") or "tuned"
        base = (side.get("base") or {}).get("model") or "base"
        self.predictions.value = predictions_html(rows, tuned_title=f"tuned answer ({tuned})",
                                                  base_title=f"base answer ({base})", limit=self._limit,
                                                  has_base=side.get("base") is not None)
        self.more.layout.display = None if len(rows) > shown else "none"

    def _render_records(self, read: dict) -> None:
        options, self._record_jobs = [], {}
        for who, results in (("tuned model", read["tuned_results"]), ("base model", read["base_results"])):
            for result in results:
                if not result.get("record"):
                    continue
                label = (f"{who}, {result.get('suite')} suite, job {result['job_id']} "
                         f"({result['status']})")
                options.append((label, result["record"]))
                self._record_jobs[result["record"]] = result["job_id"]
        if list(self.record_choice.options) != options:
            keep = self.record_choice.value
            self.record_choice.options = options
            self.record_choice.value = keep if keep in self._record_jobs else (options[0][1] if options else None)
        self.record_row.layout.display = None if options else "none"

    def open_record(self) -> None:
        """Show the chosen evaluation record (the executed notebook) below, rendered off the loop."""
        path = self.record_choice.value
        if not path:
            return
        self.record.download_prefix = f"job{self._record_jobs.get(path, '')}-"
        self.record.set_paths([path])
        self.record.layout.display = None
        self.record.refresh()
