"""The worker and its executor: it survives any one job, publishes only under its lease,
and a stop hands the running job back to the queue after a checkpoint."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import jobs, methods, metrics, models, store, worker
from deepe_widgets.executors.local import LocalExecutor
from deepe_widgets.worker import Worker

from helpers import BOTH_BACKENDS, deepe, slow_template_notebook, wait_until
from stage_notebooks import plain_notebook


@pytest.fixture
def plain_method(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    return "plain"


def test_a_job_whose_model_cannot_be_registered_fails_once_and_the_worker_goes_on(plain_method):
    # The artifact name is <base>_<train name>_<date>_<uuid4>: a 120-character train name makes it
    # longer than a model name may be. Submit refuses such a name, so it is written behind its back:
    # registering the trained model then raises inside the job.
    doomed = jobs.submit_training(plain_method, "tiny", "demo-sft")
    table = store.Job.__table__
    with store.get_engine().begin() as conn:
        conn.execute(table.update().where(table.c.id == doomed.id).values(name="n" * 120))
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
    methods.register_method("slow", {"training": (slow_template_notebook(tmp_path / "slow.ipynb", 0.3), "python3")})
    job = jobs.submit_training("slow", "tiny", "demo-sft", params={
        "max_steps": "12", "save_steps": "100", "batch_size": "4", "max_seq_length": "64", "learning_rate": "5e-3"})
    worker.ensure_worker()
    wait_until(lambda: any(m.step >= 4 for m in metrics.metrics_for(job.id)), 120, "step 4")
    [running] = worker.live_workers()
    done = deepe("worker", "stop")  # SIGTERM: checkpoint, then back to the queue
    assert "asked 1 worker" in done.stdout
    wait_until(lambda: jobs.get_job(job.id).status == "queued", 60, "the job to go back to the queue")
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
    wait_until(lambda: any("started" in p.read_text() for p in (workspace / "logs").glob("worker-*.log")), 30,
               "the worker to start")
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not worker._alive(pid), 30, "the worker to exit")
    assert worker.live_workers() == []  # it unregistered itself


def _worker_logs(home: Path) -> list[Path]:
    return sorted((home / "logs").glob("worker-*.log"))


def _started_worker_id(home: Path) -> str:
    """The id the started worker logs for itself."""
    def find():
        for path in _worker_logs(home):
            found = re.search(r"worker (\S+) started", path.read_text())
            if found:
                return found.group(1)
    return wait_until(find, 60, "the worker to log its start")


ENSURE_AT_ONCE = """
import json, os, sys, time
from deepe_widgets import store, worker
store.get_engine()  # connected and migrated before the race
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
print(json.dumps(worker.ensure_worker()), flush=True)
"""


@BOTH_BACKENDS
def test_two_submitters_at_the_same_instant_start_exactly_one_worker(home, tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", ENSURE_AT_ONCE, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for _ in range(4)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()  # all four call ensure_worker() at this instant
        results = [json.loads(proc.stdout.readline()) for proc in procs]
        assert [proc.wait(timeout=60) for proc in procs] == [0] * 4
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    started = [pid for pid in results if pid is not None]
    assert len(started) == 1, results
    assert len(_worker_logs(home)) == 1  # one process was started, not one per submitter
    [row] = worker.live_workers()
    assert row.pid == started[0]
    # The started worker took the id registered for it, so its heartbeats keep that row alive.
    assert _started_worker_id(home) == row.id
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}-[0-9a-f]{{32}}", row.id)
    assert worker.ensure_worker() is None  # a later submit finds it


def test_stale_worker_rows_never_stop_a_new_worker(home):
    host = socket.gethostname()
    stale = [f"{host}-{os.getpid()}", f"{host}-{os.getpid() + 1}"]  # ids as older versions made them
    with store.session() as s:
        for worker_id in stale:
            s.add(store.Worker(id=worker_id, pid=os.getpid(), host=host, heartbeat_at=time.time() - 3600))
    pid = worker.ensure_worker()
    assert pid is not None  # the dead workers' rows do not count as alive
    [row] = worker.live_workers()
    assert row.pid == pid
    with store.read_session() as s:
        assert [w.id for w in s.exec(store.select(store.Worker))] == [row.id]  # the stale rows are gone
    # A worker whose own row aged out while it ran (a long database outage) takes it up again.
    with store.session() as s:
        s.add(store.Worker(id=stale[0], pid=os.getpid(), host=host, heartbeat_at=time.time() - 3600))
    again = Worker(worker_id=stale[0], quick_slot=False)
    again._beat()
    assert sorted(w.id for w in worker.live_workers()) == sorted([row.id, stale[0]])
    with store.session() as s:  # its pid is this test's: the fixture that stops workers must not see it
        s.delete(s.get(store.Worker, stale[0]))


def test_deepe_worker_stop_finds_a_foreground_worker_through_psutil(home):
    # `deepe worker` in a shell: its command line does not name deepe_widgets.worker.
    log_path = home.parent / "foreground.log"
    with open(log_path, "wb") as out:
        fg = subprocess.Popen([sys.executable, "-m", "deepe_widgets.cli", "worker"], stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: [w for w in worker.live_workers() if w.pid == fg.pid], 60, "the worker to register")
        assert worker._is_worker_process(fg.pid) and worker._alive(fg.pid)
        assert not worker._is_worker_process(os.getpid())  # a pid reused by another process is left alone
        done = deepe("worker", "stop")
        assert "asked 1 worker(s) to stop" in done.stdout and str(fg.pid) in done.stdout
        assert fg.wait(timeout=30) == 0
        assert not worker._alive(fg.pid)
    finally:
        fg.kill()
        fg.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert worker._alive(sleeper.pid)
    sleeper.kill()
    wait_until(lambda: not worker._alive(sleeper.pid), 10, "the killed process to count as gone")  # a zombie
    sleeper.wait()
    source = Path(worker.__file__).read_text()
    assert 'open(f"/proc' not in source  # macOS has none: every process check goes through psutil


def _saving_notebook(path: Path) -> Path:
    """A saving stage that writes a file and is done (saving stages take only parameters)."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('MODEL_PATH = ""\nADAPTER_PATH = ""\nDTYPE = "float32"\nOUTPUT_DIR = "output"\n'
                                  "JOB_ID = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nos.makedirs(OUTPUT_DIR, exist_ok=True)\n"
                                  "open(os.path.join(OUTPUT_DIR, 'merged.txt'), 'w').write(ADAPTER_PATH)")])
    nbformat.write(nb, path)
    return path


