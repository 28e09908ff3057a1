"""Errors a user can act on. The CLI prints them as one `error: …` line and exits 2."""

from __future__ import annotations


class DeepeError(Exception):
    """Bad input or a refused operation; `field` names the form field it belongs to."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class DatabaseUnavailable(DeepeError):
    """The database did not answer when first opened (a restart, a network blip): worth trying again."""


class NotFound(DeepeError):
    """A named method, model, dataset or job does not exist."""


class StageFailed(Exception):
    """A stage notebook raised; carries what the job record stores."""

    def __init__(self, ename: str, evalue: str, cell_index: int | None = None, source: str = "",
                 platform: bool = False, location: str = ""):
        super().__init__(f"{ename}: {evalue}")
        self.location = location  # "train.py, line 8": where in the user's own file, when known
        self.platform = platform  # the workbench failed around the stage, not the stage's code
        self.ename = ename
        self.evalue = evalue
        self.cell_index = cell_index
        self.source = source
