"""runner: one stage notebook run with papermill in the real python3 kernel: its record, its log, and a
failure's cell and message; and what a run records it was made from."""

from __future__ import annotations

import nbformat
import pytest

from deepe_widgets import runner
from deepe_widgets.errors import DeepeError, StageFailed


def _stage(*sources: str) -> nbformat.NotebookNode:
    """A stage notebook: a parameters cell, then one code cell per source."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('GREETING = "hello"\nOUTPUT_DIR = ""', metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(source) for source in sources)]
    return nb


def _run(tmp_path, nb, **kwargs):
    record, log = tmp_path / "evaluation.ipynb", tmp_path / "evaluation.log"
    runner.execute_stage(nb, stage="evaluation", kernel="python3", parameters=kwargs.pop("parameters", {}),
                         output_path=record, log_path=log, cwd=tmp_path, **kwargs)
    return record, log


def test_a_stage_runs_with_its_parameters_and_leaves_its_record_and_log(tmp_path):
    provenance: dict = {}
    record, log = _run(tmp_path, _stage("import os\nprint(GREETING, 'from', os.getcwd())"),
                       parameters={"GREETING": "bonjour"}, provenance=provenance)

    text = log.read_text()
    assert f"bonjour from {tmp_path}" in text  # the kernel's output streams to the log, in the run's folder
    assert "stage evaluation succeeded" in text
    meta = nbformat.read(record, as_version=4).metadata["deepe"]
    assert (meta["stage"], meta["kernel"], meta["status"], meta["error"]) == ("evaluation", "python3", "succeeded",
                                                                              None)
    assert meta["parameters"] == {"GREETING": "bonjour"}
    assert meta["packages"]["transformers"]  # the kernel's own package versions, for a re-run to compare
    assert provenance["kernel"] == "python3" and provenance["packages"] == meta["packages"]
    assert meta["provenance"] is not None


def test_a_failing_cell_is_named_with_its_index_and_message(tmp_path):
    nb = _stage("x = 1", "raise ValueError('the column text is missing')", "print('never')")
    with pytest.raises(StageFailed) as raised:
        _run(tmp_path, nb)
    failure = raised.value
    record = nbformat.read(tmp_path / "evaluation.ipynb", as_version=4)
    # the index is the record's: papermill's injected-parameters cell counts
    assert "raise ValueError" in record.cells[failure.cell_index].source
    assert (failure.ename, failure.evalue) == ("ValueError", "the column text is missing")
    assert failure.message == f"ValueError: the column text is missing (cell {failure.cell_index})"
    assert "raise ValueError" in failure.source
    assert record.metadata["deepe"]["status"] == "failed"
    assert record.metadata["deepe"]["error"] == {"ename": "ValueError", "evalue": "the column text is missing",
                                                 "cell": failure.cell_index}
    log = (tmp_path / "evaluation.log").read_text()
    assert "stage evaluation failed: ValueError: the column text is missing" in log


def test_a_stage_past_its_timeout_is_stopped_and_says_so(tmp_path):
    with pytest.raises(StageFailed) as raised:
        _run(tmp_path, _stage("import time\ntime.sleep(120)"), timeout=2)
    assert raised.value.ename == "StageTimeout"
    assert "ran past STAGE_TIMEOUT=2 s" in raised.value.evalue


def test_inputs_provenance_hashes_the_stage_file_and_records_the_seed(tmp_path):
    stage_file = tmp_path / "training.ipynb"
    stage_file.write_bytes(b"abc")
    out = runner.inputs_provenance(stage_files={"training": stage_file}, dataset=("gone", tmp_path / "none.jsonl"),
                                   model=None, parameters={"LEARNING_RATE": 0.1, "JOB_ID": 7},
                                   defaults={"SEED": "42", "LEARNING_RATE": "2e-4"})
    assert out["stage_files"]["training"] == {
        "file": "training.ipynb", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    assert (out["seed"], out["seed_given"]) == (42, False)  # defaulted, and recorded all the same
    assert out["parameters"] == {"SEED": 42, "LEARNING_RATE": 0.1}  # the platform's own are no parameter
    assert out["dataset"]["name"] == "gone" and "error" in out["dataset"]  # unreadable: said, not raised


def test_run_local_test_refuses_unknown_kernel_and_inputs_before_starting(home, tmp_path):
    stage_file = tmp_path / "train.ipynb"
    nbformat.write(_stage(), stage_file)
    with pytest.raises(DeepeError, match="kernel 'nope-kernel' is not installed") as raised:
        runner.run_local_test(stage_file, "x", "y", kernel="nope-kernel", output=tmp_path / "out")
    assert raised.value.field == "kernel"
    with pytest.raises(DeepeError, match="base model 'no-such-model' is neither an existing path nor a registered "
                                         "name") as raised:
        runner.run_local_test(stage_file, "no-such-model", "y", output=tmp_path / "out")
    assert raised.value.field == "base model"
    assert not (tmp_path / "out").exists()  # refused before anything was written
