"""StageRunner: executes one stage notebook with papermill in the stage's kernel.

The executed notebook is written to `<run dir>/<stage>.ipynb` as cells finish
(and on failure, with the failing cell marked); kernel output streams live to
`<run dir>/<stage>.log`. Run as `python -m deepe_widgets.runner JOB_ID STAGE RESULT_JSON`
by a worker, so cancelling can kill the whole process tree.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import nbformat

from .errors import StageFailed


def _stamp(log, message: str, level: str = "INFO") -> None:
    log.write(f"[deepe] {time.strftime('%Y-%m-%d %H:%M:%S')} {level:<7} {message}\n")
    log.flush()


def execute_stage(nb: nbformat.NotebookNode, *, stage: str, kernel: str, parameters: dict,
                  output_path: Path, log_path: Path, cwd: Path) -> None:
    """Run `nb` with `parameters` in `kernel`; raise StageFailed with the failing cell on error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .kernels import kernel_environment
    from .stagefiles import with_platform_cells

    output_path.parent.mkdir(parents=True, exist_ok=True)
    input_path = output_path.with_name(f"{stage}.input.ipynb")
    nbformat.write(with_platform_cells(nb, stage), input_path)
    # Probe the kernel's Python and package versions while the kernel starts, not before.
    from concurrent.futures import ThreadPoolExecutor

    probe_pool = ThreadPoolExecutor(max_workers=1)
    probe = probe_pool.submit(kernel_environment, kernel)
    environment: dict = {}
    failure: StageFailed | None = None
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        _stamp(log, f"stage {stage} starting in kernel {kernel!r}")
        try:
            papermill.execute_notebook(
                str(input_path), str(output_path), parameters=parameters, kernel_name=kernel,
                progress_bar=False, log_output=False, stdout_file=log, stderr_file=log, cwd=str(cwd),
                start_timeout=120, kernel_manager_class=_kernel_manager_logging_to(log),
                # the record is written by then; a graceful shutdown only waits on torch's threads
                shutdown_kernel="immediate")
        except PapermillExecutionError as exc:
            failure = StageFailed(exc.ename, exc.evalue, _failing_cell(output_path), exc.source)
        except Exception as exc:  # a dead kernel, a timeout: nbclient raises its own kinds
            name = type(exc).__name__
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else name
            if "DeadKernel" in name:
                message = f"the kernel died (crashed or killed, e.g. out of memory): {message}"
            failure = StageFailed(name, message, _failing_cell(output_path), "")
        finally:
            environment = probe.result()
            probe_pool.shutdown()
            _annotate_record(output_path, stage, kernel, parameters, environment, failure)
        if failure is not None:
            _stamp(log, f"stage {stage} failed: {failure.ename}: {failure.evalue}", "ERROR")
            raise failure
        _stamp(log, f"stage {stage} succeeded")


def _kernel_manager_logging_to(log):
    """A kernel manager whose kernel process writes its own stdout/stderr to the stage log,
    never to the caller's terminal or CI's pipe."""
    from jupyter_client.manager import AsyncKernelManager

    class StageKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return StageKernelManager


def _failing_cell(output_path: Path) -> int | None:
    """Index in the record of the cell that raised (else the last one that ran)."""
    try:
        nb = nbformat.read(output_path, as_version=4)
    except Exception:
        return None
    for index, cell in enumerate(nb.cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    ran = [i for i, c in enumerate(nb.cells) if c.get("execution_count")]
    return ran[-1] if ran else None


def _annotate_record(output_path: Path, stage: str, kernel: str, parameters: dict, environment: dict,
                     failure: StageFailed | None) -> None:
    """Add provenance to the executed notebook: kernel, Python, package versions, outcome."""
    if not output_path.exists():
        return
    nb = nbformat.read(output_path, as_version=4)
    nb.metadata["deepe"] = {
        "stage": stage, "kernel": kernel, "python": environment.get("python"),
        "python_version": environment.get("python_version"), "packages": environment.get("packages", {}),
        "parameters": parameters, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "failed" if failure else "succeeded",
        "error": None if failure is None else {"ename": failure.ename, "evalue": failure.evalue,
                                                "cell": failure.cell_index},
    }
    nbformat.write(nb, output_path)


def stage_parameters(job, stage: str) -> dict:
    """The parameters a job's stage notebook receives: its own plus the platform's paths."""
    from . import datasets, models

    run_dir = Path(job.run_dir)
    values = dict(job.params)
    values["JOB_ID"] = job.id
    values["OUTPUT_DIR"] = str(run_dir / "output")
    if job.kind != "train":  # save jobs carry their model paths in params
        return values
    if job.base_model:
        values["MODEL_PATH"] = models.get_model(job.base_model).path
    if job.dataset:
        values["DATASET_PATH"] = datasets.get_dataset(job.dataset).path
    return values


def run_job_stage(job_id: int, stage: str) -> None:
    """Execute a claimed job's stage (called in the runner subprocess)."""
    from . import jobs, methods

    job = jobs.get_job(job_id)
    method = methods.get_method(job.method)
    info = method.stages[stage]
    from .stagefiles import load_stage_notebook

    nb = load_stage_notebook(Path(info["file"]), stage)
    run_dir = Path(job.run_dir)
    previous = run_dir / f"{stage}.ipynb"
    if job.attempt > 1 and previous.exists():  # keep every attempt's record
        previous.rename(run_dir / f"{stage}.attempt{job.attempt - 1}.ipynb")
    execute_stage(nb, stage=stage, kernel=info["kernel"], parameters=stage_parameters(job, stage),
                  output_path=run_dir / f"{stage}.ipynb", log_path=run_dir / f"{stage}.log", cwd=run_dir)


def _exit_with_parent() -> None:
    """If the worker dies (even by kill -9), stop: the kernel follows its parent (ipykernel
    polls for that), so a requeued attempt never runs beside an orphan."""
    import os
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                from .executors import kill_process_tree

                for child in __import__("psutil").Process().children(recursive=True):
                    kill_process_tree(child.pid)
                os._exit(3)

    threading.Thread(target=watch, name="deepe-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_id, stage, result_path = int(argv[0]), argv[1], Path(argv[2])
    _exit_with_parent()
    result: dict = {"ok": False}
    try:
        run_job_stage(job_id, stage)
        result = {"ok": True}
    except StageFailed as exc:
        result = {"ok": False, "ename": exc.ename, "evalue": exc.evalue, "cell": exc.cell_index,
                  "source": exc.source[:2000]}
    except Exception as exc:
        traceback.print_exc()
        result = {"ok": False, "ename": type(exc).__name__, "evalue": str(exc), "cell": None}
    result_path.write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
