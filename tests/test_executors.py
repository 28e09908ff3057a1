"""The executors package: backends found by name, Ray imported only by the ray executor."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_local_worker_never_imports_ray(tmp_path):
    code = ("import sys, deepe_widgets.worker\n"
            "from deepe_widgets.executors import EXECUTORS, get_executor\n"
            "executor = get_executor('local')('w1')\n"
            "assert sorted(EXECUTORS) == ['local', 'ray'], EXECUTORS\n"
            "assert 'ray' not in sys.modules, 'Ray was imported for a local executor'\n"
            "print(type(executor).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEEPE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LocalExecutor"
