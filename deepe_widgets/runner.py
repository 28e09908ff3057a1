"""The stage runner: executes one stage notebook with papermill in the stage's kernel (`execute_stage`).

The executed notebook is written to `<run dir>/<stage>.ipynb` as cells finish
(and on failure, with the failing cell marked); kernel output streams live to
`<run dir>/<stage>.log`. Run by a worker in its own process, so cancelling can kill
the whole process tree:

    python -m deepe_widgets.runner JOB_ID STAGE RESULT_JSON
    python -m deepe_widgets.runner --standby KERNEL     (then one JSON line on stdin:
                                                         {"job": ID, "stage": S, "result": PATH})

A standby runner imports papermill and starts its kernel before a job exists, so the
job that takes it skips the ~2 s of process and kernel start (see `WarmKernel`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import config

if __name__ == "__main__":
    config.skip_slow_optional_imports()

import nbformat  # noqa: E402
import papermill  # noqa: E402
import psutil  # noqa: E402
from jupyter_client.blocking import BlockingKernelClient  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from jupyter_core.utils import run_sync  # noqa: E402
from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: E402
from papermill.exceptions import PapermillExecutionError  # noqa: E402

from . import datasets, deployments, evaluations, jobs, methods, models, store  # noqa: E402
from . import params as paramlib  # noqa: E402
from . import provenance as provenancelib  # noqa: E402
from .config import StageName  # noqa: E402
from .errors import DeepeError, StageFailed  # noqa: E402
from .executors import DB_UNAVAILABLE  # noqa: E402
from .kernels import kernel_environment, require_kernel  # noqa: E402
from .paths import check_allowed  # noqa: E402
from .processes import kill_process_tree  # noqa: E402
from .scriptmode import load_stage_notebook  # noqa: E402
from .stagefiles import notebook_parameters, with_platform_cells  # noqa: E402
from .store import JobKind  # noqa: E402

logger = logging.getLogger("deepe.runner")


def _stamp(log, message: str, level: str = "INFO") -> None:
    log.write(f"[deepe] {time.strftime('%Y-%m-%d %H:%M:%S')} {level:<7} {message}\n")
    log.flush()


class WarmKernel:
    """A stage kernel started before its job is known.

    The kernel process's own stdout/stderr (what bypasses ipykernel's capture) goes through
    a pipe to the stage log it is later given, buffered until then: nothing reaches the
    worker's terminal and nothing is lost. The job moves the kernel into its run folder
    before the first cell (`cd`), as a kernel started there would be.
    """

    def __init__(self, kernel: str, cwd: Path):
        self.kernel = kernel
        self.started_at = time.time()
        self._buffer = bytearray()
        self._target = None
        self._lock = threading.Lock()
        read_fd, write_fd = os.pipe()
        threading.Thread(target=self._relay, args=(read_fd,), name="deepe-kernel-output", daemon=True).start()
        self.km = _kernel_manager_logging_to(write_fd)(kernel_name=kernel)
        try:
            run_sync(self.km.start_kernel)(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
        finally:
            os.close(write_fd)  # the kernel holds its own copy
        self._kc = BlockingKernelClient()
        self._kc.load_connection_info(self.km.get_connection_info())
        self._kc.start_channels()
        self._kc.wait_for_ready(timeout=120)
        self.ready_seconds = time.time() - self.started_at

    def _relay(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                with self._lock:
                    if self._target is None:
                        self._buffer += chunk
                        continue
                    try:
                        self._target.write(chunk.decode("utf-8", "replace"))
                        self._target.flush()
                    except (OSError, ValueError):  # the stage log is closed: the stage is over
                        return

    def attach(self, log, cwd: Path) -> None:
        """Send the kernel's output to `log` from now on, and move the kernel into `cwd`."""
        with self._lock:
            if self._buffer:
                log.write(self._buffer.decode("utf-8", "replace"))
                self._buffer.clear()
            self._target = log
        code = f"__import__('os').chdir({str(cwd)!r})"
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus is not None:  # the job's leased GPUs, known after the kernel started (CUDA reads it at first use)
            code += f"; __import__('os').environ['CUDA_VISIBLE_DEVICES'] = {gpus!r}"
        reply = self._kc.execute_interactive(code, silent=True, store_history=False, timeout=30)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"could not move the kernel into {cwd}: {reply['content'].get('evalue')}")
        self._kc.stop_channels()

    def is_alive(self) -> bool:
        return bool(run_sync(self.km.is_alive)())

    def shutdown(self) -> None:
        try:
            if self.is_alive():
                run_sync(self.km.shutdown_kernel)(now=True)
        finally:
            run_sync(self.km.cleanup_resources)()


