"""The notebooks a user opens are executed, so they cannot rot."""

import nbformat
import papermill
import pytest

from helpers import REPO

pytestmark = pytest.mark.training
NOTEBOOK_FILES = ["compare_runs.ipynb", "implement_your_own_method.ipynb", "quick_start.ipynb"]


@pytest.mark.parametrize("name,params", [
    ("quick_start", {"MAX_STEPS": 6, "LEARNING_RATE": 5e-3}),
    ("implement_your_own_method", {"MAX_STEPS": 3}),
    ("compare_runs", {"MAX_STEPS": 4}),
])
def test_notebook_runs(name, params, home, tiny_model_dir, tmp_path):
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3",
                               parameters={"BASE_MODEL_PATH": str(tiny_model_dir), **params}, cwd=str(tmp_path),
                               progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    assert sorted(p.name for p in (REPO / "notebooks").iterdir()) == sorted(NOTEBOOK_FILES)  # no litter
    streams = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    assert len(streams) < 60, f"{len(streams)} stream outputs: progress printed on every poll?"
