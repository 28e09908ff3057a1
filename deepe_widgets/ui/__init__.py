"""The widgets: they work in a JupyterLab cell and in the Voila apps under `voila_apps/`."""

from . import _startup  # noqa: F401  (first: it makes the imports below faster)
from .compare_view import TrainingCompare
from .dashboard import Dashboard
from .detail import TrainingDetail
from .launcher import TrainingLauncher
from .methods_view import MethodManager
from .models_view import ModelsView
from .state import WorkbenchModel
from .training_list import TrainingList

__all__ = ["Dashboard", "MethodManager", "TrainingLauncher", "TrainingList", "TrainingDetail", "TrainingCompare",
           "ModelsView", "WorkbenchModel"]
