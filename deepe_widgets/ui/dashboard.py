"""The Dashboard: tabs Methods, Train, Trainings, Compare — for a JupyterLab cell or a Voila app."""

from __future__ import annotations

import html

import ipywidgets as w

from ..errors import DeepeError
from .common import close_tree
from .compare_view import TrainingCompare
from .detail import TrainingDetail
from .launcher import TrainingLauncher
from .methods_view import MethodManager
from .state import WorkbenchModel
from .training_list import TrainingList

TAB_METHODS, TAB_TRAIN, TAB_TRAININGS, TAB_COMPARE = range(4)


class Dashboard(w.VBox):
    """Everything in one place. `admin=False` hides registering and deleting methods (code that runs).

    The views share one `WorkbenchModel` (`self.model`): a click sets it, the dashboard observes it."""

    def __init__(self, admin: bool = True, model: WorkbenchModel | None = None, start_worker: bool = True):
        self.model = model or WorkbenchModel(admin=admin)
        self.methods = MethodManager(admin=self.model.admin)
        self.launcher = TrainingLauncher(on_submitted=lambda job: setattr(self.model, "last_submitted", job.id),
                                         start_worker=start_worker)
        self.trainings = TrainingList(on_details=self.show_details, on_compare=self.show_compare)
        self.detail_area = w.VBox()
        self.compare_area = w.VBox([w.HTML("<i>Select two or more trainings under Trainings, then Compare.</i>")])
        self.tabs = w.Tab(children=[self.methods, self.launcher, w.VBox([self.trainings, self.detail_area]),
                                    self.compare_area], titles=("Methods", "Train", "Trainings", "Compare"))
        self.tabs.observe(self._on_tab, "selected_index")
        self.model.observe(lambda _c: self._render_details(), "open_job")
        self.model.observe(lambda _c: self._render_compare(), "compare_ids")
        self.model.observe(lambda _c: self.trainings.show_page(0), "last_submitted")  # the newest is on page 1
        super().__init__([w.HTML("<h2 style='margin:4px 0'>deepe-widgets — fine-tuning workbench</h2>"
                                 "<div style='color:#555;margin-bottom:6px'>Methods: what can be trained · "
                                 "Train: start a new training · Trainings: follow, inspect, copy · "
                                 "Compare: two or more trainings side by side</div>"), self.tabs])

    def close(self) -> None:
        """Stop every view's poller and close every widget of the dashboard."""
        close_tree(self)

    def _on_tab(self, change) -> None:
        if change["new"] == TAB_TRAIN:
            self.launcher.reload()  # methods may have been added
        elif change["new"] == TAB_TRAININGS:
            self.trainings.refresh()

    def show_details(self, job_id: int) -> None:
        """"View Details" of one job (again, if it is the one open: a fresh view)."""
        if self.model.open_job == job_id:
            self._render_details()
        self.model.open_job = job_id

    def _render_details(self) -> None:
        for old in self.detail_area.children:
            old.close()  # stops its poller and closes its charts
        job_id = self.model.open_job
        self.detail_area.children = [TrainingDetail(job_id, on_copy=self.copy_train)] if job_id else []
        self.tabs.selected_index = TAB_TRAININGS

    def copy_train(self, job) -> None:
        self.tabs.selected_index = TAB_TRAIN
        self.launcher.prefill(job)

    def show_compare(self, job_ids: list[int]) -> None:
        """"Compare" two or more jobs (again, if the same: their newest metrics)."""
        job_ids = sorted(int(i) for i in job_ids)
        if self.model.compare_ids == job_ids:
            self._render_compare()
        self.model.compare_ids = job_ids

    def _render_compare(self) -> None:
        try:
            view = TrainingCompare(self.model.compare_ids)
        except DeepeError as exc:  # e.g. fewer than two jobs: a message, not a traceback
            view = w.HTML(f"<span class='deepe-status deepe-error' style='color:#cf222e'>{html.escape(exc.message)}"
                          "</span>")
        for old in self.compare_area.children:  # the view before (its figures, marks, scales, axes), or a message
            old.close() if isinstance(old, TrainingCompare) else close_tree(old)
        self.compare_area.children = [view]
        self.tabs.selected_index = TAB_COMPARE
