"""What happens when things go wrong: worker death, kernel death, the submitter going away,
many workers and submitters at once."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from deepe_widgets import jobs, methods, metrics, worker
from deepe_widgets.errors import DeepeError

from helpers import deepe_json, slow_template_notebook, wait_lease_expired, wait_until
from stage_notebooks import plain_notebook


@pytest.mark.training
def test_killed_worker_job_resumes_from_checkpoint(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPE_LEASE_SECONDS", "3")
    methods.register_method("slow", {"training": (slow_template_notebook(tmp_path / "slow.ipynb", 0.4), "python3")})
    job = jobs.submit_training("slow", "tiny", "demo-sft", params={
        "max_steps": "12", "save_steps": "3", "batch_size": "4", "max_seq_length": "64", "learning_rate": "5e-3"})
    worker.ensure_worker()
    wait_until(lambda: any(m.step >= 7 for m in metrics.metrics_for(job.id)), 120, "step 7")
    [running] = worker.live_workers()
    os.kill(running.pid, signal.SIGKILL)  # no chance to clean up
    # The stage runner and kernel go with it, the lease runs out, a new worker requeues and resumes.
    wait_until(lambda: not psutil.pid_exists(running.pid)
               or psutil.Process(running.pid).status() == psutil.STATUS_ZOMBIE, 10, "the worker to die")
    assert worker.live_workers() == []  # its heartbeat is still fresh, but its process is gone
    wait_lease_expired(job.id)
    worker.ensure_worker()
    final = jobs.wait_for(job.id, timeout=180)
    assert final.status == "succeeded", final.error
    assert final.attempt == 2
    log = (Path(final.run_dir) / "training.log").read_text()
    assert "resuming from" in log and "checkpoint-" in log
    losses = [m.step for m in metrics.metrics_for(job.id) if m.name == "loss"]
    assert sorted(losses) == list(range(1, 13)), losses  # no gap, no duplicate
    records = jobs.job_summary(final)["records"]
    assert any(r.endswith("training.attempt1.ipynb") for r in records)
    assert any(r.endswith("training.ipynb") for r in records)


def _stage_kernel(home: Path) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel_launcher" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get("DEEPE_HOME") == str(home):
                return proc
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            pass
    return None


def test_killed_kernel_fails_the_job_and_keeps_the_record(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft", params={"sleep": "60"})
    worker.ensure_worker()
    wait_until(lambda: (Path(job.run_dir) / "started.txt").exists(), 60, "the job to start")
    _stage_kernel(workspace).kill()  # as the OOM killer would
    final = jobs.wait_for(job.id, timeout=60)
    assert final.status == "failed"
    assert "kernel died" in final.error and final.error_detail["ename"] == "DeadKernelError"
    record = nbformat.read(Path(final.run_dir) / "training.ipynb", as_version=4)
    assert record.metadata["deepe"]["status"] == "failed"
    assert final.error_detail["cell"] is not None  # how far it got


def test_job_outlives_the_process_that_submitted_it(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    # A notebook kernel (here: a Python process) submits, then goes away at once.
    code = ("from deepe_widgets import jobs, worker; "
            "print(jobs.submit_training('plain', 'tiny', 'demo-sft', params={'sleep': '2'}).id); "
            "worker.ensure_worker()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    job_id = int(done.stdout.strip())
    assert jobs.get_job(job_id).status in ("queued", "running")
    final = jobs.wait_for(job_id, timeout=90)
    assert final.status == "succeeded"
    # Reopening shows its state and metrics, as if nothing happened.
    assert deepe_json("jobs", "show", str(job_id), "--json")["status"] == "succeeded"


# Reads, a write, reads: each submitter's write comes after its own reads and among the others'
# (one job each: eight jobs keep four workers racing for claims; each job is a kernel's start)
SUBMITTER = """
import sys, time
from deepe_widgets import jobs, metrics
ids = []
for submit in (False, True):
    if submit:
        ids.append(jobs.submit_training('plain', 'tiny', 'demo-sft').id)
    for _ in range(5):
        jobs.list_jobs(limit=20)
        [metrics.metrics_for(i) for i in ids]
