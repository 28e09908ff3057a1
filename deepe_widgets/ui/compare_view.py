"""Compare: configuration differences, overlaid curves per shared metric, final and best values.

Runs are named by their training names everywhere, with one legend above the charts (never over a
curve); "best" follows each metric's direction: lowest loss, highest reward or accuracy, and none
for what is no quality (learning rate, tokens seen)."""

from __future__ import annotations

import html

import bqplot as bq
import ipywidgets as w

from .. import compare, jobs, metrics
from .common import MAX_POINTS, close_tree, decimate, html_table, stylesheet
from .detail import y_axis
from .labels import metric_label, metric_order, param_label, show_value

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#57606a"]


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
        self.legend = w.HTML(self._legend())
        self.summary = w.HTML(self._summary())
        super().__init__([stylesheet(), w.HTML(f"<h3>Compare {html.escape(', '.join(self.names.values()))}</h3>"
                                               "<b>Configuration</b>"), self.show_all, self.config,
                          w.HTML("<b>Curves</b>"), self.legend,
                          w.Box(self.figures, layout=w.Layout(flex_flow="row wrap")),
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
            rows = [[html.escape(param_label(k))] + [html.escape(show_value(config[i].get(k, "(default)")))
                                                     for i in self.ids] for k in keys]
        else:
            rows = [[html.escape(param_label(k))] + [html.escape(show_value(v.get(i, "-"))) for i in self.ids]
                    for k, v in sorted(self.report["differences"].items(), key=lambda kv: param_label(kv[0]))]
            rows = rows or [["(the same configuration)"] + [""] * len(self.ids)]
        self.config.value = html_table(["parameter"] + [self.names[i] for i in self.ids], rows)

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
