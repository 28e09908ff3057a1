"""Sharing the GPUs of a host: the lease in the store, and the CUDA_VISIBLE_DEVICES each stage gets.

No GPU is needed: a worker given `--gpus` leases the ids it is told (present or not), and a stage sees
exactly those in its kernel's environment, which is what these tests read back.
"""

import os
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import gpus, jobs, methods, store
from deepe_widgets.errors import DeepeError
from deepe_widgets.executors.base import gpus_needed
from deepe_widgets.executors.ray import stage_environment
from deepe_widgets.worker import Worker

from helpers import deepe
from stage_notebooks import plain_notebook


@pytest.fixture
def gpu_method(workspace, tmp_path):
    """The plain method, whose training also writes its kernel's CUDA_VISIBLE_DEVICES to gpus.txt."""
    path = plain_notebook(tmp_path / "gpus.ipynb")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += ('\nopen(os.path.join(os.path.dirname(os.path.abspath(OUTPUT_DIR)), "gpus.txt"), "w")'
                           '.write(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))\n')
    nbformat.write(nb, path)
    methods.register_method("gpu-plain", {"training": (path, "python3")})
    return "gpu-plain"


def claimed(method: str, owner: str, **params):
    job = jobs.submit_training(method, "tiny", "demo-sft", params=params or None)
    got = jobs.claim_next_job(owner)
    assert got.id == job.id
    return got


def test_two_workers_never_lease_one_card_a_server_keeps_its_own_and_a_dead_workers_is_freed(gpu_method):
    # two workers given --gpus 0 and --gpus 1: each leases its own card
    first, second = claimed(gpu_method, "w0"), claimed(gpu_method, "w1")
    assert gpus.acquire("w0", first.id, 1, ["0"]) == ["0"]
    assert gpus.acquire("w1", second.id, 1, ["1"]) == ["1"]
    # a third stage of a worker that may use both waits: both cards are taken
    third = claimed(gpu_method, "w2")
    assert gpus.acquire("w2", third.id, 1, ["0", "1"]) is None

    # job 1's deploy left a live server holding card 0: it stays leased after the job finished
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert gpus.hand_to_server("w0", first.id, "base_l_abcd", server.pid) == ["0"]
        assert jobs.finish_job(first.id, "w0", store.JobStatus.SUCCEEDED)
        assert gpus.acquire("w2", third.id, 1, ["0", "1"]) is None
        held = {lease.gpu: lease.holder for lease in gpus.leases()}
        assert held == {"0": "server:base_l_abcd", "1": "w1"}
    finally:
        server.kill()
        server.wait()
    # the server ended: its card is free again
    assert gpus.acquire("w2", third.id, 1, ["0", "1"]) == ["0"]

    # worker w1 was killed with -9: its job's lease expires, and its card with it
    table = store.Job.__table__
    with store.get_engine().begin() as conn:
        conn.execute(table.update().where(table.c.id == second.id).values(lease_expires=0.0))
    fourth = claimed(gpu_method, "w3")
    assert gpus.acquire("w3", fourth.id, 1, ["1"]) == ["1"]
    gpus.release("w3", fourth.id)
    gpus.release("w2", third.id)
    assert gpus.leases() == []


def test_the_gpus_a_worker_is_given_and_what_a_stage_then_sees(monkeypatch, workspace):
    assert gpus.parse_gpus("0, 1") == ["0", "1"] and gpus.parse_gpus("none") == []
    monkeypatch.setenv("DEEPE_GPUS", "3")
    assert gpus.worker_gpus() == ["3"] and gpus.worker_gpus("0,2") == ["0", "2"]
    with pytest.raises(DeepeError, match="GPU indexes or UUIDs"):
        gpus.parse_gpus("0,cuda:1")
    # a stage that leased none sees no GPU at all (no DataParallel over cards others use)
    assert gpus.stage_environment([]) == {"CUDA_VISIBLE_DEVICES": ""}
    assert gpus.stage_environment(None) == {}  # a host without GPUs: the environment as it was
    # the worker host's own GPUs never travel to a Ray node
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert "CUDA_VISIBLE_DEVICES" not in stage_environment() and "DEEPE_GPUS" not in stage_environment()
    # the CLI refuses a bad --gpus with one line
    done = deepe("worker", "--gpus", "first", "--idle-exit", "1", check=False)
    assert done.returncode == 2 and done.stderr.strip().startswith("error: --gpus takes")


def test_how_many_gpus_a_stage_leases(gpu_method):
    def job(**fields) -> store.Job:
        return store.Job(**{"kind": "train", "method": gpu_method, "params": {}, **fields})

    assert gpus_needed(job(), 2) == (1, True)  # unset: the GPU when the worker has one
    assert gpus_needed(job(), 0) == (0, True)
    assert gpus_needed(job(params={"NUM_GPUS": 0.0}), 2) == (0, True)  # CPU on purpose
    assert gpus_needed(job(params={"NUM_GPUS": 1.5}), 2) == (2, True)  # a card is not split locally
    assert gpus_needed(job(method="MLX-Demo"), 2) == (0, True)
    assert gpus_needed(job(kind="save"), 1) == (1, False)  # a save runs on the CPU rather than wait
    assert gpus_needed(job(kind="deploy", params={"ENGINE_DEVICE": "cpu"}), 1) == (0, True)
    assert gpus_needed(job(kind="deploy", params={"ENGINE_DEVICE": "cuda", "MODEL_PATH": "/m",
                                                   "ADAPTER_PATH": ""}), 1) == (1, True)


def test_two_workers_given_gpu_0_and_gpu_1_hand_each_stage_its_own(gpu_method):
    # each stage sleeps long enough that the first worker is busy when the second polls
    first = jobs.submit_training(gpu_method, "tiny", "demo-sft", params={"sleep": "1.5"})
    second = jobs.submit_training(gpu_method, "tiny", "demo-sft", params={"sleep": "1.5"})
    cpu_only = jobs.submit_training(gpu_method, "tiny", "demo-sft", params={"num_gpus": "0"})
    workers = [Worker(idle_exit=1.5, poll_seconds=0.05, quick_slot=False, gpus_spec=spec) for spec in ("0", "1")]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    seen = {}
    for job in (first, second, cpu_only):
        job = jobs.get_job(job.id)
        assert job.status == "succeeded", job.error
        seen[job.id] = (Path(job.run_dir) / "gpus.txt").read_text()
    assert sorted([seen[first.id], seen[second.id]]) == ["0", "1"]  # one card each, read in the kernel
    assert seen[cpu_only.id] == ""  # NUM_GPUS=0: no card visible at all
    assert gpus.leases() == []  # every lease freed with its stage
    log = (Path(jobs.get_job(first.id).run_dir) / "training.log").read_text()
    assert f"CUDA_VISIBLE_DEVICES={seen[first.id]}" in log
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # the test's own environment is untouched
