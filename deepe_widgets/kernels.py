"""Installed Jupyter kernelspecs: each method stage names one (one kernel per env)."""

from __future__ import annotations

import json
import subprocess
import sys

from .errors import DeepeError


def installed_kernels() -> dict[str, str]:
    """Kernel name -> resource dir of every installed kernelspec."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().find_kernel_specs()


def require_kernel(name: str, field: str | None = None) -> None:
    """Refuse a kernel that is not installed, listing the ones that are."""
    kernels = installed_kernels()
    if name not in kernels:
        listed = ", ".join(sorted(kernels)) or "none"
        raise DeepeError(
            f"kernel {name!r} is not installed; installed kernels: {listed} "
            f"(install one with: python -m ipykernel install --user --name NAME)", field=field)


_VERSION_PROBE = """
import json, sys
from importlib import metadata
out = {"python": sys.executable, "python_version": sys.version.split()[0], "packages": {}}
for name in ("torch", "transformers", "peft", "trl", "datasets", "deepe-widgets", "mlx-lm", "mlx"):
    try:
        out["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out["packages"][name] = None
print(json.dumps(out))
"""


def kernel_environment(name: str) -> dict:
    """The Python executable and package versions a kernel runs with (for the run record)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    info: dict = {"kernel": name, "display_name": spec.display_name, "argv": spec.argv}
    executable = spec.argv[0] if spec.argv else None
    # jupyter_client runs a spec whose argv[0] is a bare `python` with its own interpreter
    if executable in {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        executable = sys.executable
    if executable and spec.language == "python":
        try:
            done = subprocess.run([executable, "-c", _VERSION_PROBE], capture_output=True,
                                  text=True, timeout=60, env=None)
            if done.returncode == 0:
                info.update(json.loads(done.stdout.strip().splitlines()[-1]))
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            pass
    return info
