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


def test_a_stage_failure_crosses_the_process_boundary_unchanged():
    """The runner writes `to_dict()` as JSON; the executor's `from_dict()` gives the same error and detail."""
    import json

    from deepe_widgets.errors import StageFailed

    failed = StageFailed("ValueError", "bad column", 3, "x = 1/0", location="train.py, line 8")
    back = StageFailed.from_dict(json.loads(json.dumps(failed.to_dict())), ray_job="deepe-abc-1")
    assert back.message == failed.message == "ValueError: bad column (train.py, line 8)"
    assert back.detail == {**failed.detail, "ray_job": "deepe-abc-1"}
    platform = StageFailed.from_dict({"ok": False, "ename": "RunnerDied", "evalue": "exit 9", "platform": True})
    assert platform.message == "the workbench failed: RunnerDied: exit 9" and platform.detail["cell"] is None
