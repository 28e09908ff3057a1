"""Queue, worker, runner and cancel on real kernels, with light notebooks."""

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from deepe_widgets import jobs, methods, metrics, store, worker
from deepe_widgets.worker import Worker

from helpers import deepe
from stage_notebooks import plain_notebook


@pytest.fixture
def plain_method(workspace, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    return "plain"


def run_worker_until_idle(idle: float = 1.0) -> None:
    Worker(idle_exit=idle, poll_seconds=0.1).run()


def test_jobs_run_in_submit_order(plain_method):
    ids = [jobs.submit_training(plain_method, "tiny", "demo-sft").id for _ in range(3)]
    run_worker_until_idle()
    done = [jobs.get_job(i) for i in ids]
    assert [j.status for j in done] == ["succeeded"] * 3
    started = [float((Path(j.run_dir) / "started.txt").read_text()) for j in done]
    assert started == sorted(started)
    assert all(j.attempt == 1 for j in done)


def test_failed_stage_keeps_record_and_names_the_cell(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft", params={"fail": "true"})
    run_worker_until_idle()
    job = jobs.get_job(job.id)
    assert job.status == "failed"
    assert job.error_detail["ename"] == "RuntimeError"
    assert "failed on purpose" in job.error and "(cell" in job.error
    record = nbformat.read(Path(job.run_dir) / "training.ipynb", as_version=4)
    failing = record.cells[job.error_detail["cell"]]
    assert "train_and_save" in failing.source and failing.outputs[-1]["ename"] == "RuntimeError"
    assert record.metadata["deepe"]["status"] == "failed"
    log = (Path(job.run_dir) / "training.log").read_text()
    assert "training failed: RuntimeError" in log and "stage training failed" in log


def test_record_metadata_names_kernel_python_and_versions(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    run_worker_until_idle()
    record = nbformat.read(Path(jobs.get_job(job.id).run_dir) / "training.ipynb", as_version=4)
    meta = record.metadata["deepe"]
    assert meta["kernel"] == "python3" and meta["python"] == sys.executable
    assert set(meta["packages"]) >= {"torch", "transformers", "peft", "trl", "deepe-widgets"}
    assert meta["packages"]["deepe-widgets"] == "0.1.0"
    injected = [c for c in record.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f"JOB_ID = {job.id}" in injected[0].source


def test_stage_runs_in_the_kernel_it_names(plain_method, tmp_path, monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / "second-env"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Second env", "language": "python", "env": {"DEEPE_KERNEL_MARKER": "second-env"}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    methods.register_method("plain2", {"training": (plain_notebook(tmp_path / "p2.ipynb"), "second-env")})
    job = jobs.submit_training("plain2", "tiny", "demo-sft")
    run_worker_until_idle()
    job = jobs.get_job(job.id)
    assert job.status == "succeeded"
    assert (Path(job.run_dir) / "output" / "model.txt").read_text() == "second-env"
    assert "plain trainer running in second-env" in (Path(job.run_dir) / "training.log").read_text()


def test_submit_refuses_a_kernel_that_is_gone(plain_method, tmp_path, monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / "short-lived"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "x",
                                                  "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    methods.register_method("plain3", {"training": (plain_notebook(tmp_path / "p3.ipynb"), "short-lived")})
    (spec / "kernel.json").unlink()
    from deepe_widgets.errors import DeepeError

    with pytest.raises(DeepeError, match="kernel 'short-lived' is not installed; installed kernels:"):
        jobs.submit_training("plain3", "tiny", "demo-sft")


def _children_running(*needles: str) -> list[psutil.Process]:
    """This process's live descendants whose command line holds one of `needles` (one that exits while
    they are read is not counted: a zombie has no command line)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if any(needle in line for needle in needles):
            found.append(proc)
    return found


def _kernel_pids(worker_pid: int) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            if "ipykernel_launcher" in " ".join(proc.info["cmdline"] or []) and \
                    (proc.environ().get("DEEPE_HOME") == os.environ["DEEPE_HOME"]):
                found.append(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            pass
    return found


def test_cancel_kills_the_kernel_and_keeps_the_partial_record(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft", params={"sleep": "120"})
    worker.ensure_worker()  # in the background, as the CLI and the widgets start it
    deadline = time.monotonic() + 60
    while not (Path(job.run_dir) / "started.txt").exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    assert jobs.get_job(job.id).status == "running"
    kernels = _kernel_pids(0)
    assert kernels, "no stage kernel found"
    jobs.cancel_job(job.id)
    final = jobs.wait_for(job.id, timeout=10, poll=0.1)
    assert final.status == "cancelled"  # the timing is measured in benchmarks/, not here
    time.sleep(0.5)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in kernels)
    record = nbformat.read(Path(final.run_dir) / "training.ipynb", as_version=4)
    assert any(c.get("execution_count") for c in record.cells)  # the partial record stays


def test_cancelling_a_queued_or_finished_job(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    assert jobs.cancel_job(job.id).status == "cancelled"
    from deepe_widgets.errors import DeepeError

    with pytest.raises(DeepeError, match="already cancelled"):
        jobs.cancel_job(job.id)
    done = deepe("jobs", "cancel", str(job.id), check=False)
    assert done.returncode == 2 and done.stderr.strip().startswith("error: job") and "Traceback" not in done.stderr


def test_a_finished_job_is_removed_with_its_metrics_and_run_folder(plain_method):
    from deepe_widgets.errors import DeepeError
    from deepe_widgets.runtime import MetricSink

    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    with pytest.raises(DeepeError, match=f"job {job.id} .* is queued; only a finished job can be removed"):
        jobs.delete_job(job.id)
    refused = deepe("jobs", "delete", str(job.id), check=False)
    assert refused.returncode == 2 and "cancel it first" in refused.stderr and "Traceback" not in refused.stderr
    jobs.cancel_job(job.id)
    sink = MetricSink(job.id)
    sink.add(1, {"loss": 2.5}, 0.1)
    sink.close()
    assert metrics.metrics_for(job.id) and Path(job.run_dir).is_dir()

    done = deepe("jobs", "delete", str(job.id))
    assert f"removed job {job.id} ({job.name}, cancelled) and its run folder" in done.stdout
    assert jobs.list_jobs() == [] and metrics.metrics_for(job.id) == [] and not Path(job.run_dir).exists()
    gone = deepe("jobs", "delete", str(job.id), check=False)
    assert gone.returncode == 2 and f"no job with id {job.id}" in gone.stderr


def test_a_job_a_model_came_from_is_kept_until_the_model_goes(plain_method, tmp_path):
    from deepe_widgets import models
    from deepe_widgets.errors import DeepeError

    from helpers import customized_model

    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    jobs.cancel_job(job.id)
    made = customized_model(job, "tiny_cards", tmp_path)
    with pytest.raises(DeepeError, match="made the model tiny_cards, whose card points at it; delete it first"):
        jobs.delete_job(job.id)
    assert jobs.get_job(job.id).status == "cancelled" and Path(job.run_dir).is_dir()
    models.delete_model(made.name)
    assert jobs.delete_job(job.id) == Path(job.run_dir)


def test_a_worker_without_the_lease_cannot_finish_the_job(plain_method):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    claimed = jobs.claim_next_job("worker-a")
    assert claimed.id == job.id and claimed.status == "running"
    assert jobs.claim_next_job("worker-b") is None
    assert not jobs.finish_job(job.id, "worker-b", "succeeded")
    assert jobs.renew_lease(job.id, "worker-a")
    assert jobs.finish_job(job.id, "worker-a", "succeeded")
    assert jobs.get_job(job.id).status == "succeeded"
    assert not jobs.finish_job(job.id, "worker-a", "failed")


def test_expired_lease_is_requeued_then_failed_after_max_attempts(plain_method, monkeypatch):
    job = jobs.submit_training(plain_method, "tiny", "demo-sft")
    for attempt in range(1, 4):
        claimed = jobs.claim_next_job(f"dead-worker-{attempt}")
        assert claimed.attempt == attempt
        with store.get_engine().begin() as conn:  # the worker died: its lease runs out
            conn.execute(store.Job.__table__.update().values(lease_expires=0))
        assert jobs.reap_expired() == [job.id]
    final = jobs.get_job(job.id)
    assert final.status == "failed" and "gave up after 3 attempts" in final.error


def test_metrics_are_written_by_the_sink_on_its_own(workspace):
    from deepe_widgets.runtime import MetricSink

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    sink = MetricSink(job.id)
    try:
        deadline = time.monotonic() + 30
        sink.add(1, {"loss": 2.5, "learning_rate": 1e-4, "note": "text is skipped"}, 0.1)
        while not metrics.metrics_for(job.id):  # no flush(): its thread writes them
            assert time.monotonic() < deadline, "the sink never wrote its rows"
            time.sleep(0.05)
        sink.add(1, {"loss": 9.9}, 0.1)  # a retried step never duplicates a row
        sink.flush()
        rows = [(m.step, m.name, m.value) for m in metrics.metrics_for(job.id)]
        assert rows == [(1, "loss", 2.5), (1, "learning_rate", 1e-4)]
    finally:
        sink.close()


def test_a_new_job_never_inherits_stray_metric_rows(workspace):
    from deepe_widgets.runtime import MetricSink

    sink = MetricSink(1)  # a writer for a job id no job has yet
    sink.add(1, {"loss": 9.0}, None)
    sink.close()
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    assert job.id == 1 and metrics.metrics_for(job.id) == []


def test_a_waiting_worker_runs_the_next_job_in_a_kernel_started_ahead(workspace, tmp_path):
    import threading

    from deepe_widgets import config

    nb = nbformat.read(plain_notebook(tmp_path / "ahead.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        'import os\nprint("cwd", os.getcwd())\nos.write(1, b"written to the kernel process stdout\\n")'))
    nbformat.write(nb, tmp_path / "ahead.ipynb")
    methods.register_method("ahead", {"training": (tmp_path / "ahead.ipynb", "python3")})
    worker = Worker(idle_exit=None, poll_seconds=0.1)  # long-lived: keeps a kernel started ahead
    thread = threading.Thread(target=worker.run)
    thread.start()
    standby_log = config.workspace_dir("logs") / "standby-runners.log"
    try:
        deadline = time.monotonic() + 60
        while "ready in" not in (standby_log.read_text() if standby_log.exists() else ""):
            assert time.monotonic() < deadline, "no kernel was started ahead"
            time.sleep(0.1)
        standby = _children_running("--standby")
        assert len(standby) == 1
        job = jobs.wait_for(jobs.submit_training("ahead", "tiny", "demo-sft").id, timeout=120)
        assert job.status == "succeeded", job.error
        run_dir = Path(job.run_dir)
        log = (run_dir / "training.log").read_text()
        assert "started ahead of the job" in log.splitlines()[0]
        assert "written to the kernel process stdout" in log  # the kernel's own output reached the stage log
        record = nbformat.read(run_dir / "training.ipynb", as_version=4)
        printed = [o["text"] for c in record.cells for o in c.get("outputs", []) if o.get("name") == "stdout"]
        assert any(f"cwd {run_dir}\n" in text for text in printed)  # moved into its run folder
        assert record.metadata["deepe"]["python"] == sys.executable
        assert not standby[0].is_running()  # the job's kernel was its own, and it is gone
        # cancelling a job that runs in a kernel started ahead stops that kernel too
        slow = jobs.submit_training("ahead", "tiny", "demo-sft", params={"sleep": "60"})
        deadline = time.monotonic() + 60
        while "plain trainer running" not in ((Path(slow.run_dir) / "training.log").read_text()
                                              if (Path(slow.run_dir) / "training.log").exists() else ""):
            assert time.monotonic() < deadline, "the slow job never started"
            time.sleep(0.1)
        assert "started ahead" in (Path(slow.run_dir) / "training.log").read_text().splitlines()[0]
        kernels = _children_running("ipykernel")
        jobs.cancel_job(slow.id)
        assert jobs.wait_for(slow.id, timeout=30).status == "cancelled"
        assert psutil.wait_procs(kernels, timeout=10)[1] == []
    finally:
        worker.stop()
        thread.join(timeout=30)
    # the runner started ahead for the next job stops with the worker, kernel and all
    left = _children_running("ipykernel", "--standby")
    assert not left
