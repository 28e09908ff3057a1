"""Fixture stage notebooks for queue and runner tests (files under tests/notebooks/, as papermill
keeps its own): "any notebook becomes a method".

`plain.ipynb` trains nothing heavy: its `trainer` is plain user code honouring the contract
(train(), save_pretrained()), so a queue test runs in a second or two. Its parameters:
SLEEP (seconds train() takes), FAIL (raise in train())."""

import shutil
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"


def plain_notebook(path: Path) -> Path:
    """A copy of tests/notebooks/plain.ipynb at `path` (methods register copies of files)."""
    shutil.copyfile(NOTEBOOKS / "plain.ipynb", path)
    return path