def execute_stage(nb: nbformat.NotebookNode, *, stage: str, kernel: str, parameters: dict,
                  output_path: Path, log_path: Path, cwd: Path, warm: WarmKernel | None = None,
                  file_names: dict[str, str] | None = None, provenance: dict | None = None,
                  timeout: float | None = None) -> None:
    """Run `nb` with `parameters` in `kernel`; raise StageFailed with the failing cell on error.

    With `warm` (a kernel of the same kernelspec started ahead), the stage runs in it. With
    `timeout` (seconds), a stage still running then has its kernel killed and fails as
    "ran past STAGE_TIMEOUT" (a job's executor enforces its own from outside, on the whole runner).
    `provenance` (what the run is made from, see `inputs_provenance`) goes into the record's
    `metadata.deepe.provenance`, completed in place with the kernel's packages and device."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    Path(cwd, provenancelib.STAGE_DEVICE_FILE).unlink(missing_ok=True)  # an earlier attempt's word
    input_path = output_path.with_name(f"{stage}.input.ipynb")
    nb = with_platform_cells(nb, stage)
    # papermill reads the language from the kernelspec: a notebook converted from a .py has none
    nb.metadata["kernelspec"] = kernelspec_metadata(kernel)
    nbformat.write(nb, input_path)
    # Probe the kernel's Python and package versions while the stage runs, not before; for a kernel
    # started ahead too: a package upgraded since is what the stage imports.
    probe_pool = ThreadPoolExecutor(max_workers=1)
    probe = probe_pool.submit(_probe_kernel, kernel)
    environment: dict = {}
    failure: StageFailed | None = None
    kernels = StageKernels([warm.km] if warm is not None else [])
    watchdog = threading.Timer(timeout, kernels.stop_all) if timeout else None
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        if warm is None:
            _stamp(log, f"stage {stage} starting in kernel {kernel!r}")
            kernel_args: dict = {"kernel_manager_class": _kernel_manager_logging_to(log, kernels)}
        else:
            _stamp(log, f"stage {stage} starting in kernel {kernel!r} (started ahead of the job, "
                        f"pid {warm.km.provisioner.pid}, ready in {warm.ready_seconds:.1f} s)")
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            if warm is not None:
                warm.attach(log, cwd)
                kernel_args = {"km": warm.km}
            papermill.execute_notebook(
                str(input_path), str(output_path), parameters=parameters, kernel_name=kernel,
                progress_bar=False, log_output=False, stdout_file=log, stderr_file=log, cwd=str(cwd),
                start_timeout=120,
                # the record is written by then; a graceful shutdown only waits on torch's threads
                shutdown_kernel="immediate", **kernel_args)
        except Exception as exc:
            if kernels.stopped.is_set():  # its kernel was killed for it, whatever papermill made of that
                failure = StageFailed("StageTimeout", f"stage {stage} ran past STAGE_TIMEOUT={timeout:g} s",
                                      _failing_cell(output_path), "")
            else:
                failure = _stage_failure(exc, output_path, file_names)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if warm is not None:  # papermill shuts down only the kernels it started
                warm.shutdown()
            environment = probe.result()
            probe_pool.shutdown()
            # what the stage's torch used, over nvidia-smi's word: a GPU it could not use is no GPU
            environment["device"] = provenancelib.stage_device(environment.get("device"),
                                                               provenancelib.read_stage_device(cwd))
            if provenance is not None:
                provenance.update(kernel=kernel, python_version=environment.get("python_version"),
                                  packages=environment.get("packages", {}), device=environment.get("device"))
            _annotate_record(output_path, stage, kernel, parameters, environment, failure, provenance)
        if failure is not None:
            _stamp(log, f"stage {stage} failed: {failure.ename}: {failure.evalue}", "ERROR")
            raise failure
        _stamp(log, f"stage {stage} succeeded")


def _stage_failure(exc: Exception, output_path: Path, file_names: dict[str, str] | None) -> StageFailed:
    """What papermill raised, as the stage's failure: the user's error with its cell, or what became of
    the kernel or the workbench."""
    if isinstance(exc, PapermillExecutionError):
        return StageFailed(exc.ename, exc.evalue, _failing_cell(output_path), exc.source,
                           location=_user_frame(exc.traceback, file_names or {}))
    if isinstance(exc, DeadKernelError):
        return StageFailed("DeadKernelError", f"the kernel died (crashed or killed, e.g. out of memory): "
                           f"{_first_line(exc)}", _failing_cell(output_path), "")
    if isinstance(exc, CellTimeoutError):
        return StageFailed("CellTimeoutError", f"a cell ran past its time limit: {_first_line(exc)}",
                           _failing_cell(output_path), "")
    # the kernel could not start, the record could not be written …
    return StageFailed(type(exc).__name__, _first_line(exc), _failing_cell(output_path), "", platform=True)


def _probe_kernel(kernel: str) -> dict:
    """The kernel's Python, package versions and the device its torch trains on."""
    environment = kernel_environment(kernel)
    if environment.get("probe_error"):
        environment["device"] = {"type": None, "probe_error": environment["probe_error"]}
    else:
        environment["device"] = provenancelib.probe_device(environment.get("packages", {}).get("torch"))
    return environment


