"""stagefiles: reading a stage notebook or .py file, its parameters, and the platform cells around it."""

from __future__ import annotations

import nbformat
import pytest

from deepe_widgets import stagefiles
from deepe_widgets.errors import DeepeError


def _notebook(path, *cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    nbformat.write(nb, path)
    return nb


def _parameters(source: str):
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})


def test_parameters_cell_is_read_with_defaults_types_and_help(tmp_path):
    path = tmp_path / "training.ipynb"
    _notebook(path, nbformat.v4.new_markdown_cell("# my method"),
              _parameters('LEARNING_RATE: float = 2e-4  # step size\nMAX_STEPS = 10\nNAME = "run"'),
              nbformat.v4.new_code_cell("print(LEARNING_RATE)"))
    nb = stagefiles.read_stage_file(path)
    assert stagefiles.find_parameters_cell(nb) == 1
    found = stagefiles.notebook_parameters(nb)
    assert list(found) == ["LEARNING_RATE", "MAX_STEPS", "NAME"]
    assert found["LEARNING_RATE"] == {"default": "2e-4", "type": "float", "help": "step size"}
    assert found["MAX_STEPS"]["default"] == "10"
    assert found["NAME"]["default"] == '"run"'


def test_platform_cells_are_inserted_for_training_only(tmp_path):
    path = tmp_path / "training.ipynb"
    _notebook(path, nbformat.v4.new_code_cell("import os"), _parameters("MAX_STEPS = 1"),
              nbformat.v4.new_code_cell("trainer = model = tokenizer = None"))
    nb = stagefiles.read_stage_file(path)

    trained = stagefiles.with_platform_cells(nb, "training")
    tags = [cell.metadata.get("tags", []) for cell in trained.cells]
    # setup right after the parameters (user code can use `callback`), train-and-save last
    assert tags[2] == [stagefiles.SETUP_TAG] and tags[-1] == [stagefiles.TRAIN_TAG]
    assert len(trained.cells) == 5
    assert "make_callback(JOB_ID)" in trained.cells[2].source
    assert len(nb.cells) == 3  # the caller's notebook is left as it was
    # added once: a notebook that already has them keeps them as they are
    assert len(stagefiles.with_platform_cells(trained, "training").cells) == 5

    for stage in ("inference-customized", "evaluation"):
        assert [c.source for c in stagefiles.with_platform_cells(nb, stage).cells] == [c.source for c in nb.cells]


def test_python_file_with_markers_becomes_the_template_with_user_code(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(f"import x\n{stagefiles.BEGIN_MARKER}\nprint('mine')\n{stagefiles.END_MARKER}\n")
    nb = stagefiles.read_stage_file(path)
    user = [c for c in nb.cells if stagefiles.USER_TAG in c.metadata.get("tags", [])]
    assert len(user) == 1 and "print('mine')" in user[0].source
    assert stagefiles.find_parameters_cell(nb) is not None


def test_percent_script_with_a_tagged_parameters_cell_is_read(tmp_path):
    path = tmp_path / "evaluate.py"
    path.write_text('# %% tags=["parameters"]\nTOP_K = 5\n\n# %%\nprint(TOP_K)\n')
    nb = stagefiles.read_stage_file(path, "evaluation")
    assert stagefiles.notebook_parameters(nb)["TOP_K"]["default"] == "5"


@pytest.mark.parametrize("name, content, message", [
    ("missing.ipynb", None, "does not exist"),
    ("broken.ipynb", "{not json", "is not a valid notebook"),
    ("notes.txt", "x = 1", "must be a .ipynb notebook or a .py file"),
    ("latin1.py", b"x = '\xe9'", "is not UTF-8 text"),
    ("plain.py", "x = 1\n", "has no cell tagged 'parameters'"),
    ("twice.py", f"{stagefiles.BEGIN_MARKER}\n{stagefiles.BEGIN_MARKER}\n{stagefiles.END_MARKER}\n",
     "must hold the marker line"),
])
def test_read_stage_file_refuses_what_cannot_run(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DeepeError, match=message) as raised:
        stagefiles.read_stage_file(path, "evaluation")
    assert raised.value.field == "evaluation"  # the form marks the stage's file field


def test_a_folder_is_refused_as_a_stage_file(tmp_path):
    with pytest.raises(DeepeError, match="is not a file"):
        stagefiles.read_stage_file(tmp_path)


def test_a_notebook_without_parameters_cell_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "training.ipynb"
    _notebook(path, nbformat.v4.new_code_cell("MAX_STEPS = 1"))
    with pytest.raises(DeepeError, match="tag the cell that holds the parameter defaults"):
        stagefiles.read_stage_file(path)


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert stagefiles.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
