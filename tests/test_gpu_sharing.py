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

from deepe_widgets import config, gpus, jobs, methods, store
from deepe_widgets.deployments import check_joins, vllm_engine_flags, vllm_lora_rank
from deepe_widgets.errors import DeepeError
from deepe_widgets.executors.base import gpus_needed
from deepe_widgets.executors.ray import stage_environment
from deepe_widgets.runtime.devices import Device
from deepe_widgets.worker import Worker

from helpers import BOTH_BACKENDS, deepe, wait_until
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


@BOTH_BACKENDS  # the lease is a row of gpu_lease, on SQLite and on PostgreSQL
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


def test_the_gpus_a_worker_is_given_and_what_a_stage_then_sees(monkeypatch, home):
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
    workers = [Worker(idle_exit=1.0, poll_seconds=0.05, quick_slot=False, gpus_spec=spec) for spec in ("0", "1")]
    # one worker has a kernel started ahead, before its GPU was known: the job's GPU reaches it all the same
    workers[0].executor.standby.size = 1
    workers[0].executor.warm("python3")
    standby_log = config.workspace_dir("logs") / "standby-runners.log"  # ready before the stages start theirs
    wait_until(lambda: "waiting for a job" in standby_log.read_text(), 60, "the kernel started ahead")
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    seen = {}
    for job in (first, second):
        job = jobs.get_job(job.id)
        assert job.status == "succeeded", job.error
        seen[job.id] = (Path(job.run_dir) / "gpus.txt").read_text()
    assert sorted(seen.values()) == ["0", "1"]  # one card each, read in the stage kernel's environment
    assert gpus.leases() == []  # every lease freed with its stage
    logs = {job.id: (Path(jobs.get_job(job.id).run_dir) / "training.log").read_text() for job in (first, second)}
    assert all(f"CUDA_VISIBLE_DEVICES={seen[job_id]}" in log for job_id, log in logs.items())
    assert any("started ahead of the job" in log for log in logs.values())
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # the test's own environment is untouched


# --- vLLM on a GPU: the engine's command line, decided for a device and a model ------------------------

L4 = Device(type="cuda", name="NVIDIA L4", memory_gb=22.0, count=1, capability=(8, 9), bf16=True)


def test_the_vllm_command_line_for_a_cpu_and_a_gpu():
    long_context = {"max_position_embeddings": 131072}
    # the CPU: eager (no CUDA graphs there), 512 tokens
    assert vllm_engine_flags("cpu", long_context) == ["--enforce-eager", "--max-model-len", "512"]
    # a GPU: CUDA graphs, 8192 tokens of a 128k model (its full KV cache would not fit), 0.9 of the card
    assert vllm_engine_flags(L4, long_context) == ["--max-model-len", "8192", "--gpu-memory-utilization", "0.9"]
    assert vllm_engine_flags(L4, {"max_position_embeddings": 2048})[:2] == ["--max-model-len", "2048"]
    vision_language = {"text_config": {"max_position_embeddings": 4096}}
    assert vllm_engine_flags("cuda", vision_language)[:2] == ["--max-model-len", "4096"]
    assert vllm_engine_flags(L4, {})[:2] == ["--max-model-len", "8192"]  # a GGUF: no config to read
    assert vllm_engine_flags(L4, long_context, max_model_len=32768, gpu_memory_utilization=0.6) == [
        "--max-model-len", "32768", "--gpu-memory-utilization", "0.6"]
    with pytest.raises(DeepeError, match="longer than the model takes"):
        vllm_engine_flags(L4, {"max_position_embeddings": 2048}, max_model_len=4096)
    with pytest.raises(DeepeError, match="above 0 and at most 1"):
        vllm_engine_flags(L4, long_context, gpu_memory_utilization=1.5)
    # an adapter: LoRA at a rank vLLM accepts
    assert vllm_engine_flags(L4, long_context, lora_rank=12)[-3:] == ["--enable-lora", "--max-lora-rank", "16"]


def test_lora_ranks_round_up_to_what_vllm_takes_and_an_adapter_must_fit_its_server(home):
    assert [vllm_lora_rank(r) for r in (1, 4, 12, 16, 24, 48, 200, 300, 512)] == [
        1, 8, 16, 16, 32, 64, 256, 320, 512]
    with pytest.raises(DeepeError, match="above 512, the largest vLLM serves"):
        vllm_lora_rank(1024)
    with store.session() as s:  # the live server of a base, started for rank-16 adapters
        job = store.Job(kind="deploy", method="vllm", params={"ENGINE_FLAGS": vllm_engine_flags(L4, {}, lora_rank=12)})
        s.add(job)
    server = store.ModelRecord(name="tiny_l_abcd", path="unused", kind="live", job_id=job.id)
    check_joins(server, 16)  # fits: it joins
    with pytest.raises(DeepeError, match=r"rank 32 is above the --max-lora-rank 16 of tiny_l_abcd"):
        check_joins(server, 32)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine with a GPU runs the check itself")
def test_the_gpu_check_says_in_one_sentence_that_there_is_no_gpu_here(capsys):
    from benchmarks import gpu_check

    assert gpu_check.main([]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("gpu_check: no CUDA GPU") and len(printed.splitlines()) == 1
    # its 7B estimate: SmolLM2-135M's 30 layers x 576 scaled to 32 x 4096
    assert gpu_check.scale_to_7b(576 * 30, 30, 576) == 32 * 4096