def kernelspec_metadata(kernel: str) -> dict:
    """The `kernelspec` notebook metadata of an installed kernel."""
    spec = KernelSpecManager().get_kernel_spec(kernel)
    return {"name": kernel, "display_name": spec.display_name, "language": spec.language}


_FRAME = re.compile(r'File (?:"(?P<q>[^"]+)", line |(?P<p>/[^\s:]+):)(?P<line>\d+)')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _user_frame(traceback_lines: list[str], file_names: dict[str, str]) -> str:
    """"name.py, line N" of the innermost frame in a file of the user's (not a library, not the
    workbench), named as the user named it; "" when there is none."""
    found = ""
    for match in _FRAME.finditer(_ANSI.sub("", "\n".join(traceback_lines or []))):
        path = match.group("q") or match.group("p")
        if "site-packages" in path or "/deepe_widgets/" in path or path.startswith("<"):
            continue
        found = f"{file_names.get(path, Path(path).name)}, line {match.group('line')}"
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StageKernels:
    """The kernels a stage started: `stop_all` kills them, and any launched after it."""

    def __init__(self, managers: list):
        self.managers = list(managers)
        self.stopped = threading.Event()

    def add(self, km) -> None:
        self.managers.append(km)
        if self.stopped.is_set():  # it came up after its time ran out
            self._kill(km)

    def stop_all(self) -> None:
        self.stopped.set()
        for km in list(self.managers):
            self._kill(km)

    @staticmethod
    def _kill(km) -> None:
        pid = getattr(getattr(km, "provisioner", None), "pid", None)
        if pid:
            kill_process_tree(pid)


def _kernel_manager_logging_to(log, kernels: StageKernels | None = None):
    """A kernel manager whose kernel process writes its own stdout/stderr to `log` (the stage
    log, or a file descriptor), never to the caller's terminal or CI's pipe; each one that
    launches a kernel is added to `kernels`."""
    class StageKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if any("ipykernel" in part for part in kernel_cmd):
                # the kernel app's own warnings are about how the platform connects to it (its
                # "running over TCP without encryption" on loopback); the user's warnings still show
                kernel_cmd = [*kernel_cmd, "--IPKernelApp.log_level=ERROR"]
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            launched = await super()._async_launch_kernel(kernel_cmd, **kw)
            if kernels is not None:
                kernels.add(self)
            return launched

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
                     failure: StageFailed | None, provenance: dict | None = None) -> None:
    """Add provenance to the executed notebook: kernel, Python, package versions, outcome, and
    what a re-run checks (file hashes, seed, model fingerprint, device) under `provenance`."""
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
    if provenance is not None:
        nb.metadata["deepe"]["provenance"] = provenance
    nbformat.write(nb, output_path)


