"""Paths stay under the allowed roots, secrets never reach a record, the workspace is private."""

import os
import stat
from pathlib import Path

import pytest

from deepe_widgets import datasets, jobs, methods, models
from deepe_widgets.errors import DeepeError
from deepe_widgets.worker import Worker

from helpers import deepe, deepe_json
from stage_notebooks import plain_notebook


@pytest.fixture
def jail(workspace, tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    monkeypatch.setenv("DEEPE_ALLOWED_ROOTS", f"{allowed}{os.pathsep}{workspace}")
    outside = tmp_path / "allowed2"  # shares the prefix "allowed", is not under it
    outside.mkdir()
    return allowed, outside


def test_paths_outside_the_allowed_roots_are_refused(jail, tiny_model_dir):
    allowed, outside = jail
    (outside / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (allowed / "data" / "link.jsonl").symlink_to(outside / "d.jsonl")
    for path in (outside / "d.jsonl", allowed / "data" / ".." / ".." / "allowed2" / "d.jsonl",
                 allowed / "data" / "link.jsonl"):
        with pytest.raises(DeepeError, match="outside the allowed folders"):
            datasets.add_dataset("sneaky", path)
    with pytest.raises(DeepeError, match="outside the allowed folders"):
        models.add_model("sneaky", tiny_model_dir)  # the session's tiny model is outside this jail
    notebook = plain_notebook(outside / "plain.ipynb")
    with pytest.raises(DeepeError, match="outside the allowed folders"):
        methods.register_method("sneaky", {"training": (notebook, "python3")})
    done = deepe("datasets", "add", "x", str(outside / "d.jsonl"), check=False)
    assert done.returncode == 2 and "outside the allowed folders" in done.stderr
    inside = allowed / "data" / "d.jsonl"
    inside.write_text('{"instruction": "a", "output": "b"}\n')
    assert datasets.add_dataset("fine", inside).rows == 1


def test_secrets_reach_the_kernel_but_no_record_log_or_database(workspace, tmp_path, monkeypatch):
    secret = "hf_SECRET_4b1d3e9f0a"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("WANDB_API_KEY", secret + "_wandb")
    notebook = plain_notebook(tmp_path / "plain.ipynb")
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os\nassert os.environ['HF_TOKEN'].startswith('hf_')\n"
        "print('token length', len(os.environ['HF_TOKEN']))"))
    nbformat.write(nb, notebook)
    methods.register_method("uses-token", {"training": (notebook, "python3")})
    job = jobs.submit_training("uses-token", "tiny", "demo-sft")
    Worker(idle_exit=1.0, poll_seconds=0.1).run()
    assert jobs.get_job(job.id).status == "succeeded"
    record = (Path(jobs.get_job(job.id).run_dir) / "training.ipynb").read_text()
    assert "token length 20" in record  # the kernel had it
    leaked = [p for p in workspace.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


def test_workspace_and_database_are_owner_only(workspace):
    from deepe_widgets import config

    config.runs_dir()
    for path in (workspace, workspace / "runs", workspace / "methods", workspace / "datasets"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((workspace / "deepe.db").stat().st_mode) == 0o600


def test_doctor_finds_and_fixes(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    assert deepe("doctor").stdout.strip() == "no problems found"
    job = jobs.submit_training("plain", "tiny", "demo-sft")
    jobs.claim_next_job("a-worker-that-died")
    from deepe_widgets import store

    with store.get_engine().begin() as conn:
        conn.execute(store.Job.__table__.update().values(lease_expires=0))
    (workspace / "runs" / "9999").mkdir()
    gone = tmp_path / "gone-model"
    gone.mkdir()
    (gone / "config.json").write_text("{}")
    models.add_model("gone", gone)
    gone.joinpath("config.json").unlink()
    gone.rmdir()
    report = deepe_json("doctor", "--json", check=False)
    problems = " | ".join(f["problem"] for f in report)
    assert f"job {job.id} is marked running but no worker holds its lease" in problems
    assert "run folder" in problems and "9999" in problems and "'gone'" in problems
    done = deepe("doctor", "--fix", check=False)
    assert done.returncode == 0, done.stdout
    assert jobs.get_job(job.id).status == "queued"
    assert (workspace / "orphaned-runs" / "9999").is_dir() and not (workspace / "runs" / "9999").exists()
    assert deepe("doctor").stdout.strip() == "no problems found"
