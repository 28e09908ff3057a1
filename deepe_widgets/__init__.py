"""deepe-widgets: a Jupyter-native LLM fine-tuning workbench.

The core (store, methods, jobs, worker, CLI) imports without torch or ipywidgets;
`deepe_widgets.runtime` is what a stage kernel imports.
"""

__version__ = "0.1.0"