def inputs_provenance(*, stage_files: dict[str, str | Path], dataset: tuple[str, str | Path] | None,
                      model: tuple[str, str | Path] | None, parameters: dict, defaults: dict[str, str]) -> dict:
    """What a run is made from, before it runs: SHA-256 of each stage file and of the dataset file,
    the base model's fingerprint, the seed (`SEED`, recorded when defaulted too) and every
    parameter's value. `dataset` / `model` are (registered name, path); `defaults` the method's
    parameter defaults (source text). An input that cannot be read is recorded with its error."""
    def guarded(read, path) -> dict:
        try:
            return read(path)
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc.strerror or exc}"}

    def file_hash(path) -> dict:
        return {"sha256": provenancelib.sha256_file(path)}

    typed = {name: paramlib.default_value(source) for name, source in defaults.items()}
    effective = {k: v for k, v in {**typed, **parameters}.items() if k not in paramlib.PLATFORM_SET}
    out: dict = {
        "stage_files": {stage: {"file": Path(path).name, **guarded(file_hash, path)}
                        for stage, path in stage_files.items()},
        "seed": effective.get("SEED"), "seed_given": "SEED" in parameters, "parameters": effective,
    }
    if dataset is not None:
        out["dataset"] = {"name": dataset[0], **guarded(provenancelib.file_fingerprint, dataset[1])}
    if model is not None:
        out["base_model"] = {"name": model[0], **guarded(provenancelib.model_fingerprint, model[1])}
    return out


def stage_files_of(job) -> dict[str, methods.Stage]:
    """The stage files a job runs, by stage: its method's (all of them, for
    a training: what a re-run compares), a deployment's or an evaluation's one."""
    if job.kind == JobKind.DEPLOY:
        return {StageName.DEPLOYMENT: deployments.stage_info(job)}
    if job.kind == JobKind.EVALUATE:
        return {StageName.EVALUATION: evaluations.stage_info(job)}
    return methods.stages_of(methods.get_method(job.method))


def job_provenance(job) -> dict:
    """`inputs_provenance` of a job: its method's stage files (the workspace copies, hashed
    again: what runs), its dataset file and base model."""
    stage_files = stage_files_of(job)
    dataset = None
    if job.kind in (JobKind.TRAIN, JobKind.EVALUATE) and job.dataset:
        dataset = (job.dataset, datasets.get_dataset(job.dataset).path)
    model = (job.base_model, models.get_model(job.base_model).path) if job.base_model else None
    out = {"method": job.method, "stage": job.stage, **inputs_provenance(
        stage_files={stage: info.file for stage, info in stage_files.items()}, dataset=dataset, model=model,
        parameters=dict(job.params),
        defaults=methods.get_method(job.method).default_params if job.kind == JobKind.TRAIN else {})}
    for stage, info in stage_files.items():  # the name the user gave the file, for messages
        out["stage_files"][stage]["source"] = info.source_name
    return out


def _store_provenance(job_id: int, provenance: dict) -> None:
    """Keep the provenance on the job row too, beside what was there (a re-run's `rerun_of`)."""
    table = store.Job.__table__
    with store.get_engine().begin() as conn:
        before = conn.execute(store.select(table.c.provenance).where(table.c.id == job_id)).scalar()
        conn.execute(table.update().where(table.c.id == job_id).values(provenance={**(before or {}), **provenance}))


def stage_parameters(job, stage: str) -> dict:
    """The parameters a job's stage notebook receives: its own plus the platform's paths."""
    run_dir = Path(job.run_dir)
    values = dict(job.params)
    values["JOB_ID"] = job.id
    values["OUTPUT_DIR"] = str(run_dir / "output")
    if job.kind != JobKind.TRAIN:  # save jobs carry their model paths in params
        return values
    if job.base_model:
        values["MODEL_PATH"] = models.get_model(job.base_model).path
    if job.dataset:
        values["DATASET_PATH"] = datasets.get_dataset(job.dataset).path
    return values


