"""Runs leave the workbench: export to a real MLflow tracking store (SQLite, and a file store)
read back with MlflowClient, and to TensorBoard event files read back with its EventAccumulator."""

import sys
import time
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import update

from deepe_widgets import jobs, metrics, publishing, runner, store, tracking
from deepe_widgets.errors import DeepeError
from deepe_widgets.runtime import MetricSink
from deepe_widgets.store import Job, JobStatus

from helpers import FAST_PARAMS, deepe, deepe_json

LOSSES = {1: 3.0, 2: 1.0, 3: 1.5}
# MLflow's SQL store, read back in this process, uses an option SQLAlchemy 2.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")


def _finished_job(losses: dict[int, float], finished_at: float | None = None, **params) -> Job:
    """A training as a worker leaves it: metric rows, provenance, record notebook, model card."""
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params=params)
    _log(job.id, losses)
    provenance = runner.job_provenance(job)
    record = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('trained')")])
    record.metadata["deepe"] = {"stage": "training", "provenance": provenance}
    nbformat.write(record, Path(job.run_dir) / "training.ipynb")
    (Path(job.run_dir) / "output").mkdir()
    publishing.write_model_card(job, f"tiny_{job.name}", Path(job.run_dir) / "output")
    finished = finished_at or time.time()
    with store.get_engine().begin() as conn:
        conn.execute(update(Job.__table__).where(Job.__table__.c.id == job.id).values(
            status=JobStatus.SUCCEEDED, started_at=finished - 60, finished_at=finished, provenance=provenance))
    return jobs.get_job(job.id)


def _log(job_id: int, losses: dict[int, float]) -> None:
    sink = MetricSink(job_id)
    for step, loss in losses.items():
        sink.add(step, {"loss": loss, "grad_norm": loss / 10, "rewards/format/mean": 0.5}, None)
    sink.close()


