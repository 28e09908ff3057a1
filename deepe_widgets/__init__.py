"""deepe-widgets: a Jupyter-native LLM fine-tuning workbench.

The core (store, methods, jobs, worker, CLI) imports without torch or ipywidgets;
`deepe_widgets.runtime` is what a stage kernel imports. The widgets load lazily:
`from deepe_widgets import Dashboard` imports ipywidgets only then.
"""

__version__ = "0.1.0"

_WIDGETS = ("Dashboard", "MethodManager", "TrainingLauncher", "TrainingList", "TrainingDetail", "TrainingCompare",
            "ModelsView")


def __getattr__(name: str):
    if name in _WIDGETS:
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module 'deepe_widgets' has no attribute {name!r}")
