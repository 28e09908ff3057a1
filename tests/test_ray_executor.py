"""The ray executor on a real Ray head (127.0.0.1, a temp dir of its own, stopped after): a tiny
training with live metrics, a cancel, a worker killed with -9 whose job finishes once under the
next worker, and a job asking for a GPU the cluster does not have."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from deepe_widgets import jobs, methods, metrics, store, worker
from deepe_widgets.raycluster import RayHead

from helpers import BOTH_BACKENDS, deepe, slow_template_notebook, wait_lease_expired, wait_until
from stage_notebooks import plain_notebook

pytest.importorskip("ray.job_submission")
# one worker runs them all (conftest.WORKER_GROUPS), so the Ray head starts once per run


@pytest.fixture(scope="module")  # stopped after this file: an idle head still takes CPU from the others
def ray_head():
    # a short folder of its own: Ray's unix sockets live under it, and their paths may not exceed 107
    # bytes (pytest's /tmp/pytest-of-USER/pytest-N/popen-gwN/… under xdist is too long)
    root = Path(tempfile.mkdtemp(prefix="dw-ray-"))
    head = RayHead(root / "t", num_cpus=4, num_gpus=0)
    try:
        head.start()
    except Exception:
        head.stop()
        raise
    yield head
    left = head.stop()
    shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"Ray processes left after stopping the head: {left}"
    assert not [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")
                and any(str(head.temp_dir) in part for part in _running_cmdline(p))]


def _running_cmdline(proc: psutil.Process) -> list[str]:
    """A process's command line; none for one that has exited (a zombie not yet reaped included)."""
    try:
        return proc.cmdline() if proc.status() != psutil.STATUS_ZOMBIE else []
    except psutil.Error:
        return []


@pytest.fixture
def ray_env(ray_head, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray_head.address)


def _ray_jobs_of(client, job):
    return {d.submission_id: str(d.status.value) for d in client.list_jobs()
            if (d.submission_id or "").startswith(f"deepe-{job.uuid}-")}


def _start_worker(log_path, **env) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "deepe_widgets.worker", "--executor", "ray", "--idle-exit", "4"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **env})


@BOTH_BACKENDS
@pytest.mark.training
def test_tiny_training_runs_as_a_ray_job_with_live_metrics(workspace, ray_env):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={
        "max_steps": "16", "batch_size": "4", "learning_rate": "5e-3", "max_seq_length": "64", "save_steps": "0"})
    runner = threading.Thread(target=worker.Worker("ray", idle_exit=1.0).run, daemon=True)
    runner.start()
    # live: loss rows reach the database from the node while the Ray job still runs
    seen_live = wait_until(lambda: jobs.get_job(job.id).status == "running" and _ray_jobs_of(ray_env, job).get(
        f"deepe-{job.uuid}-1") == "RUNNING" and [m for m in metrics.metrics_for(job.id) if m.name == "loss"],
        180, "a loss row while the Ray job runs", poll=0.1)
    assert seen_live[0].step >= 1
    runner.join(timeout=240)
    final = jobs.get_job(job.id)
    assert final.status == "succeeded", final.error
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "SUCCEEDED"}
    assert [m.step for m in metrics.metrics_for(job.id) if m.name == "loss"] == list(range(1, 17))
    summary = jobs.job_summary(final)
    assert summary["artifacts"][0]["kind"] == "customized"
    assert any(r.endswith("training.ipynb") for r in summary["records"])
    with open(os.path.join(final.run_dir, "training.log")) as stage_log:
        assert f"submitted to the Ray cluster at {os.environ['RAY_ADDRESS']} as deepe-{job.uuid}-1" in stage_log.read()


def test_cancel_stops_the_ray_job_and_its_kernel(workspace, ray_env, tmp_path):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft", params={"sleep": "120"})
    runner = threading.Thread(target=worker.Worker("ray", idle_exit=1.0).run, daemon=True)
    runner.start()
    started = os.path.join(jobs.get_job(job.id).run_dir, "started.txt")
    wait_until(lambda: os.path.exists(started), 120, "the training to start on the node")
    on_node = [p for p in psutil.process_iter() if _cwd(p) == job.run_dir]  # the stage runner and its kernel
    assert len(on_node) >= 2
    jobs.cancel_job(job.id)
    final = jobs.wait_for(job.id, timeout=60)
    assert final.status == "cancelled"
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "STOPPED"}
    wait_until(lambda: not any(_cwd(p) == job.run_dir for p in psutil.process_iter()), 30, "the kernel to stop")
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in on_node)
    runner.join(timeout=30)


