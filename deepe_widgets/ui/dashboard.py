"""The Dashboard: tabs Methods, Train, Trainings, Compare, Models — for a JupyterLab cell or a Voila app."""

from __future__ import annotations

import html

import ipywidgets as w

from ..errors import DeepeError
from .common import close_tree, stylesheet
from .launcher import TrainingLauncher
from .methods_view import MethodManager
from .models_view import ModelsView
from .state import WorkbenchModel, resolve_admin
from .training_list import TrainingList

TAB_METHODS, TAB_TRAIN, TAB_TRAININGS, TAB_COMPARE, TAB_MODELS = range(5)


class Dashboard(w.VBox):
    """Everything in one place. `admin=False` leaves out what runs code or removes files: registering
    and deleting methods, a script's own flags, deleting models, deploying (`state.page_is_admin`
    decides when it is not given: the app's pages as `deepe app` was started, a JupyterLab cell yes).

    The views share one `WorkbenchModel` (`self.model`): a click sets it, the dashboard observes it."""

    def __init__(self, admin: bool | None = None, model: WorkbenchModel | None = None, start_worker: bool = True):
        self.model = model or WorkbenchModel(admin=resolve_admin(admin))
        self.start_worker = start_worker
        self.detail_area = w.VBox()
        self.compare_area = w.VBox([w.HTML("<i>Tick two or more trainings under Trainings, then Compare.</i>")])
        # Each tab's view is built when its tab is first shown (or first needed): a visit's page loads
        # one tab's widget models, not all five tabs' (~100 instead of ~550, each sent to the browser).
        self._views: dict[int, w.Widget] = {}
        self._makers = {
            TAB_METHODS: lambda: MethodManager(admin=self.model.admin),
            TAB_TRAIN: lambda: TrainingLauncher(
                on_submitted=lambda job: setattr(self.model, "last_submitted", job.id), start_worker=start_worker,
                admin=self.model.admin),
            TAB_TRAININGS: lambda: TrainingList(on_details=self.show_details, on_compare=self.show_compare,
                                                on_removed=self._removed),
            TAB_COMPARE: lambda: self.compare_area,
            TAB_MODELS: lambda: ModelsView(on_job=self.show_details, start_worker=start_worker,
                                           admin=self.model.admin),
        }
        self.pages = [w.VBox() for _ in self._makers]
        self.tabs = w.Tab(children=self.pages, titles=("Methods", "Train", "Trainings", "Compare", "Models"))
        self._attach(self.tabs.selected_index or 0)
        self.tabs.observe(self._on_tab, "selected_index")
        self.model.observe(lambda _c: self._render_details(), "open_job")
        self.model.observe(lambda _c: self._render_compare(), "compare_ids")
        self.model.observe(self._on_submitted, "last_submitted")
        super().__init__([stylesheet(),
                          w.HTML("<h2 style='margin:4px 0'>deepe-widgets — fine-tuning workbench</h2>"
                                 "<div style='color:#555;margin-bottom:6px'>Methods: what can be trained · "
                                 "Train: start a new training · Trainings: follow, inspect, copy · "
                                 "Compare: two or more trainings side by side · Models: save, try, delete</div>"),
                          self.tabs])

    methods = property(lambda self: self._view(TAB_METHODS))
    launcher = property(lambda self: self._view(TAB_TRAIN))
    trainings = property(lambda self: self._view(TAB_TRAININGS))
    models = property(lambda self: self._view(TAB_MODELS))

    def _view(self, tab: int) -> w.Widget:
        if tab not in self._views:
            self._views[tab] = self._makers[tab]()
        return self._views[tab]

    def close(self) -> None:
        """Stop every view's poller and close every widget of the dashboard (shown tabs or not)."""
        for view in self._views.values():  # a view built but never shown is not in the tree below
            close_tree(view) if type(view) is w.VBox else view.close()
        close_tree(self.detail_area)
        close_tree(self.compare_area)
        close_tree(self)

    def _attach(self, index: int) -> None:
        if not self.pages[index].children:
            view = self._view(index)
            self.pages[index].children = [w.VBox([view, self.detail_area]) if index == TAB_TRAININGS else view]

    def _on_submitted(self, _change) -> None:
        if TAB_TRAININGS in self._views:  # a list not built yet reads the newest when it is
            self.trainings.show_page(0)  # the newest is on page 1

    def _on_tab(self, change) -> None:
        if change["new"] is None:
            return
        built = change["new"] in self._views  # a view built just now is current already
        self._attach(change["new"])
        if not built:
            return
        if change["new"] == TAB_TRAIN:
            self.launcher.reload()  # methods may have been added
        elif change["new"] == TAB_TRAININGS:
            self.trainings.refresh()
        elif change["new"] == TAB_MODELS:
            self.models.refresh_if_changed()

    def show_details(self, job_id: int) -> None:
        """"View Details" of one job (again, if it is the one open: a fresh view)."""
        if self.model.open_job == job_id:
            self._render_details()
        self.model.open_job = job_id

    def _removed(self, job_ids: list[int]) -> None:
        if self.model.open_job in job_ids:  # the details of a job that is gone
            self.close_details()

    def close_details(self) -> None:
        self.model.open_job = None

    def _render_details(self) -> None:
        from .detail import TrainingDetail  # bqplot: imported when a chart is first wanted, not by every visit

        for old in self.detail_area.children:
            old.close()  # stops its poller and closes its charts
        job_id = self.model.open_job
        self.detail_area.children = [TrainingDetail(job_id, on_copy=self.copy_train, on_close=self.close_details,
                                                    on_rerun=self._rerun_queued, start_worker=self.start_worker)] \
            if job_id else []
        self.trainings.mark_open(job_id)
        if job_id:
            self.tabs.selected_index = TAB_TRAININGS

    def _rerun_queued(self, job) -> None:
        self.model.last_submitted = job.id  # the list shows its first page, the re-run on top

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
        from .compare_view import TrainingCompare

        try:
            view = TrainingCompare(self.model.compare_ids)
        except DeepeError as exc:  # e.g. fewer than two jobs: a message, not a traceback
            view = w.HTML(f"<span class='deepe-status deepe-error' style='color:#cf222e'>{html.escape(exc.message)}"
                          "</span>")
        for old in self.compare_area.children:  # the view before (its figures, marks, scales, axes), or a message
            old.close() if isinstance(old, TrainingCompare) else close_tree(old)
        self.compare_area.children = [view]
        self.tabs.selected_index = TAB_COMPARE
