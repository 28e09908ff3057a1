"""Compare: the evaluation scores of the models the runs made and their answers to the same held-out
prompts side by side, then configuration differences, overlaid curves per shared metric, final and best
values.

Runs are named by their training names everywhere, with one legend above the charts (never over a
curve); "best" follows each metric's direction: lowest loss, highest reward or accuracy, and none
for what is no quality (learning rate, tokens seen)."""

from __future__ import annotations

import html

import bqplot as bq
import ipywidgets as w

from .. import compare, evaluations, jobs, methods, metrics
from .. import params as paramlib
from ..errors import DeepeError
from ..store import JobStatus
from .charts import MAX_POINTS, decimate
from .common import close_tree, stylesheet
from .detail import y_axis
from .evaluation_view import CSS as EVALUATION_CSS
from .evaluation_view import DEFAULT_ROW_SCORE, ROW_SCORE_WORDS, ROWS_PER_PAGE, cell_text, score_names, score_text
from .labels import metric_label, metric_order, param_label, show_value
from .tables import html_table

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#57606a"]
PREDICTION_SORTS = (("largest difference first", "spread"), ("prompt, A to Z", "prompt"), ("as evaluated", "order"))


# said in place of the charts, so "Curves" never heads an empty space
NO_CURVES = ("<i style='color:#57606a'>No curves to overlay: fewer than two of these trainings logged a metric "
             "step by step (a failed or cancelled one may have stopped before its first).</i>")