def _cwd(proc) -> str | None:
    try:
        return proc.cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@pytest.mark.training
def test_a_worker_killed_mid_run_leaves_one_ray_job_that_finishes_once(workspace, ray_env, tmp_path, monkeypatch,
                                                                        caplog):
    methods.register_method("slow", {"training": (slow_template_notebook(tmp_path / "slow.ipynb", 0.4), "python3")})
    job = jobs.submit_training("slow", "tiny", "demo-sft", params={
        "max_steps": "10", "save_steps": "0", "batch_size": "4", "max_seq_length": "64", "learning_rate": "5e-3"})
    env = {"DEEPE_LEASE_SECONDS": "3"}
    first = _start_worker(tmp_path / "worker1.log", **env)
    wait_until(lambda: any(m.step >= 3 for m in metrics.metrics_for(job.id)), 180, "step 3")
    os.kill(first.pid, signal.SIGKILL)  # no chance to clean up
    first.wait(timeout=10)
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "RUNNING"}  # the stage runs on
    wait_lease_expired(job.id)
    monkeypatch.setenv("DEEPE_LEASE_SECONDS", "3")
    with caplog.at_level("INFO", logger="deepe.executor.ray"):
        worker.Worker("ray", idle_exit=2).run()  # the next worker: reaps, claims attempt 2, follows
    final = jobs.get_job(job.id)
    assert final.status == "succeeded", final.error
    assert final.attempt == 2
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "SUCCEEDED"}  # followed, not started again
    rows = [(m.step, m.name) for m in metrics.metrics_for(job.id)]
    assert len(rows) == len(set(rows))
    assert [m.step for m in metrics.metrics_for(job.id) if m.name == "loss"] == list(range(1, 11))
    assert f"following Ray job deepe-{job.uuid}-1" in caplog.text
    assert len(jobs.job_summary(final)["artifacts"]) == 1


def test_a_stopping_worker_hands_the_job_back_and_the_next_one_follows_its_ray_job(workspace, ray_env, tmp_path,
                                                                                   caplog):
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft", params={"sleep": "6"})
    first = worker.Worker("ray", idle_exit=30)
    runner = threading.Thread(target=first.run, daemon=True)
    runner.start()
    wait_until(lambda: os.path.exists(os.path.join(jobs.get_job(job.id).run_dir, "started.txt")), 120,
               "the stage to start")
    first.stop()  # what SIGTERM (`deepe worker stop`) does: no checkpoint to wait for, the Ray job runs on
    runner.join(timeout=30)
    handed = jobs.get_job(job.id)
    assert (handed.status, handed.attempt) == ("queued", 0)
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "RUNNING"}
    with caplog.at_level("INFO", logger="deepe.executor.ray"):
        worker.Worker("ray", idle_exit=0.5).run()
    final = jobs.get_job(job.id)
    assert (final.status, final.attempt) == ("succeeded", 1), final.error
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "SUCCEEDED"}
    assert f"following Ray job deepe-{job.uuid}-1" in caplog.text


def test_a_job_asking_for_a_missing_gpu_fails_with_that_sentence(workspace, ray_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPE_RAY_RESOURCE_WAIT_SECONDS", "3")
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft", params={"num_gpus": "1"})
    worker.Worker("ray", idle_exit=0.5).run()
    final = jobs.get_job(job.id)
    assert final.status == "failed"
    assert final.error.startswith("no node offers 1 GPU"), final.error
    # Ray cannot stop a job no node took: its stop is queued and applies if a node ever takes it
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "PENDING"}
    assert not os.path.exists(os.path.join(final.run_dir, "started.txt"))


