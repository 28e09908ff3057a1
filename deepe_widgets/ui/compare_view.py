"""Compare: configuration differences, overlaid curves per shared metric, final and best values."""

from __future__ import annotations

import html

import bqplot as bq
import ipywidgets as w

from .. import compare, metrics
from .common import MAX_POINTS, close_tree, decimate, html_table
from .detail import y_axis

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#57606a"]


class TrainingCompare(w.VBox):
    """Two or more trainings side by side."""

    def __init__(self, job_ids: list[int]):
        self.report = compare.compare_jobs(job_ids)
        self.points = metrics.metric_series(self.report["ids"])  # one read, shared by every chart
        self.show_all = w.Checkbox(description="show all parameters (not only differences)", indent=False)
        self.config = w.HTML()
        self.show_all.observe(lambda _c: self._render_config(), "value")
        self.figures = [self._figure(name) for name in self._shared_metrics()]
        self.summary = w.HTML(self._summary())
        ids = ", ".join(str(i) for i in self.report["ids"])
        super().__init__([w.HTML(f"<h3>Compare trainings {ids}</h3><b>Configuration</b>"), self.show_all,
                          self.config, w.HTML("<b>Curves</b>"),
                          w.Box(self.figures, layout=w.Layout(flex_flow="row wrap")),
                          w.HTML("<b>Final and best values</b>"), self.summary])
        self._render_config()

    def close(self) -> None:
        """Close every widget of the view: figures, their marks, scales and axes too."""
        close_tree(self)

    def _shared_metrics(self) -> list[str]:
        ids = [str(i) for i in self.report["ids"]]
        # a curve needs points: end-of-training totals (one value per job) stay in the table only
        return sorted(name for name, per_job in self.report["metrics"].items()
                      if sum(1 for i in ids if per_job.get(i, {}).get("points", 0) > 1) >= 2)

    def _render_config(self) -> None:
        ids = [str(i) for i in self.report["ids"]]
        if self.show_all.value:
            keys = sorted({k for c in self.report["config"].values() for k in c})
            rows = [[html.escape(k)] + [html.escape(repr(self.report["config"][i].get(k, "(default)"))) for i in ids]
                    for k in keys]
        else:
            rows = [[html.escape(k)] + [html.escape(repr(v.get(i, "-"))) for i in ids]
                    for k, v in sorted(self.report["differences"].items())] or [["(identical)"] + [""] * len(ids)]
        self.config.value = html_table(["parameter"] + [f"job {i}" for i in ids], rows)

    def _figure(self, name: str) -> bq.Figure:
        x, y = bq.LinearScale(), bq.LinearScale()
        marks = []
        for index, job_id in enumerate(self.report["ids"]):
            xs, ys = decimate(*self.points[job_id].get(name, ([], [])), MAX_POINTS)
            marks.append(bq.Lines(x=xs, y=ys, scales={"x": x, "y": y}, colors=[PALETTE[index % len(PALETTE)]],
                                  labels=[f"job {job_id}"], display_legend=True))
        return bq.Figure(marks=marks, title=name, legend_location="top-right",
                         axes=[bq.Axis(scale=x, label="step", grid_lines="dashed", side="bottom"),
                               y_axis(y, name)],
                         layout=w.Layout(width="460px", height="300px"),
                         fig_margin={"top": 40, "bottom": 45, "left": 80, "right": 15})

    def _summary(self) -> str:
        ids = [str(i) for i in self.report["ids"]]
        rows = []
        for name, per_job in sorted(self.report["metrics"].items()):
            cells = [f"{per_job[i]['final']:.5g} / {per_job[i]['best']:.5g}" if i in per_job else "-" for i in ids]
            rows.append([html.escape(name)] + cells)
        return html_table(["metric (final / best)"] + [f"job {i}" for i in ids], rows)
