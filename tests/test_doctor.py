"""doctor: what a crash or a manual change leaves behind is found, and `--fix` fixes what it can."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from deepe_widgets import config, deployments, doctor, jobs, models, store

from helpers import deepe


def _job(status=store.JobStatus.RUNNING, lease_in: float = -100.0, attempt: int = 1, **fields) -> int:
    with store.session() as s:
        job = store.Job(method="sft-demo", status=status, attempt=attempt, max_attempts=3,
                        lease_owner="worker-gone", lease_expires=time.time() + lease_in, **fields)
        s.add(job)
        s.flush()
        return int(job.id)


def _problems() -> list[str]:
    return [finding.problem for finding in doctor.check()]


def test_a_fresh_workspace_has_no_problems(home):
    assert doctor.check() == []


def test_a_stale_lease_is_found_and_fix_requeues_the_job(home):
    stale = _job()
    held = _job(lease_in=+300)  # a live worker's lease: not touched
    found = doctor.check()
    assert [f.problem for f in found] == [f"job {stale} is marked running but no worker holds its lease"]
    assert found[0].apply is not None

    doctor.fix(found)

    assert found[0].fixed
    assert jobs.get_job(stale).status == store.JobStatus.QUEUED
    assert jobs.get_job(held).status == store.JobStatus.RUNNING
    assert doctor.check() == []


def test_a_stale_lease_on_the_last_attempt_fails_the_job(home):
    stale = _job(attempt=3)
    doctor.fix(doctor.check())
    job = jobs.get_job(stale)
    assert job.status == store.JobStatus.FAILED
    assert "gave up after 3 attempts" in job.error


def test_an_orphaned_run_folder_is_moved_aside_and_a_job_s_folder_kept(home):
    orphan = config.runs_dir() / "20260101-000000-orphan"
    orphan.mkdir()
    (orphan / "training.log").write_text("left behind")
    kept = config.runs_dir() / "20260101-000000-kept"
    kept.mkdir()
    _job(status=store.JobStatus.SUCCEEDED, run_dir=str(kept))

    assert _problems() == [f"run folder {orphan} has no job"]
    doctor.fix(doctor.check())

    moved = config.workspace_dir("orphaned-runs") / orphan.name
    assert (moved / "training.log").read_text() == "left behind"
    assert not orphan.exists() and kept.is_dir()
    assert doctor.check() == []


def test_a_model_whose_folder_is_gone_is_unregistered(home, tmp_path):
    with store.session() as s:
        s.add(store.ModelRecord(name="vanished", path=str(tmp_path / "deleted-model")))
        s.add(store.ModelRecord(name="present", path=str(tmp_path)))
    assert _problems() == [f"base model 'vanished' points at {tmp_path / 'deleted-model'}, which is gone"]
    doctor.fix(doctor.check())
    assert [m.name for m in models.list_models()] == ["present"]


def test_a_live_model_whose_server_is_gone_is_marked_failed(home, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    with store.session() as s:
        s.add(store.ModelRecord(name="tiny-live", kind=store.ModelKind.LIVE, path=str(tmp_path), parent="tiny",
                                meta={"status": deployments.LiveStatus.LIVE, "server_host": socket.gethostname(),
                                      "pid": gone.pid}))
    assert _problems() == [f"live model 'tiny-live' is marked live but its server (pid {gone.pid}) is gone"]
    doctor.fix(doctor.check())
    assert models.get_model("tiny-live").meta["status"] != deployments.LiveStatus.LIVE
    assert doctor.check() == []


def test_a_method_with_a_missing_kernel_and_file_needs_a_person(home, tmp_path):
    with store.session() as s:
        s.add(store.Method(name="mine", stages={"training": {"file": str(tmp_path / "gone.ipynb"),
                                                             "kernel": "no-such-kernel"}}))
    found = doctor.check()
    assert [f.problem for f in found] == [
        "method 'mine' runs its training stage in kernel 'no-such-kernel', which is not installed",
        f"method 'mine' lost its training file {tmp_path / 'gone.ipynb'}"]
    assert "python -m ipykernel install --user --name no-such-kernel" in found[0].fix
    doctor.fix(found)
    assert not any(f.fixed for f in found)  # nothing the workbench can do alone


def test_cli_doctor_fix_reports_fixed_and_exits_0_and_1_while_a_person_must_act(home, tmp_path):
    stale = _job()
    done = deepe("doctor", "--fix", "--json", check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"problem": f"job {stale} is marked running but no worker holds its lease",
                                        "fix": "requeue it (or fail it after its last attempt)", "fixable": True,
                                        "fixed": True}]
    with store.session() as s:
        s.add(store.Method(name="mine", stages={"training": {"file": str(tmp_path), "kernel": "no-such-kernel"}}))
    done = deepe("doctor", "--fix", check=False, timeout=60)
    assert done.returncode == 1
    assert "[needs you]" in done.stdout