def with_database(what: str, fn, *args):
    """`fn(*args)`, tried again while the database does not answer (a restart), as long as the
    worker would keep its lease; then the last error is raised."""
    deadline = time.monotonic() + config.lease_seconds()
    wait = 0.5
    while True:
        try:
            return fn(*args)
        except DB_UNAVAILABLE as exc:
            if time.monotonic() + wait > deadline:
                raise
            logger.warning("%s: the database did not answer (%s); trying again in %.1f s", what,
                           _first_line(exc), wait)
            time.sleep(wait)
            wait = min(5.0, wait * 2)


def run_job_stage(job_id: int, stage: str, warm: WarmKernel | None = None) -> None:
    """Execute a claimed job's stage (called in the runner subprocess)."""
    job = with_database(f"job {job_id}", jobs.get_job, job_id)
    run_dir = Path(job.run_dir)
    record = run_dir / f"{stage}.ipynb"
    if record.exists():  # keep every earlier attempt's record (a hand-back re-runs the same attempt)
        number = 1
        while (run_dir / f"{stage}.attempt{number}.ipynb").exists():
            number += 1
        record.rename(run_dir / f"{stage}.attempt{number}.ipynb")
    try:
        info = with_database(f"job {job.id}", lambda: stage_files_of(job)[stage])
        nb = load_stage_notebook(Path(info.file), stage, info.kernel, info.args_template)
        parameters = with_database(f"job {job.id}", stage_parameters, job, stage)
        if job.kind == JobKind.DEPLOY:  # decided here and now: this host, a free port, the server's key
            parameters.update(deployments.run_time_parameters(job))
    except Exception as exc:  # a stage that never started gets its record too
        _failed_before_start(record, stage, exc)
        if warm is not None:
            warm.shutdown()
        raise
    if warm is not None and (warm.kernel != info.kernel or not warm.is_alive()):
        warm.shutdown()  # not the kernel this stage names (or it died waiting): start a fresh one
        warm = None
    try:
        # keeps a re-run's `rerun_of`
        provenance = {**(job.provenance or {}), **with_database(f"job {job.id}", job_provenance, job)}
        with_database(f"job {job.id}", _store_provenance, job.id, provenance)  # a run that dies still has it
    except Exception:  # a record without provenance beats a stage that never runs
        logger.exception("job %s: could not record its provenance", job.id)
        provenance = None
    try:
        execute_stage(nb, stage=stage, kernel=info.kernel, parameters=parameters,
                      output_path=record, log_path=run_dir / f"{stage}.log", cwd=run_dir, warm=warm,
                      file_names={str(Path(info.file).resolve()): Path(info.source).name},
                      provenance=provenance)
    finally:
        if provenance is not None:  # now with the kernel's packages and device
            try:
                with_database(f"job {job.id}", _store_provenance, job.id, provenance)
            except Exception:  # the record holds it too: the stage's outcome matters more
                logger.exception("job %s: could not record its provenance", job.id)


def _path_or_registered(value: str, lookup, what: str) -> Path:
    path = Path(value).expanduser()
    if path.exists():
        return check_allowed(path, what, what)
    try:
        return Path(lookup(value).path)
    except DeepeError:
        raise DeepeError(f"{what} {value!r} is neither an existing path nor a registered name",
                         field=what) from None


