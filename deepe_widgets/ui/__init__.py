"""The widgets: they work in a JupyterLab cell and in the Voila apps under `voila_apps/`."""

from . import _startup  # noqa: F401  (first: it makes the imports below faster)
from .dashboard import Dashboard
from .launcher import TrainingLauncher
from .methods_view import MethodManager
from .models_view import ModelsView
from .state import WorkbenchModel
from .training_list import TrainingList

__all__ = ["Dashboard", "MethodManager", "TrainingLauncher", "TrainingList", "TrainingDetail", "TrainingCompare",
           "ModelsView", "WorkbenchModel"]


def __getattr__(name: str):
    """The chart views load bqplot (~0.7 s): imported when first asked for, not with the dashboard."""
    if name == "TrainingCompare":
        from .compare_view import TrainingCompare
        return TrainingCompare
    if name == "TrainingDetail":
        from .detail import TrainingDetail
        return TrainingDetail
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
