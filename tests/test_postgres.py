"""The store, queue and worker on a real PostgreSQL server (and SQLite, side by side)."""

import pytest

from deepe_widgets import config, jobs, methods, metrics, store, worker
from deepe_widgets.worker import Worker

from helpers import BOTH_BACKENDS
from stage_notebooks import plain_notebook

pytestmark = BOTH_BACKENDS


def test_backend_is_the_configured_one(workspace, request):
    dialect = store.get_engine().dialect.name
    assert dialect == ("postgresql" if "postgresql" in request.node.callspec.id else "sqlite")
    assert config.db_url().startswith("postgresql+psycopg" if dialect == "postgresql" else "sqlite")


def test_queue_worker_and_metrics(workspace, tmp_path):
    from deepe_widgets.runtime import MetricSink

    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    ids = [jobs.submit_training("plain", "tiny", "demo-sft").id for _ in range(2)]
    failing = jobs.submit_training("plain", "tiny", "demo-sft", params={"fail": "1"})
    Worker(idle_exit=1.0, poll_seconds=0.1).run()
    assert [jobs.get_job(i).status for i in ids] == ["succeeded", "succeeded"]
    assert jobs.get_job(failing.id).error_detail["ename"] == "RuntimeError"
    sink = MetricSink(ids[0])
    sink.add(1, {"loss": 1.5}, 0.5)
    sink.add(1, {"loss": 7.0}, 0.5)
    sink.close()
    assert [(m.step, m.name, m.value) for m in metrics.metrics_for(ids[0])] == [(1, "loss", 1.5)]


def test_lease_compare_and_set(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft")
    assert jobs.claim_next_job("a").id == job.id and jobs.claim_next_job("b") is None
    assert not jobs.finish_job(job.id, "b", "succeeded")
    with store.get_engine().begin() as conn:
        conn.execute(store.Job.__table__.update().values(lease_expires=0))
    assert jobs.reap_expired() == [job.id] and jobs.get_job(job.id).status == "queued"
    assert not jobs.finish_job(job.id, "a", "succeeded")  # the old owner lost it


@pytest.mark.training
def test_sft_training_end_to_end(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={
        "max_steps": "4", "max_seq_length": "64", "save_steps": "0", "learning_rate": "5e-3"})
    worker.ensure_worker()  # a background worker, as the CLI starts one
    final = jobs.wait_for(job.id, timeout=240)
    assert final.status == "succeeded", final.error
    assert [m.step for m in metrics.metrics_for(job.id) if m.name == "loss"] == [1, 2, 3, 4]
    assert jobs.job_summary(final)["artifacts"][0]["kind"] == "customized"
