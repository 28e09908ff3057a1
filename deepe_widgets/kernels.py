"""Installed Jupyter kernelspecs: each method stage names one (one kernel per env)."""

from __future__ import annotations

import json
import subprocess
import sys

from jupyter_client.kernelspec import KernelSpecManager

from .errors import DeepeError


def installed_kernels() -> dict[str, str]:
    """Kernel name -> resource dir of every installed kernelspec."""
    return KernelSpecManager().find_kernel_specs()


def require_kernel(name: str, field: str | None = None) -> None:
    """Refuse a kernel that is not installed, listing the ones that are."""
    kernels = installed_kernels()
    if name not in kernels:
        listed = ", ".join(sorted(kernels)) or "none"
        raise DeepeError(
            f"kernel {name!r} is not installed; installed kernels: {listed} "
            f"(install one with: python -m ipykernel install --user --name NAME)", field=field)


PROBE_TIMEOUT_SECONDS = 60

_VERSION_PROBE = """
import json, sys
from importlib import metadata
out = {"python": sys.executable, "python_version": sys.version.split()[0], "packages": {}}
for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "deepe-widgets", "mlx-lm", "mlx",
             "sentence-transformers", "diffusers", "simpletuner", "bitsandbytes", "vllm"):
    try:
        out["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out["packages"][name] = None
print(json.dumps(out))
"""


def kernel_environment(name: str) -> dict:
    """The Python executable and package versions a kernel runs with (for the run record);
    `probe_error` says why they could not be read."""
    spec = KernelSpecManager().get_kernel_spec(name)
    info: dict = {"kernel": name, "display_name": spec.display_name, "argv": spec.argv}
    executable = spec.argv[0] if spec.argv else None
    # jupyter_client runs a spec whose argv[0] is a bare `python` with its own interpreter
    if executable in {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        executable = sys.executable
    if not executable or spec.language != "python":
        info["probe_error"] = f"kernel {name!r} is not a Python kernel; its packages cannot be listed"
        return info
    try:
        done = subprocess.run([executable, "-c", _VERSION_PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        info["probe_error"] = f"its Python ({executable}) did not answer within {PROBE_TIMEOUT_SECONDS} s"
        return info
    except OSError as exc:
        info["probe_error"] = f"its Python ({executable}) could not be started: {exc.strerror}"
        return info
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        info["probe_error"] = f"its Python ({executable}) failed: {last}"
        return info
    try:
        info.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        info["probe_error"] = f"its Python ({executable}) printed no package list"
    return info
