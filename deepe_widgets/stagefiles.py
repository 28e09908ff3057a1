"""Stage files: notebooks (or `.py` files) that a method runs for one lifecycle stage.

A stage notebook needs a cell tagged `parameters`. The platform adds its own
cells around the user's code when they are missing: `deepe-setup` (defines
`callback`) after the parameters, and `deepe-train` (trains and saves) at the end.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import nbformat

from .config import StageName, package_templates_dir
from .errors import DeepeError

BEGIN_MARKER = "#============ from here add your own train code"
END_MARKER = "#============ end here with your own train code"
SETUP_TAG = "deepe-setup"
TRAIN_TAG = "deepe-train"
USER_TAG = "deepe-user-code"

SETUP_SOURCE = (
    "# Platform cell: `callback` streams every logged metric to the workbench.\n"
    "from deepe_widgets.runtime import make_callback, log_event\n"
    "callback = make_callback(JOB_ID)"
)
TRAIN_SOURCE = (
    "# Platform cell: the workbench trains and saves; user code must not.\n"
    "from deepe_widgets.runtime import train_and_save\n"
    "train_and_save(trainer, model, tokenizer, OUTPUT_DIR)"
)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def template_notebook_path() -> Path:
    return package_templates_dir() / "custom_template" / "training.ipynb"


def read_stage_file(path: Path, stage: str = StageName.TRAINING) -> nbformat.NotebookNode:
    """Read a stage notebook (`.ipynb`, or a `.py` converted) with its parameters cell; refuse what
    cannot run. A script (no parameters cell) is refused here: `scriptmode.load_stage_notebook`,
    the loader callers use, wraps it first."""
    path = Path(path)
    if not path.exists():
        raise DeepeError(f"stage file {str(path)!r} does not exist", field=stage)
    if not path.is_file():
        raise DeepeError(f"stage file {str(path)!r} is not a file", field=stage)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DeepeError(f"stage file {str(path)!r} is not UTF-8 text", field=stage) from None
    except OSError as exc:
        raise DeepeError(f"cannot read stage file {str(path)!r}: {exc.strerror}", field=stage) from None
    suffix = path.suffix.lower()
    if suffix == ".ipynb":
        try:
            nb = nbformat.reads(text, as_version=4)
            nbformat.validate(nb)
        except Exception as exc:  # nbformat raises several kinds for a broken file
            raise DeepeError(f"stage file {str(path)!r} is not a valid notebook: "
                             f"{str(exc).splitlines()[0][:200]}", field=stage) from None
    elif suffix == ".py":
        nb = _notebook_from_script(text, path, stage)
    else:
        raise DeepeError(f"stage file {str(path)!r} must be a .ipynb notebook or a .py file", field=stage)
    if find_parameters_cell(nb) is None:
        raise DeepeError(
            f"stage file {str(path)!r} has no cell tagged 'parameters'; tag the cell that "
            f"holds the parameter defaults (in a .py file: `# %% tags=[\"parameters\"]`)", field=stage)
    return nb


def _notebook_from_script(text: str, path: Path, stage: str) -> nbformat.NotebookNode:
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARKER]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if begins or ends:
        if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
            raise DeepeError(
                f"{str(path)!r} must hold the marker line {BEGIN_MARKER!r} once, followed by "
                f"{END_MARKER!r} once (found {len(begins)} and {len(ends)})", field=stage)
        user_code = "\n".join(lines[begins[0] + 1:ends[0]])
        return notebook_with_user_code(user_code)
    import jupytext

    try:
        return jupytext.reads(text, fmt="py:percent")
    except Exception as exc:
        raise DeepeError(f"cannot convert {str(path)!r} to a notebook: {exc}", field=stage) from None


def notebook_with_user_code(user_code: str) -> nbformat.NotebookNode:
    """The template notebook with `user_code` between the seed's two marker lines."""
    nb = nbformat.read(template_notebook_path(), as_version=4)
    for cell in nb.cells:
        if USER_TAG in cell.metadata.get("tags", []):
            cell.source = f"{BEGIN_MARKER}\n{user_code.strip()}\n{END_MARKER}"
            return nb
    raise RuntimeError("the template notebook lost its user-code cell")


def find_parameters_cell(nb: nbformat.NotebookNode) -> int | None:
    # papermill's own tag helpers read `cell.metadata.tags`, which fails on a cell without tags
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return index
    return None


def has_tag(nb: nbformat.NotebookNode, tag: str) -> bool:
    return any(tag in cell.metadata.get("tags", []) for cell in nb.cells)


def with_platform_cells(nb: nbformat.NotebookNode, stage: str) -> nbformat.NotebookNode:
    """A copy of a training notebook with the platform's setup and train cells present."""
    nb = copy.deepcopy(nb)
    if stage != StageName.TRAINING:
        return nb
    if not has_tag(nb, SETUP_TAG):
        setup = nbformat.v4.new_code_cell(SETUP_SOURCE, metadata={"tags": [SETUP_TAG]})
        nb.cells.insert(find_parameters_cell(nb) + 1, setup)
    if not has_tag(nb, TRAIN_TAG):
        nb.cells.append(nbformat.v4.new_code_cell(TRAIN_SOURCE, metadata={"tags": [TRAIN_TAG]}))
    for cell in nb.cells:  # ids are required by nbformat 4.5; old notebooks lack them
        cell.setdefault("id", nbformat.v4.new_code_cell().id)
    return nb


def notebook_parameters(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """Name -> {default (source text), type, help} of the `parameters` cell (papermill's reader)."""
    import papermill  # ~0.25 s: not paid by every dashboard kernel that imports this module

    nb = copy.deepcopy(nb)
    # papermill reads the language from the kernelspec; a converted .py file has none
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    found = papermill.inspect_notebook(nb)
    return {name: {"default": p["default"], "type": p["inferred_type_name"], "help": p["help"]}
            for name, p in found.items()}