print(' '.join(map(str, ids)))
"""


def test_four_workers_and_eight_submitters_on_sqlite(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = [subprocess.Popen([sys.executable, "-m", "deepe_widgets.worker", "--idle-exit", "300"],
                                stdout=open(logs / f"w{i}.log", "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL) for i in range(4)]
    try:
        submitters = [subprocess.Popen([sys.executable, "-c", SUBMITTER], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True) for _ in range(8)]
        outputs = [p.communicate(timeout=120) for p in submitters]
        assert all(p.returncode == 0 for p in submitters), [err for _out, err in outputs]
        assert not any("locked" in err for _out, err in outputs)
        ids = sorted(int(i) for out, _err in outputs for i in out.split())
        assert len(ids) == 8 == len(set(ids))
        for job_id in ids:
            final = jobs.wait_for(job_id, timeout=240)
            assert final.status == "succeeded" and final.attempt == 1, (final.status, final.error)
            # exactly once: one record, one start marker, no earlier attempt's record
            assert jobs.job_summary(final)["records"] == [str(Path(final.run_dir) / "training.ipynb")]
        for log in logs.iterdir():
            assert "locked" not in log.read_text()
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)


def _stop_postgres(server) -> None:
    """Stop the test PostgreSQL server as an admin restart does (every connection drops)."""
    subprocess.run(server._as_postgres(str(server.bin / "pg_ctl"), "-D", str(server.data), "-m", "fast", "-w", "stop"),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _start_postgres(server) -> None:
    """Start it again on the same port."""
    subprocess.run(server._as_postgres(str(server.bin / "pg_ctl"), "-D", str(server.data), "-l", str(server.log), "-w",
                                       "-o", f"-h 127.0.0.1 -p {server.port} -k {server.data} -F", "start"),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _restart_postgres(server, down_seconds: float) -> None:
    _stop_postgres(server)
    try:
        time.sleep(down_seconds)
    finally:
        _start_postgres(server)


@pytest.mark.parametrize("home", ["postgresql"], indirect=True)
def test_metric_rows_logged_while_postgresql_is_down_are_written_once_it_is_back(workspace, postgres):
    from deepe_widgets.runtime import MetricSink

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    sink = MetricSink(job.id)
    try:
        sink.add(1, {"loss": 2.0}, 0.1)
        assert sink.drain(30)
        _stop_postgres(postgres)
        try:
            sink.add(2, {"loss": 1.5}, 0.2)
            sink.add(3, {"loss": 1.25}, 0.3)
            assert not sink.flush()  # refused, and kept
        finally:
            threading.Timer(3, _start_postgres, args=(postgres,)).start()
        assert sink.drain(60)  # what the end of a training does: waits for the server, writes them all
    finally:
        sink.close()
    assert [(m.step, m.value) for m in metrics.metrics_for(job.id)] == [(1, 2.0), (2, 1.5), (3, 1.25)]


@pytest.mark.training
@pytest.mark.parametrize("home", ["postgresql"], indirect=True)
def test_a_postgresql_restart_during_training_costs_nothing(workspace, postgres, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DEEPE_LEASE_SECONDS", "12")  # a heartbeat (every 4 s) falls in the outage
    methods.register_method("slow", {"training": (slow_template_notebook(tmp_path / "slow.ipynb", 0.4), "python3")})
    job = jobs.submit_training("slow", "tiny", "demo-sft", params={
        "max_steps": "30", "save_steps": "0", "batch_size": "4", "max_seq_length": "64", "learning_rate": "5e-3"})
    runner = threading.Thread(target=worker.Worker(idle_exit=1.0, poll_seconds=0.1).run, daemon=True)
    with caplog.at_level("INFO", logger="deepe.executor"):
        runner.start()
        wait_until(lambda: [m for m in metrics.metrics_for(job.id) if m.name == "loss"], 180, "the first loss row",
                   poll=0.1)
        _restart_postgres(postgres, down_seconds=5)
        during = max(m.step for m in metrics.metrics_for(job.id) if m.name == "loss")
        runner.join(timeout=240)
    final = jobs.get_job(job.id)
    assert final.status == "succeeded", final.error
    assert final.attempt == 1  # the same worker went on: no requeue, no second run
    assert during < 30, "the restart came after the training: it proves nothing"
    assert [m.step for m in metrics.metrics_for(job.id) if m.name == "loss"] == list(range(1, 31))
    assert "the database did not answer" in caplog.text and "the database answers again" in caplog.text
    # the kernel kept the rows it logged while the server was down, and wrote them after
    assert "metrics written again" in (Path(final.run_dir) / "training.log").read_text()
    assert len(jobs.job_summary(final)["artifacts"]) == 1


@pytest.mark.parametrize("home", ["postgresql"], indirect=True)
def test_a_database_down_longer_than_the_lease_stops_the_stage_and_the_job_runs_again(workspace, postgres,
                                                                                      tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DEEPE_LEASE_SECONDS", "4")
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft", params={"sleep": "10"})
    runner = threading.Thread(target=worker.Worker(idle_exit=1.0, poll_seconds=0.1).run, daemon=True)
    with caplog.at_level("INFO", logger="deepe.executor"):
        runner.start()
        wait_until(lambda: (Path(job.run_dir) / "started.txt").exists(), 120, "the stage to start")
        first_kernel = _stage_kernel(workspace)
        _restart_postgres(postgres, down_seconds=8)  # past the lease: another worker could take the job now
        runner.join(timeout=180)
    final = jobs.get_job(job.id)
    assert "the lease ran out" in caplog.text
    assert not first_kernel.is_running() or first_kernel.status() == psutil.STATUS_ZOMBIE  # stopped, not left
    assert (final.status, final.attempt) == ("succeeded", 2), final.error  # reaped, and run again
    assert (Path(final.run_dir) / "training.attempt1.ipynb").exists()


def test_a_stage_past_its_stage_timeout_is_stopped_and_fails_the_job(workspace, tmp_path):
    from deepe_widgets.executors import stage_timeout
    from deepe_widgets.store import Job, JobKind

    assert stage_timeout(Job(kind=JobKind.TRAIN, params={})) is None  # a training may take days
    assert stage_timeout(Job(kind=JobKind.SAVE, params={})) == 1800
    assert stage_timeout(Job(kind=JobKind.DEPLOY, params={"STAGE_TIMEOUT": 0.0})) is None
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft", params={"sleep": "120", "stage_timeout": "8"})
    began = time.monotonic()
    worker.Worker(idle_exit=0.5, poll_seconds=0.1).run()
    final = jobs.get_job(job.id)
    assert final.status == "failed"
    assert final.error == "stage training ran past STAGE_TIMEOUT=8 s"
    assert final.error_detail["ename"] == "StageTimeout"
    assert time.monotonic() - began < 60
    assert (Path(final.run_dir) / "training.ipynb").exists()  # the record of how far it got stays
    assert _stage_kernel(workspace) is None  # its kernel went with it
    with pytest.raises(DeepeError, match="STAGE_TIMEOUT must not be negative"):
        jobs.submit_training("plain", "tiny", "demo-sft", params={"stage_timeout": "-1"})


def test_an_inference_stage_past_its_timeout_has_its_kernel_stopped(home, tmp_path):
    from deepe_widgets.errors import StageFailed
    from deepe_widgets.runner import execute_stage

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("PROMPTS = []", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\n"
                                          "time.sleep(120)")]
    began = time.monotonic()
    with pytest.raises(StageFailed) as failed:
        execute_stage(nb, stage="inference-complete", kernel="python3", parameters={"PROMPTS": ["hi"]},
                      output_path=tmp_path / "inference.ipynb", log_path=tmp_path / "inference.log", cwd=tmp_path,
                      timeout=10)
    assert (failed.value.ename, failed.value.evalue) == (
        "StageTimeout", "stage inference-complete ran past STAGE_TIMEOUT=10 s")
    assert time.monotonic() - began < 60
    pid = int((tmp_path / "kernel.pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert nbformat.read(tmp_path / "inference.ipynb", as_version=4).metadata["deepe"]["status"] == "failed"
