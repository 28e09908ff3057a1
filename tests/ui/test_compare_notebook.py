"""notebooks/compare_runs.ipynb runs top to bottom: two tiny trainings, the widget, the plain report."""

import nbformat
import papermill
import pytest

from conftest import REPO

pytestmark = pytest.mark.training


def test_compare_runs_notebook(home, tiny_model_dir, tmp_path):
    out = tmp_path / "compare_runs.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "compare_runs.ipynb"), str(out), kernel_name="python3",
                               parameters={"BASE_MODEL_PATH": str(tiny_model_dir), "MAX_STEPS": 4},
                               cwd=str(tmp_path), progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "LEARNING_RATE: {" in text and "loss" in text
    # the widget cell left a widget view behind, not a plain repr
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