def run_local_test(file: str | Path, base_model: str, dataset: str, overrides: dict | None = None, *,
                   kernel: str = config.DEFAULT_KERNEL, output: str | Path = "deepe-test",
                   on_start=None) -> dict:
    """Seed 003's local test: run a training file once, without the queue or the database.

    `base_model` / `dataset` are paths or registered names. Returns `{ok, output, saved,
    record, log, error, cell}`: whether training finished and where the output went.
    `on_start(log_path)` is called once the inputs are accepted, before the kernel starts.
    """
    require_kernel(kernel, field="kernel")
    nb = load_stage_notebook(check_allowed(file, StageName.TRAINING, "stage file"), StageName.TRAINING, kernel)
    model_path = _path_or_registered(base_model, models.get_model, "base model")
    dataset_path = _path_or_registered(dataset, datasets.get_dataset, "dataset")
    defaults = {k: v["default"] for k, v in notebook_parameters(nb).items()}
    values = paramlib.resolve(overrides or {}, defaults)
    provenance = inputs_provenance(stage_files={StageName.TRAINING: Path(file).expanduser().resolve()},
                                   dataset=(str(dataset), dataset_path), model=(str(base_model), model_path),
                                   parameters=dict(values), defaults=defaults)
    out_dir = check_allowed(output, "output", "output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    values.update(MODEL_PATH=str(model_path), DATASET_PATH=str(dataset_path),
                  OUTPUT_DIR=str(out_dir / "output"), JOB_ID=0)
    result = {"ok": True, "output": str(out_dir / "output"), "record": str(out_dir / "training.ipynb"),
              "log": str(out_dir / "training.log"), "error": None, "cell": None, "saved": []}
    if on_start is not None:
        on_start(result["log"])
    try:
        execute_stage(nb, stage=StageName.TRAINING, kernel=kernel, parameters=values,
                      output_path=out_dir / "training.ipynb", log_path=out_dir / "training.log", cwd=out_dir,
                      provenance=provenance)
    except StageFailed as exc:
        result.update(ok=False, error=f"{exc.ename}: {exc.evalue}", cell=exc.cell_index)
    result["saved"] = sorted(p.name for p in (out_dir / "output").glob("*") if p.is_file())
    return result


def _failed_before_start(record: Path, stage: str, exc: Exception) -> None:
    """A record for a stage that could not start: what was wrong, where a reader looks first."""
    message = exc.message if isinstance(exc, DeepeError) else f"{type(exc).__name__}: {exc}"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"**The {stage} stage could not start.**\n\n{message}")]
    nb.metadata["deepe"] = {"stage": stage, "status": "failed", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "error": {"ename": type(exc).__name__, "evalue": message, "cell": None}}
    record.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, record)


def _exit_with_parent() -> None:
    """If the worker dies (even by kill -9), stop: the kernel follows its parent (ipykernel
    polls for that), so a requeued attempt never runs beside an orphan."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                for child in psutil.Process().children(recursive=True):
                    kill_process_tree(child.pid)
                os._exit(3)

    threading.Thread(target=watch, name="deepe-parent-watch", daemon=True).start()


def _standby(kernel: str) -> tuple[int, str, Path, WarmKernel | None] | None:
    """Start `kernel`, then wait for the worker to hand over a job (None: it never did)."""
    warm = None
    try:
        store.get_engine()  # connected (and the schema checked) before the job, too

        warm = WarmKernel(kernel, Path.cwd())
        logger.info("kernel %r ready in %.1f s, waiting for a job", kernel, warm.ready_seconds)
    except Exception:  # the job will start its kernel the usual way and report what fails
        logger.exception("could not start kernel %r ahead of its job", kernel)
    line = sys.stdin.readline()
    if not line.strip():
        if warm is not None:
            warm.shutdown()
        return None
    task = json.loads(line)
    os.environ.update(task.get("environment") or {})  # the job's GPUs: for its kernel (`attach`) and provenance
    run_dir = Path(task["result"]).parent
    with open(run_dir / "runner.log", "ab") as runner_log:  # from now on this job's runner log
        os.dup2(runner_log.fileno(), 1)
        os.dup2(runner_log.fileno(), 2)
    os.chdir(run_dir)
    return int(task["job"]), task["stage"], Path(task["result"]), warm


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config.configure_logging()
    _exit_with_parent()
    warm = None
    if argv[0] == "--standby":
        handed = _standby(argv[1])
        if handed is None:
            return 0
        job_id, stage, result_path, warm = handed
    else:
        job_id, stage, result_path = int(argv[0]), argv[1], Path(argv[2])
    result: dict = {"ok": False}
    try:
        run_job_stage(job_id, stage, warm)
        result = {"ok": True}
    except StageFailed as exc:
        result = exc.to_dict()  # the executor reads it back with StageFailed.from_dict
    except Exception as exc:  # before the stage ran: the platform failed, not the user's code
        logger.exception("job %s: stage %s could not run", job_id, stage)
        result = StageFailed(type(exc).__name__, str(exc), platform=True).to_dict()
    result_path.write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