def test_cli_refuses_a_ray_worker_without_an_address(home, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    done = deepe("worker", "--executor", "ray", check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: the ray executor needs the Ray cluster's address: give --address "
                                   "http://HEAD:8265 or set RAY_ADDRESS")
    nobody = deepe("worker", "--executor", "ray", "--address", "http://127.0.0.1:9", check=False)
    assert nobody.returncode == 2
    assert nobody.stderr.strip().startswith("error: no Ray cluster answers at http://127.0.0.1:9 (")


def test_without_a_shared_run_folder_the_stage_log_and_result_come_through_the_ray_logs(ray_env, tmp_path):
    from deepe_widgets.executors.ray import NODE_PREFIX, RESULT_PREFIX, LogRelay

    lines = [f"{NODE_PREFIX}node-7 run folder /elsewhere/runs/1 not shared", "step 1 loss 2.5", "step 2 loss 2.1",
             RESULT_PREFIX + '{"ok": false, "ename": "ValueError", "evalue": "bad column", "cell": 3}']
    code = f"print({chr(10).join(lines)!r})"
    sid = ray_env.submit_job(entrypoint=f"{sys.executable} -c {shlex.quote(code)}", entrypoint_num_cpus=0)
    stage_log = tmp_path / "training.log"
    relay = LogRelay(ray_env, sid, stage_log)
    wait_until(lambda: str(ray_env.get_job_status(sid).value) in ("SUCCEEDED", "FAILED"), 120, "the Ray job to end")
    relay.poll(final=True)
    assert (relay.shared, relay.node) == (False, "node-7")
    assert relay.result == {"ok": False, "ename": "ValueError", "evalue": "bad column", "cell": 3}
    assert stage_log.read_text() == "step 1 loss 2.5\nstep 2 loss 2.1\n"  # the Train Log shows the node's lines


def test_resources_come_from_the_method_then_the_job(workspace, tmp_path):
    import nbformat

    from deepe_widgets.errors import DeepeError
    from deepe_widgets.executors.ray import describe_resources, stage_resources

    nb = nbformat.read(plain_notebook(tmp_path / "gpu.ipynb"), as_version=4)
    nb.cells[0].source += "\nNUM_GPUS = 1.0"  # the method's own default, in its parameters cell
    nbformat.write(nb, tmp_path / "gpu.ipynb")
    methods.register_method("gpu", {"training": (tmp_path / "gpu.ipynb", "python3")})
    default = jobs.submit_training("gpu", "tiny", "demo-sft")
    assert stage_resources(default) == {"num_gpus": 1.0, "num_cpus": 1.0, "memory_gb": 0.0}
    assert describe_resources(stage_resources(default)) == "1 GPU"
    changed = jobs.submit_training("gpu", "tiny", "demo-sft", params={"num_gpus": "0", "num_cpus": "2",
                                                                     "memory_gb": "8"})
    assert stage_resources(changed) == {"num_gpus": 0.0, "num_cpus": 2.0, "memory_gb": 8.0}
    assert describe_resources(stage_resources(changed)) == "2 CPUs and 8 GiB of memory"
    with pytest.raises(DeepeError, match="NUM_GPUS must not be negative"):
        jobs.submit_training("gpu", "tiny", "demo-sft", params={"num_gpus": "-1"})


@pytest.mark.parametrize("home", ["postgresql"], indirect=True)
def test_the_ray_job_holds_no_secret_and_the_node_reads_its_own(workspace, ray_env, tmp_path, monkeypatch):
    password, token, key = "s3cret-db-pw", "hf_s3cretTokenValue", "wandb-s3cret-key"
    url = os.environ["DEEPE_DB_URL"].replace("postgres@", f"postgres:{password}@")
    monkeypatch.setenv("DEEPE_DB_URL", url)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("DEEPE_RAY_ENV", "WANDB_API_KEY")  # asked for by name: still held back
    store.dispose_engines()
    # the node's own secrets, in a file only its user reads (here: the shared workspace)
    secrets = workspace / "secrets.env"
    secrets.write_text(f"# read by the node\nPGPASSWORD={password}\nexport HF_TOKEN='{token}'\n"
                       f"DEEPE_KERNEL_MARKER=from-the-node-secrets-file\n")
    secrets.chmod(0o600)
    methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
    job = jobs.submit_training("plain", "tiny", "demo-sft")
    worker.Worker("ray", idle_exit=0.5).run()
    final = jobs.get_job(job.id)
    assert final.status == "succeeded", final.error
    # the kernel on the node got the file's variables
    assert (Path(final.run_dir) / "output" / "model.txt").read_text() == "from-the-node-secrets-file"
    # what anyone reaching the dashboard reads: the job, as the Jobs API returns it
    info = ray_env.get_job_info(f"deepe-{job.uuid}-1")
    listed = [d for d in ray_env.list_jobs() if d.submission_id == f"deepe-{job.uuid}-1"]
    shown = info.model_dump_json() + "".join(d.model_dump_json() for d in listed)
    assert info.runtime_env["env_vars"]["DEEPE_DB_URL"] == url.replace(f":{password}@", "@")
    assert "deepe_widgets.executors.ray" in info.entrypoint and info.metadata["deepe_job"] == str(job.id)
    for secret in (password, token, key):
        assert secret not in shown
    assert not [name for name in info.runtime_env["env_vars"] if "TOKEN" in name or "KEY" in name]


def test_a_secrets_file_others_can_read_is_refused(tmp_path, monkeypatch):
    from deepe_widgets.errors import DeepeError
    from deepe_widgets.executors.ray import load_node_secrets, url_without_password

    secrets = tmp_path / "secrets.env"
    secrets.write_text("HF_TOKEN=hf_abc\n")
    secrets.chmod(0o644)
    with pytest.raises(DeepeError, match=f"can be read by others \\(mode 0644\\): chmod 600 {secrets}"):
        load_node_secrets(secrets)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    secrets.chmod(0o600)
    assert load_node_secrets(secrets) == ["HF_TOKEN"] and os.environ["HF_TOKEN"] == "hf_abc"
    assert url_without_password("postgresql+psycopg://ann:pa%40ss@db.lan:5432/deepe?sslmode=require") == \
        "postgresql+psycopg://ann@db.lan:5432/deepe?sslmode=require"


class BlinkingDashboard:
    """A plain HTTP proxy in front of the Ray dashboard that answers 503 while `down` is set, as a
    restarting dashboard (or the load balancer before it) does."""

    def __init__(self, target: str):
        import http.server
        import urllib.error
        import urllib.request

        self.down = threading.Event()
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.down.is_set():
                    proxy.refused += 1
                    status, headers, data = 503, {}, b"Service Unavailable"
                else:
                    request = urllib.request.Request(
                        target + self.path, data=body, method=self.command,
                        headers={k: v for k, v in self.headers.items()
                                 if k.lower() not in ("host", "content-length", "connection")})
                    try:
                        with urllib.request.urlopen(request, timeout=60) as answer:
                            status, headers, data = answer.status, answer.headers, answer.read()
                    except urllib.error.HTTPError as answer:
                        status, headers, data = answer.code, answer.headers, answer.read()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_dashboard_answering_503_for_a_while_neither_fails_the_job_nor_stops_its_ray_job(
        workspace, ray_env, tmp_path, monkeypatch, caplog):
    proxy = BlinkingDashboard(os.environ["RAY_ADDRESS"])
    monkeypatch.setenv("RAY_ADDRESS", proxy.address)
    try:
        methods.register_method("plain", {"training": (plain_notebook(tmp_path / "plain.ipynb"), "python3")})
        job = jobs.submit_training("plain", "tiny", "demo-sft", params={"sleep": "12"})
        runner = threading.Thread(target=worker.Worker("ray", idle_exit=0.5).run, daemon=True)
        with caplog.at_level("INFO", logger="deepe.executor.ray"):
            runner.start()
            wait_until(lambda: os.path.exists(os.path.join(jobs.get_job(job.id).run_dir, "started.txt")), 120,
                       "the stage to start on the node")
            proxy.down.set()
            time.sleep(6)
            proxy.down.clear()
            runner.join(timeout=120)
    finally:
        proxy.close()
    final = jobs.get_job(job.id)
    assert proxy.refused > 0
    assert final.status == "succeeded", final.error
    assert _ray_jobs_of(ray_env, job) == {f"deepe-{job.uuid}-1": "SUCCEEDED"}  # followed through, never stopped
    assert "did not answer (Request failed with status code 503" in caplog.text
