"""The Dashboard: tabs Methods, Train, Trainings, Compare — for a JupyterLab cell or a Voila app."""

from __future__ import annotations

import ipywidgets as w

from .compare_view import TrainingCompare
from .detail import TrainingDetail
from .launcher import TrainingLauncher
from .methods_view import MethodManager
from .training_list import TrainingList

TAB_METHODS, TAB_TRAIN, TAB_TRAININGS, TAB_COMPARE = range(4)


class Dashboard(w.VBox):
    """Everything in one place. `admin=False` hides registering and deleting methods (code that runs)."""

    def __init__(self, admin: bool = True):
        self.methods = MethodManager(admin=admin)
        self.launcher = TrainingLauncher(on_submitted=self._submitted)
        self.trainings = TrainingList(on_details=self.show_details, on_compare=self.show_compare)
        self.detail_area = w.VBox()
        self.compare_area = w.VBox([w.HTML("<i>Select two or more trainings under Trainings, then Compare.</i>")])
        self.tabs = w.Tab(children=[self.methods, self.launcher, w.VBox([self.trainings, self.detail_area]),
                                    self.compare_area], titles=("Methods", "Train", "Trainings", "Compare"))
        self.tabs.observe(self._on_tab, "selected_index")
        super().__init__([w.HTML("<h2 style='margin:4px 0'>deepe-widgets — fine-tuning workbench</h2>"), self.tabs])

    def _on_tab(self, change) -> None:
        if change["new"] == TAB_TRAIN:
            self.launcher.reload()  # methods may have been added
        elif change["new"] == TAB_TRAININGS:
            self.trainings.refresh()

    def _submitted(self, job) -> None:
        self.trainings.refresh()

    def show_details(self, job_id: int) -> None:
        for old in self.detail_area.children:
            old.close()
        self.detail_area.children = [TrainingDetail(job_id, on_copy=self.copy_train)]
        self.tabs.selected_index = TAB_TRAININGS

    def copy_train(self, job) -> None:
        self.tabs.selected_index = TAB_TRAIN
        self.launcher.prefill(job)

    def show_compare(self, job_ids: list[int]) -> None:
        self.compare_area.children = [TrainingCompare(job_ids)]
        self.tabs.selected_index = TAB_COMPARE
