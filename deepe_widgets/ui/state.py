"""The dashboard's shared state as a traitlets model (sepal_ui's habit): views set it, others observe it.

The same model serves a JupyterLab cell and the Voila app; a notebook can drive the dashboard by
setting it (`dash.model.open_job = 3`) just as a click does.
"""

from __future__ import annotations

from traitlets import Bool, HasTraits, Int, List


class WorkbenchModel(HasTraits):
    """Which job is open, which are compared, which was just queued; whether method admin is on."""

    admin = Bool(True, help="registering and deleting methods (code that will run) is offered")
    open_job = Int(None, allow_none=True, help="the job shown under View Details")
    compare_ids = List(Int(), help="the jobs shown under Compare")
    last_submitted = Int(None, allow_none=True, help="the newest job queued from the form")
