"""Run folders are never reused: a fresh or switched database hands out job id 1 again, and its
run must not take the earlier run's record or resume from its checkpoint."""

from pathlib import Path

import pytest

from helpers import FAST_PARAMS, deepe_json

pytestmark = pytest.mark.training


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _train(name: str) -> dict:
    return deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
                      "--name", name, *[p.replace("save_steps=0", "save_steps=3") for p in FAST_PARAMS],
                      "--wait", "--json")


def test_a_switched_database_starts_fresh_runs_and_leaves_the_old_folder_alone(workspace, tiny_model_dir,
                                                                               monkeypatch):
    from deepe_widgets import demo_data, methods, models, store

    first = _train("first")
    assert first["status"] == "succeeded", first["error"]
    first_dir = Path(first["run_dir"])
    assert list((first_dir / "output").glob("checkpoint-*")), "the first run left checkpoints to resume from"
    before = _snapshot(first_dir)

    monkeypatch.setenv("DEEPE_DB_URL", f"sqlite:///{workspace / 'switched.db'}")
    store.dispose_engines()
    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()
    models.add_model("tiny", tiny_model_dir)
    second = _train("second")
    assert second["status"] == "succeeded", second["error"]
    assert second["id"] == first["id"] == 1 and second["run_dir"] != first["run_dir"]
    assert second["attempt"] == 1
    metrics = deepe_json("jobs", "metrics", "1", "--all", "--json")
    assert [m["step"] for m in metrics if m["name"] == "loss"] == list(range(1, 7)), "trained from step 1"
    second_dir = Path(second["run_dir"])
    assert not list(second_dir.glob("training.attempt*.ipynb"))
    assert _snapshot(first_dir) == before, "the first run's folder was touched"


def test_an_existing_run_folder_is_refused_not_reused(workspace, monkeypatch):
    from deepe_widgets import config, jobs
    from deepe_widgets.errors import DeepeError

    taken = []
    real = jobs.run_folder

    def taken_folder(job):  # a folder that, against all odds, already exists
        path = real(job)
        path.mkdir()
        (path / "training.ipynb").write_text("someone else's record")
        taken.append(path)
        return path

    monkeypatch.setattr(jobs, "run_folder", taken_folder)
    with pytest.raises(DeepeError, match="already exists; nothing was queued"):
        jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    assert taken[0].joinpath("training.ipynb").read_text() == "someone else's record"
    assert jobs.list_jobs() == []
    assert [p.name for p in config.runs_dir().iterdir()] == [taken[0].name]
