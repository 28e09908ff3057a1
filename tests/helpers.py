"""Helpers the tests share, imported explicitly (`from helpers import deepe`): the CLI as a user
runs it, polling with a deadline, and the small files several test modules build.

Fixtures live in conftest.py; nothing here is a fixture, so no test imports a conftest (two
conftest.py files without packages share one module name, and the second loaded would win)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "deepe_widgets"
SCRIPTS = Path(__file__).resolve().parent / "scripts"

BOTH_BACKENDS = pytest.mark.parametrize("home", ["sqlite", "postgresql"], indirect=True)

FAST_PARAMS = ["--param", "max_steps=6", "--param", "batch_size=4", "--param", "learning_rate=5e-3",
               "--param", "max_seq_length=64", "--param", "save_steps=0"]


def deepe(*args: str, check: bool = True, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `deepe` CLI as a user would, in a subprocess (`env`: variables to set; None unsets one)."""
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    done = subprocess.run([sys.executable, "-m", "deepe_widgets.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=environment, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"deepe {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def deepe_json(*args: str, **kwargs):
    """`deepe ... --json`'s output, parsed."""
    return json.loads(deepe(*args, **kwargs).stdout)


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):
    """Poll `predicate` until it returns something true (returned), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def wait_lease_expired(job_id: int, timeout: float = 30) -> None:
    """Wait until the lease of `job_id`'s last holder has run out (instead of sleeping its length)."""
    from deepe_widgets import store

    def expired() -> bool:
        # compared in SQL, on the clock the workers' leases use
        query = store.select(store.Job.id).where(store.Job.id == job_id, store.Job.lease_expires < store.db_now())
        with store.read_session() as s:
            return s.exec(query).first() is not None

    wait_until(expired, timeout, f"job {job_id}'s lease to run out", poll=0.1)


def slow_template_notebook(path: Path, seconds_per_step: float) -> Path:
    """The template's own example, with a user callback that makes each step take a while."""
    import nbformat

    from deepe_widgets import stagefiles

    template = nbformat.read(stagefiles.template_notebook_path(), as_version=4)
    user = next(c for c in template.cells if stagefiles.USER_TAG in c.metadata.get("tags", []))
    code = user.source.split(stagefiles.BEGIN_MARKER)[1].split(stagefiles.END_MARKER)[0]
    code = ("import time\nfrom transformers import TrainerCallback\n"
            "class SlowSteps(TrainerCallback):\n"
            f"    def on_step_end(self, *args, **kwargs):\n        time.sleep({seconds_per_step})\n" + code)
    code = code.replace("callbacks=[callback]", "callbacks=[callback, SlowSteps()]")
    nbformat.write(stagefiles.notebook_with_user_code(code), path)
    return path


# --- datasets and flags of the script-mode tests ------------------------------------------------

OLORA_TEMPLATE = ("--base_model {MODEL_PATH} --data_path {DATASET_PATH} --output_dir {OUTPUT_DIR} "
                  "--batch_size {BATCH_SIZE} --num_epochs {EPOCHS} --learning_rate {LEARNING_RATE} "
                  "--cutoff_len {MAX_SEQ_LENGTH} --lora_r {LORA_RANK} --lora_alpha {LORA_ALPHA} "
                  "--val_set_size 2 --device_map cpu --torch_dtype float32")


def chat_rows(n: int = 20) -> list[dict]:
    """`n` rows of a chat dataset (`messages`)."""
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(n)]


def alpaca_rows(n: int = 12) -> list[dict]:
    """`n` rows of an Alpaca-style dataset (instruction, input, output)."""
    return [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """`rows` as JSON lines at `path`."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def running_job(method: str, run_dir: Path) -> int:
    """A job row marked running in `run_dir`, for a stage notebook run by hand to stream its metrics to."""
    from deepe_widgets import store

    with store.session() as s:
        job = store.Job(method=method, status=store.JobStatus.RUNNING, run_dir=str(run_dir))
        s.add(job)
        s.flush()
        return int(job.id)


# --- the import floors ---------------------------------------------------------------------------

def package_imports(module: str, source: str, is_package: bool) -> set[str]:
    """Modules of deepe_widgets that `source` imports, anywhere in it."""
    found: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    if module == "__init__":
        here = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("deepe_widgets."):
                    found.add(alias.name.removeprefix("deepe_widgets."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("deepe_widgets"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import jobs` names a module; `from .jobs import x` a name
                candidate = ".".join(target + [alias.name])
                found.add(candidate if (PACKAGE / (candidate.replace(".", "/") + ".py")).exists()
                          or (PACKAGE / candidate.replace(".", "/")).is_dir() else ".".join(target))
    return {f for f in found if f}


# --- shared by the widget tests ------------------------------------------------------------

def run_in_own_loop(coroutine_function):
    """Run a coroutine in an event loop of its own thread: Playwright's sync API (the browser tests,
    earlier in the same process) leaves a loop running in the main thread."""
    outcome = {}

    def target():
        try:
            outcome["value"] = asyncio.run(coroutine_function())
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def customized_model(job, name: str, tmp_path, parent: str = "tiny", method: str | None = "SFT-Demo"):
    """A Customized Model as a succeeded training registers it: a folder and its model card."""
    folder = tmp_path / name
    folder.mkdir()
    card = {"name": name, "base_model": parent, "method": method, "dataset": "demo-sft", "job_id": job.id,
            "parameters": {"LEARNING_RATE": 0.005}, "metrics": {"loss": {"final": 0.0036, "best": 0.0031},
                                                                "learning_rate": {"final": 1e-5, "best": 1e-5}}}
    from deepe_widgets import models

    return models.add_model(name, folder, kind="customized", job_id=job.id, parent=parent, method=method, meta=card)


# --- shared by the script-mode tests -------------------------------------------------------

SCRIPT_FAST = {"MAX_STEPS": 5, "BATCH_SIZE": 2, "MAX_SEQ_LENGTH": 64, "SAVE_STEPS": 0, "LEARNING_RATE": 5e-3}


def run_script(tmp_path: Path, script: Path, model: Path, dataset: Path, args_template: str = "", **params):
    """Build the script notebook, execute it with papermill in the python3 kernel; return
    (executed notebook or None, output dir, the cell outputs' text, the error if it raised)."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from deepe_widgets import scriptmode

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    source = tmp_path / f"{script.stem}.input.ipynb"
    nbformat.write(scriptmode.script_notebook(script, "python3", args_template), source)
    record = run_dir / "training.ipynb"
    values = {"MODEL_PATH": str(model), "DATASET_PATH": str(dataset), "OUTPUT_DIR": str(run_dir / "output"),
              "JOB_ID": 0, **SCRIPT_FAST, **params}
    error = None
    try:
        papermill.execute_notebook(str(source), str(record), parameters=values, kernel_name="python3",
                                   cwd=str(run_dir), progress_bar=False, start_timeout=120,
                                   shutdown_kernel="immediate")
    except PapermillExecutionError as exc:
        error = exc
    executed = nbformat.read(record, as_version=4)
    text = "\n".join(out.get("text", "") for cell in executed.cells for out in cell.get("outputs", [])
                     if out.get("output_type") == "stream")
    return executed, run_dir / "output", text, error


def argv_lines(text: str) -> list[str]:
    import re

    return [line for line in text.splitlines() if re.search(r"INFO\s+argv: \S+\.(py|ipynb) ", line)]


def run_stage(notebook: Path, run_dir: Path, parameters: dict, stage: str = "training") -> str:
    """Execute a stage notebook as the worker does, in `run_dir`; return its log (failing the test with
    the log's end when the stage fails)."""
    from deepe_widgets.errors import StageFailed
    from deepe_widgets.runner import execute_stage
    from deepe_widgets.scriptmode import load_stage_notebook

    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{stage}.log"
    try:
        execute_stage(load_stage_notebook(notebook, stage), stage=stage, kernel="python3", parameters=parameters,
                      output_path=run_dir / f"{stage}.ipynb", log_path=log_path, cwd=run_dir)
    except StageFailed as exc:
        log = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
        pytest.fail(f"stage failed: {exc}\n--- log ---\n{log[-6000:]}")
    return log_path.read_text(encoding="utf-8")


def metric_steps(job_id: int) -> dict[str, dict[int, float]]:
    """Every metric a job streamed: name -> {step: value}."""
    from deepe_widgets import metrics

    found: dict[str, dict[int, float]] = {}
    for row in metrics.metrics_for(job_id):
        found.setdefault(row.name, {})[row.step] = row.value
    return found
