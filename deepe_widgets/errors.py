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
    """A stage failed: its notebook raised, or (with `platform`) the workbench around it failed.

    The one stage-failure type on both sides of the process boundary: the stage runner writes
    `to_dict()` into its result file, the executor reads it back with `from_dict()`. `message` is the
    job's error line, `detail` its `error_detail`."""

    FIELDS = ("ename", "evalue", "cell", "location", "source", "platform")

    def __init__(self, ename: str, evalue: str, cell_index: int | None = None, source: str = "",
                 platform: bool = False, location: str = "", *, message: str | None = None,
                 extra: dict | None = None):
        self.location = location  # "train.py, line 8": where in the user's own file, when known
        self.platform = platform  # the workbench failed around the stage, not the stage's code
        self.ename = ename
        self.evalue = evalue
        self.cell_index = cell_index
        self.source = source
        self.extra = dict(extra or {})  # more for error_detail, e.g. the Ray job's id
        if message is None:
            where = (f" ({location})" if location else f" (cell {cell_index})" if cell_index is not None else "")
            message = f"{'the workbench failed: ' if platform else ''}{ename}: {evalue}{where}"
        self.message = message
        super().__init__(message)

    @property
    def detail(self) -> dict:
        """What the job record keeps as `error_detail`."""
        return {"ename": self.ename, "evalue": self.evalue, "cell": self.cell_index, "location": self.location,
                "source": self.source, "platform": self.platform, **self.extra}

    def to_dict(self) -> dict:
        """The failure as JSON (a stage runner's result file, a Ray job's last line), `"ok": False`."""
        return {"ok": False, **self.detail, "source": self.source[:2000], "message": self.message}

    @classmethod
    def from_dict(cls, data: dict, **extra) -> StageFailed:
        """The failure `to_dict` wrote (a result written by an older runner lacks some keys)."""
        known = set(cls.FIELDS) | {"ok", "message"}
        return cls(str(data.get("ename") or "StageFailed"), str(data.get("evalue") or ""), data.get("cell"),
                   data.get("source") or "", bool(data.get("platform")), data.get("location") or "",
                   message=data.get("message"), extra={**{k: v for k, v in data.items() if k not in known}, **extra})
