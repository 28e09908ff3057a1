"""SimpleTuner, seed 000's image-generation engine, as a built-in method where it runs unpatched: its
4.x releases need Python >= 3.12 (this workbench's default kernel may be older), so the method is
registered only when an installed Jupyter kernel has Python >= 3.12 and simpletuner, and a training
asked of it otherwise is refused with one sentence saying what to install."""

from __future__ import annotations

import subprocess
import sys

from jupyter_client.kernelspec import KernelSpecManager

from . import config, methods, store
from .config import Lifecycle, StageName, TrainingTypeName
from .errors import DeepeError

METHOD = "SimpleTuner"
STAGES = {StageName.TRAINING: "simpletuner/training.ipynb"}
DESCRIPTION = ("LoRA for text-to-image models with SimpleTuner's own config and entry point, in a Python >= 3.12 "
               "kernel; the stage reads SimpleTuner's outcome (the LoRA file it wrote), not its exit code.")
REFUSAL = ("SimpleTuner needs a Jupyter kernel with Python 3.12 or newer and simpletuner installed "
           "(in a Python 3.12 venv: pip install simpletuner ipykernel deepe-widgets, then "
           "python -m ipykernel install --user --name simpletuner), and no installed kernel has both")
_PROBE = ("import sys, importlib.util; "
          "print(sys.version_info >= (3, 12) and importlib.util.find_spec('simpletuner') is not None)")


def find_kernel() -> str | None:
    """The name of an installed Python kernel with Python >= 3.12 and simpletuner, or None."""
    manager = KernelSpecManager()
    for name in sorted(manager.find_kernel_specs()):
        try:
            spec = manager.get_kernel_spec(name)
        except Exception:  # a broken kernelspec is someone else's problem here
            continue
        executable = spec.argv[0] if spec.argv else ""
        if spec.language != "python" or not executable:
            continue
        if executable in ("python", "python3", sys.executable) and sys.version_info < (3, 12):
            continue  # this interpreter: known without starting it
        try:
            done = subprocess.run([executable, "-c", _PROBE], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == "True":
            return name
    return None


def ensure_registered() -> bool:
    """Register the method (built in) when a kernel can run it; True when it is registered."""
    kernel = find_kernel()
    if kernel is None:
        return False
    templates = config.package_templates_dir()
    stages = {stage: (templates / rel, kernel) for stage, rel in STAGES.items()}
    methods.register_method(METHOD, stages, training_type=TrainingTypeName.IMAGE_GENERATION,
                            lifecycle=Lifecycle.CUSTOMIZED, display_name=METHOD, description=DESCRIPTION,
                            builtin=True, replace=True)
    return True


def check_available(method: str) -> None:
    """Refuse, in one sentence, a SimpleTuner training where no kernel can run it."""
    if method == METHOD and store.get_one(store.Method, name=METHOD) is None and not ensure_registered():
        raise DeepeError(REFUSAL, field="method")