def test_export_to_mlflow_reads_back_and_updates_the_same_run(workspace, tmp_path):
    from mlflow.tracking import MlflowClient

    job = _finished_job(LOSSES, learning_rate="1e-3")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    [exported] = deepe_json("jobs", "export", str(job.id), "--mlflow", uri, "--json")["mlflow"]
    assert exported["created"] and exported["metric_points_added"] == 9
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(exported["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == job.name
    params, tags = run.data.params, run.data.tags
    assert params["LEARNING_RATE"] == "0.001" and params["SEED"] == "42" and params["MAX_STEPS"] == "-1"
    assert tags["deepe.method"] == "SFT-Demo" and tags["deepe.base_model"] == "tiny"
    assert tags["deepe.status"] == "succeeded" and tags["deepe.job_id"] == str(job.id)
    assert tags["deepe.dataset_sha256"] == job.provenance["dataset"]["sha256"]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == sorted(LOSSES.items())
    assert [m.value for m in client.get_metric_history(run.info.run_id, "rewards/format/mean")] == [0.5] * 3
    assert {a.path for a in client.list_artifacts(run.info.run_id, "record")} == {"record/training.ipynb"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model_card")} == {
        "model_card/model_card.json", "model_card/README.md"}
    local = client.download_artifacts(run.info.run_id, "record/training.ipynb", str(tmp_path / "down"))
    assert nbformat.read(local, as_version=4).cells[0].source == "print('trained')"
    # Export again once the run has one more step: the same run, the new step only.
    _log(job.id, {4: 0.5})
    [again] = tracking.export_mlflow([job], uri)
    assert again["run_id"] == exported["run_id"] and not again["created"] and again["metric_points_added"] == 3
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == sorted({**LOSSES, 4: 0.5}.items())
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_export_to_tensorboard_reads_back_without_doubling(workspace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job = _finished_job(LOSSES)
    for _ in range(2):  # a second export rewrites the job's run folder
        [exported] = tracking.export_tensorboard([job], tmp_path / "tb")
    run_dir = Path(exported["dir"])
    assert run_dir == tmp_path / "tb" / f"job{job.id}_{job.name}" and len(list(run_dir.iterdir())) == 1
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"loss", "grad_norm", "rewards/format/mean"} <= set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("loss")] == sorted(LOSSES.items())
    assert {"parameters", "provenance"} <= set(events.Tags()["tensors"])
    table = events.Tensors("parameters")[0].tensor_proto.string_val[0].decode()
    assert "| LEARNING_RATE | 0.0002 |" in table and "| SEED | 42 |" in table


def test_export_all_since_a_date_to_a_file_store(workspace, tmp_path, monkeypatch):
    old = _finished_job({1: 2.0}, finished_at=time.mktime((2020, 1, 1, 12, 0, 0, 0, 0, -1)))
    recent = _finished_job(LOSSES)
    jobs.submit_training("SFT-Demo", "tiny", "demo-sft")  # queued: nothing to export yet
    assert [j.id for j in tracking.select_jobs(all_jobs=True)] == [old.id, recent.id]
    store_dir = tmp_path / "mlruns"
    report = deepe_json("jobs", "export", "--all", "--since", time.strftime("%Y-%m-%d"),
                        "--mlflow", store_dir.as_uri(), "--tensorboard", str(tmp_path / "tb"), "--json")
    assert report["jobs"] == [recent.id] and [r["job"] for r in report["tensorboard"]] == [recent.id]
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when asked to
    client = MlflowClient(tracking_uri=store_dir.as_uri())
    [run] = client.search_runs([report["mlflow"][0]["experiment_id"]])
    assert run.data.tags["deepe.job_uuid"] == recent.uuid
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")) == \
        sorted(LOSSES.items())


def test_export_says_what_is_missing(workspace, monkeypatch):
    done = deepe("jobs", "export", "1", check=False)
    assert done.returncode == 2 and "--mlflow" in done.stderr and "--tensorboard" in done.stderr
    with pytest.raises(DeepeError, match="--since goes with --all"):
        tracking.select_jobs([1], since="2026-01-01")
    with pytest.raises(DeepeError, match="a date like"):
        tracking.select_jobs(all_jobs=True, since="yesterday")
    with pytest.raises(DeepeError, match="looks like a job id"):
        tracking.export_mlflow([], "3")
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(DeepeError, match=r"needs the tensorboard package.*pip install 'deepe-widgets\[tracking\]'"):
        tracking.export_tensorboard([], "tb")


@pytest.mark.training
def test_a_built_in_logs_live_to_mlflow_and_tensorboard_with_settings_from_the_environment(workspace, tmp_path):
    """REPORT_TO hands trackers to the trainer; where they write comes from the environment."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri, tb = f"sqlite:///{tmp_path / 'live.db'}", tmp_path / "tb"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "live-sft", "TENSORBOARD_LOGGING_DIR": str(tb)}
    done = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
                      *FAST_PARAMS, "--param", "report_to=mlflow,tensorboard", "--wait", "--json", env=env)
    assert done["status"] == "succeeded", done["error"]
    ours = dict(zip(*metrics.metric_series([done["id"]])[done["id"]]["loss"]))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("live-sft")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == f"deepe-job-{done['id']}" and run.data.params["learning_rate"] == "0.005"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert sorted(history) == sorted(ours) == list(range(1, 7))
    assert all(abs(history[s] - ours[s]) < 1e-6 for s in ours)
    [events] = {p.parent for p in tb.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == list(range(1, 7))
    # tracker settings never become parameters of the record
    assert not any("MLFLOW" in key.upper() for key in jobs.get_job(done["id"]).params)


def test_an_unknown_tracker_is_named():
    from deepe_widgets.runtime import trackers

    assert trackers("none") == trackers("") == "none"
    assert trackers(" MLflow, tensorboard ") == ["mlflow", "tensorboard"]
    with pytest.raises(ValueError, match="no tracker named mlfow.*mlflow"):
        trackers("mlfow")
