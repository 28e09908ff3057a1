"""The worker and its executor: it survives any one job, publishes only under its lease,
and a stop hands the running job back to the queue after a checkpoint."""

import os
import signal
import time
from pathlib import Path

import pytest

from deepe_widgets import jobs, methods, metrics, models, store, worker
from deepe_widgets.executors import LocalExecutor
from deepe_widgets.worker import Worker

from conftest import deepe
from stage_notebooks import plain_notebook
from test_reliability import _slow_template_notebook, _wait


@pytest.fixture
def plain_method(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    return "plain"


def test_a_job_whose_model_cannot_be_registered_fails_once_and_the_worker_goes_on(plain_method):
    # The artifact name is <base>_<train name>_<date>_<uuid4>: a 120-character train name makes it
    # longer than a model name may be, so registering the trained model raises inside the job.
    doomed = jobs.submit_training(plain_method, "tiny", "demo-sft", name="n" * 120)
    fine = jobs.submit_training(plain_method, "tiny", "demo-sft")
    Worker(idle_exit=1.0, poll_seconds=0.05).run()  # one worker, both jobs
    doomed, fine = jobs.get_job(doomed.id), jobs.get_job(fine.id)
    assert doomed.status == "failed" and doomed.attempt == 1
    assert "could not be registered" in doomed.error and "at most 128 characters" in doomed.error
    assert models.models_of_job(doomed.id) == []  # nothing half published
    assert fine.status == "succeeded" and len(models.models_of_job(fine.id)) == 1


def test_a_worker_that_lost_its_lease_publishes_nothing(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    claimed = jobs.claim_next_job("worker-a")
    output = Path(claimed.run_dir) / "output"
    output.mkdir()
    (output / "adapter_config.json").write_text("{}")
    # The lease ran out and worker-b took the job over (as the reaper and a claim would).
    table = store.Job.__table__
    with store.get_engine().begin() as conn:
        conn.execute(table.update().where(table.c.id == job.id).values(lease_owner="worker-b"))
    assert LocalExecutor("worker-a", warm_kernels=0).on_complete(claimed) is None
    assert models.models_of_job(job.id) == []
    assert jobs.get_job(job.id).status == "running"  # still worker-b's to finish
    assert LocalExecutor("worker-b", warm_kernels=0).on_complete(jobs.get_job(job.id)) == "succeeded"
    assert [m.kind for m in models.models_of_job(job.id)] == ["customized"]


def test_claim_counts_attempts_and_leases_on_the_database_clock(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    claimed = jobs.claim_next_job("worker-a")
    assert claimed.attempt == 1 and claimed.lease_owner == "worker-a"
    with store.get_engine().connect() as conn:
        db_now = conn.execute(store.db_now().select()).scalar()
    assert abs(db_now - time.time()) < 5  # the SQL clock speaks epoch seconds
    assert 0 < claimed.lease_expires - db_now <= 31
    assert jobs.hand_back(job.id, "worker-a") and jobs.get_job(job.id).attempt == 0  # a hand-back costs none


@pytest.mark.training
def test_stopping_a_worker_hands_the_job_back_after_a_checkpoint_and_it_resumes(workspace, tmp_path):
    methods.register_method("slow", {"training": (_slow_template_notebook(tmp_path / "slow.ipynb", 0.3), "python3")})
    job = jobs.submit_training("slow", "tiny", "demo-sft", params={
        "max_steps": "12", "save_steps": "100", "batch_size": "4", "max_seq_length": "64", "learning_rate": "5e-3"})
    worker.ensure_worker()
    _wait(lambda: any(m.step >= 4 for m in metrics.metrics_for(job.id)), 120, "step 4")
    [running] = worker.live_workers()
    done = deepe("worker", "stop")  # SIGTERM: checkpoint, then back to the queue
    assert "asked 1 worker" in done.stdout
    _wait(lambda: jobs.get_job(job.id).status == "queued", 60, "the job to go back to the queue")
    assert not worker._alive(running.pid)
    handed = jobs.get_job(job.id)
    assert handed.attempt == 0 and handed.error is None
    checkpoints = sorted(Path(handed.run_dir, "output").glob("checkpoint-*"))
    assert checkpoints, "no checkpoint was saved on the way out"  # save_steps=100: only the stop saved one
    log = Path(handed.run_dir, "training.log").read_text()
    assert "handing the job back" in log
    worker.ensure_worker()
    final = jobs.wait_for(job.id, timeout=180)
    assert final.status == "succeeded", final.error
    assert final.attempt == 1  # the hand-back did not count as a failed attempt
    log = Path(final.run_dir, "training.log").read_text()
    assert f"resuming from {checkpoints[-1]}" in log
    losses = [m.step for m in metrics.metrics_for(job.id) if m.name == "loss"]
    assert sorted(losses) == list(range(1, 13)), losses  # no gap, no duplicate
    assert Path(final.run_dir, "training.attempt1.ipynb").exists()  # the first record is kept


def test_a_stop_signal_to_an_idle_worker_ends_it_at_once(workspace):
    pid = worker.ensure_worker()
    _wait(lambda: any("started" in p.read_text() for p in (workspace / "logs").glob("worker-*.log")), 30,
          "the worker to start")
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: not worker._alive(pid), 30, "the worker to exit")
    assert worker.live_workers() == []  # it unregistered itself
