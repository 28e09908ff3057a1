"""The dashboard's shared state as a traitlets model (sepal_ui's habit): views set it, others observe it.

The same model serves a JupyterLab cell and the Voila app; a notebook can drive the dashboard by
setting it (`dash.model.open_job = 3`) just as a click does. `in_voila_app` and `page_is_admin` say
where the page runs and what it may do there.
"""

from __future__ import annotations

import os

from traitlets import Bool, HasTraits, Int, List

ADMIN_ENV = "DEEPE_APP_METHOD_ADMIN"
ADMIN_ONLY = ("that is for an admin page: a JupyterLab cell, or an app started with "
              "deepe app --allow-method-admin")


def in_voila_app() -> bool:
    """True inside a Voila app (which never serves run folders), False in JupyterLab."""
    return bool(os.environ.get("VOILA_KERNEL_ID") or os.environ.get("VOILA_BASE_URL"))


def page_is_admin() -> bool:
    """Whether this page may do what runs code or removes files: register and delete methods, give a
    script its own flags (ARGS_TEMPLATE, EXTRA_ARGS), delete models, deploy and stop Live Models.

    `deepe app` sets DEEPE_APP_METHOD_ADMIN to "1" (started with --allow-method-admin) or "0"; where it
    is unset, a JupyterLab cell is its notebook's user, who owns the workspace (admin), and any other
    Voila page is not."""
    value = os.environ.get(ADMIN_ENV)
    if value is not None:
        return value == "1"
    return not in_voila_app()


def resolve_admin(admin: bool | None) -> bool:
    """`admin` as a view was given it; None: as `page_is_admin()` decides."""
    return page_is_admin() if admin is None else bool(admin)


class WorkbenchModel(HasTraits):
    """Which job is open, which are compared, which was just queued; whether admin actions are on."""

    admin = Bool(True, help="registering and deleting methods, script flags, deleting models and deploying "
                            "are offered")
    open_job = Int(None, allow_none=True, help="the job shown under View Details")
    compare_ids = List(Int(), help="the jobs shown under Compare")
    last_submitted = Int(None, allow_none=True, help="the newest job queued from the form")