def test_a_save_job_does_not_wait_behind_a_long_training(workspace, tmp_path):
    methods.register_method("plainsave", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3"),
                                          "saving": (_saving_notebook(tmp_path / "save.ipynb"), "python3")},
                            lifecycle="complete")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    models.add_model("adapter", adapter, kind="customized", parent="tiny", method="plainsave")
    training = jobs.submit_training("plainsave", "tiny", "demo-sft", params={"sleep": "300"})
    save = jobs.submit_save("adapter")  # queued behind the training
    worker.ensure_worker()
    try:
        wait_until(lambda: (Path(training.run_dir) / "started.txt").exists(), 90, "the training to start")
        done = jobs.wait_for(save.id, timeout=120, poll=0.2)
        assert done.status == "succeeded", done.error
        assert jobs.get_job(training.id).status == "running"  # the save ran beside it, not after it
        assert (Path(done.run_dir) / "output" / "merged.txt").read_text() == str(adapter.resolve())
        [complete] = models.models_of_job(save.id)
        assert complete.kind == "complete"
        [row] = worker.live_workers()
        assert jobs.get_job(training.id).lease_owner == row.id  # the training holds the first slot
        [log_path] = _worker_logs(workspace)
        assert f"job {save.id} (save, attempt 1) started in slot {row.id}/1" in log_path.read_text()
    finally:
        jobs.cancel_job(training.id)
    assert jobs.wait_for(training.id, timeout=30).status == "cancelled"