class TrainingCompare(w.VBox):
    """Two or more trainings side by side."""

    def __init__(self, job_ids: list[int]):
        self.report = compare.compare_jobs(job_ids)
        self.ids = [str(i) for i in self.report["ids"]]
        self.jobs = {str(j): jobs.get_job(j) for j in self.report["ids"]}
        self.names = {i: self._run_name(i) for i in self.ids}
        self.colours = {i: PALETTE[n % len(PALETTE)] for n, i in enumerate(self.ids)}
        self.directions = metrics.declared_directions(self.report["ids"])
        self.points = metrics.metric_series(self.report["ids"])  # one read, shared by every chart
        self.show_all = w.Checkbox(description="show all parameters (not only differences)", indent=False)
        self.config = w.HTML()
        self.show_all.observe(lambda _c: self._render_config(), "value")
        self.figures = [self._figure(name) for name in self._shared_metrics()]
        self.legend = w.HTML(self._legend(), layout=w.Layout(display=None if self.figures else "none"))
        self.summary = w.HTML(self._summary())
        self.evaluated = compare.compare_evaluations(self.report["ids"])
        self.joined = compare.compare_predictions(self.evaluated)
        self.scores = w.HTML(self._scores())
        self.prediction_sort = w.Dropdown(options=PREDICTION_SORTS, value="spread", description="Sort",
                                          layout=w.Layout(width="300px"))
        self.prediction_sort.observe(lambda _c: self._render_predictions(reset=True), "value")
        self.predictions = w.HTML()
        self.predictions.add_class("deepe-predictions-box")
        self.more = w.Button(description="Show more rows", icon="angle-down", layout=w.Layout(width="170px"))
        self.more.on_click(lambda _b: self._render_predictions(more=True))
        self.predictions_note = w.HTML()
        self._limit = ROWS_PER_PAGE
        self.predictions_area = w.Accordion(children=[w.VBox([self.prediction_sort, self.predictions_note,
                                                              self.predictions, self.more])],
                                            titles=("Predictions on the same prompts",))
        self.predictions_area.selected_index = 0
        self._render_predictions(reset=True)
        super().__init__([stylesheet(), w.HTML(f"<style>{EVALUATION_CSS}</style>", layout=w.Layout(display="none")),
                          w.HTML(f"<h3>Compare {html.escape(', '.join(self.names.values()))}</h3>"
                                 "<b>Evaluation</b>"), self.scores, self.predictions_area,
                          w.HTML("<b>Configuration</b>"), self.show_all, self.config,
                          w.HTML("<b>Curves</b>"), self.legend,
                          w.Box(self.figures or [w.HTML(NO_CURVES)], layout=w.Layout(flex_flow="row wrap")),
                          w.HTML("<b>Final and best values</b>"), self.summary])
        self._render_config()

    def close(self) -> None:
        """Close every widget of the view: figures, their marks, scales and axes too."""
        close_tree(self)

    def _run_name(self, job_id: str) -> str:
        """"train3" — or "train3 (job 3)" when two runs share a name."""
        job = self.jobs[job_id]
        same = [j for j in self.jobs.values() if j.name == job.name]
        return f"{job.name} (job {job.id})" if len(same) > 1 else job.name

    def _shared_metrics(self) -> list[str]:
        # a curve needs points: end-of-training totals (one value per job) stay in the table only
        return metric_order(name for name, per_job in self.report["metrics"].items()
                            if sum(1 for i in self.ids if per_job.get(i, {}).get("points", 0) > 1) >= 2)

    def _render_config(self) -> None:
        if self.show_all.value:
            config = self.report["config"]
            keys = sorted({k for c in config.values() for k in c}, key=param_label)
            rows = [[html.escape(param_label(k))] + [html.escape(self._value(i, k, config[i].get(k, "(default)")))
                                                     for i in self.ids] for k in keys]
        else:
            rows = [[html.escape(param_label(k))] + [html.escape(self._value(i, k, v.get(i, "-"))) for i in self.ids]
                    for k, v in sorted(self.report["differences"].items(), key=lambda kv: param_label(kv[0]))]
            rows = rows or [["(the same configuration)"] + [""] * len(self.ids)]
        self.config.value = html_table(["parameter"] + [self.names[i] for i in self.ids], rows)

    def _value(self, job_id: str, key: str, value) -> str:
        """A parameter as the run had it: a default says its value ("0.0002 (default)"), not only that it was one."""
        if value != "(default)":
            return show_value(value)
        try:
            defaults = methods.get_method(self.jobs[job_id].method).default_params
        except DeepeError:  # the method was deleted since: its default is not known any more
            return "(default)"
        if key not in defaults:
            return "(default)"
        return f"{show_value(paramlib.default_value(defaults[key]))} (default)"

    def _legend(self) -> str:
        items = "".join(f"<span><span style='color:{self.colours[i]};font-weight:700'>━━</span> "
                        f"{html.escape(self.names[i])}</span>" for i in self.ids)
        return f"<div class='deepe-legend'>{items}</div>"

    def _figure(self, name: str) -> bq.Figure:
        x, y = bq.LinearScale(), bq.LinearScale()
        marks = []
        for job_id in self.ids:
            xs, ys = decimate(*self.points[int(job_id)].get(name, ([], [])), MAX_POINTS)
            marks.append(bq.Lines(x=xs, y=ys, scales={"x": x, "y": y}, colors=[self.colours[job_id]],
                                  labels=[self.names[job_id]], display_legend=False))
        return bq.Figure(marks=marks, title=metric_label(name),
                         axes=[bq.Axis(scale=x, label="step", grid_lines="dashed", side="bottom"),
                               y_axis(y, metric_label(name))],
                         layout=w.Layout(width="460px", height="300px"),
                         fig_margin={"top": 40, "bottom": 45, "left": 80, "right": 15}, animation_duration=0)

    def _summary(self) -> str:
        rows = []
        for name in metric_order(self.report["metrics"]):
            per_job = self.report["metrics"][name]
            direction = metrics.direction(name, self.directions)
            cells = []
            for i in self.ids:
                if i not in per_job:
                    cells.append("-")
                    continue
                final = f"{per_job[i]['final']:.5g}"
                if direction is None:
                    cells.append(final)
                    continue
                best = per_job[i]["best"]  # the database's, by the same direction: the CLI shows it too
                cells.append(f"{final} / {best:.5g}" if best is not None else final)
            word = {"min": "lowest", "max": "highest", None: "no best"}[direction]
            rows.append([f"{html.escape(metric_label(name))} <span style='color:#57606a'>({word})</span>"] + cells)
        return html_table(["metric (final / best)"] + [self.names[i] for i in self.ids], rows)

    # --- evaluation ------------------------------------------------------------------------

    def _not_scored(self, job_id: str) -> str:
        """Why a run has no generation-suite scores, in a few words."""
        model = self.evaluated["models"].get(job_id)
        if model is None:
            return "made no model" if self.jobs[job_id].status == JobStatus.SUCCEEDED else "has no model yet"
        newest = next((r for r in evaluations.results(model) if r.get("suite") == self.evaluated["suite"]), None)
        if newest is None:
            return "was not evaluated (no held-out rows)"
        if newest["status"] in (JobStatus.QUEUED, JobStatus.RUNNING):
            return f"is being evaluated (job {newest['job_id']}, {newest['status']}): Compare again when it finishes"
        return f"has no successful evaluation (job {newest['job_id']} {newest['status']})"

    def _scores(self) -> str:
        """The runs' evaluation scores, best of each metric marked by its direction."""
        found = self.evaluated["metrics"]
        missing = [i for i in self.ids if self.evaluated["results"].get(i) is None]
        notes = "".join(f"<div style='color:#57606a;font-style:italic'>{html.escape(self.names[i])} "
                        f"{html.escape(self._not_scored(i))}.</div>" for i in missing)
        if not found:
            return notes or "<i>No evaluation scores.</i>"
        rows = []
        base = self.evaluated.get("base") or None
        base_metrics = (base or {}).get("metrics") or {}
        for name in score_names(n for n in found if not n.endswith("_stderr")):
            direction = metrics.direction(name, self.directions)
            values = {i: v for i, v in found[name].items() if v is not None}
            best = None
            if direction and len(values) > 1 and len(set(values.values())) > 1:
                best = (max if direction == "max" else min)(values.values())
            cells = []
            for i in self.ids:
                if i not in values:
                    cells.append("-")
                    continue
                text = score_text(values[i])
                cells.append(f"<b style='color:#1a7f37'>{text} ★</b>" if best is not None and values[i] == best
                             else text)
            word = {"min": "lower is better", "max": "higher is better", None: ""}[direction]
            base_cell = [f"<span style='color:#57606a'>{score_text(base_metrics.get(name))}</span>"] if base else []
            rows.append([f"{html.escape(metric_label(name))}"
                         + (f" <span style='color:#57606a'>({word})</span>" if word else "")] + cells + base_cell)
        datasets = {str((r or {}).get("dataset") or "held-out rows") for r in self.evaluated["results"].values() if r}
        where = (f"<div style='color:#57606a'>{html.escape(self.evaluated['suite'])} suite on "
                 f"{html.escape(', '.join(sorted(datasets)))}; ★ the best run</div>")
        heads = ["metric"] + [self.names[i] for i in self.ids] + (
            [f"base model {base['model']} (before training)"] if base else [])
        return where + html_table(heads, rows) + notes

    def prediction_rows(self) -> list[dict]:
        """The joined predictions in the chosen order."""
        rows = [dict(row, index=n + 1) for n, row in enumerate(self.joined["rows"])]

        def spread(row):
            scores = [a["score"] for a in row["answers"].values() if a.get("score") is not None]
            return max(scores) - min(scores) if scores else 0.0

        if self.prediction_sort.value == "spread":
            rows.sort(key=lambda r: -spread(r))
        elif self.prediction_sort.value == "prompt":
            rows.sort(key=lambda r: str(r["prompt"]).casefold())
        return rows

    def _render_predictions(self, reset: bool = False, more: bool = False) -> None:
        self._limit = ROWS_PER_PAGE if reset else self._limit + (ROWS_PER_PAGE if more else 0)
        ids = self.joined["ids"]
        if len(ids) < 2:
            self.predictions_area.layout.display = "none"
            return
        rows = self.prediction_rows()
        shown = rows[:self._limit]
        head = ["#", "prompt", "reference"] + [self.names[i] for i in ids]
        body = []
        for row in shown:
            scores = {i: row["answers"][i].get("score") for i in ids}
            known = [v for v in scores.values() if v is not None]
            lower = any(a.get("lower_is_better") for a in row["answers"].values())  # a loss: the least is best
            top = (min(known) if lower else max(known)) if known and len(set(known)) > 1 else None
            cells = [str(row["index"]), cell_text(row["prompt"]), cell_text(row["reference"])]
            for i in ids:
                score = scores[i]
                mark = " ★" if top is not None and score == top else ""
                cells.append(cell_text(row["answers"][i].get("answer"))
                             + f"<div style='color:#57606a'>score {score_text(score)}{mark}</div>")
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        cols = "<col style='width:34px'><col style='width:20%'><col style='width:15%'>" + "<col>" * len(ids)
        heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        self.predictions.value = (f"<table class='deepe-predictions'><colgroup>{cols}</colgroup><thead><tr>{heads}"
                                  f"</tr></thead><tbody>{''.join(body)}</tbody></table>")
        left_out = self.joined["only_some"]
        self.predictions_note.value = (
            f"<span style='color:#57606a'>{len(rows)} prompt{'s' if len(rows) != 1 else ''} every run answered "
            f"(joined on the prompt; score: "
            f"{ROW_SCORE_WORDS.get(self.evaluated['suite'], DEFAULT_ROW_SCORE)}, ★ the best); showing {len(shown)}"
            + (f"; {left_out} prompt{'s' if left_out != 1 else ''} only some runs answered left out" if left_out
               else "") + ".</span>")
        self.more.layout.display = None if len(rows) > len(shown) else "none"
