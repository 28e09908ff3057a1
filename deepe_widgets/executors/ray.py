"""The ray executor: each stage of a claimed job runs as a Ray job (Ray's Jobs API) on the node
that has the resources it asks for.

The database stays the record of every job: a worker claims jobs from it as the local executor's
does, submits the stage as the Ray job `deepe-<job uuid>-<attempt>`, and follows it (status, lease
heartbeat, cancel). The Ray job's entrypoint is the stage runner, papermill in the method's kernel
on that node (`python -m deepe_widgets.executors.ray JOB_ID STAGE SUBMISSION_ID`); it writes
metrics, the record and the output where the database says, as a local run does.

Exactly once: a Ray job outlives the worker that submitted it. A worker that claims a job looks
for the Ray jobs of its earlier attempts by submission id first and follows the newest one still
running (or finished unrecorded) instead of starting a second one; the outcome is written once,
under the lease, by `ExecutionManager.process`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import select

from .. import config, jobs, methods, store
from .. import params as paramlib
from ..errors import DeepeError, StageFailed
from ..store import FINISHED, Job, JobStatus
from .base import (
    Cancelled,
    ExecutionManager,
    ReturnToQueue,
    RunningStage,
    gpus_needed,
)
from .base import (
    stamp_log as _stamp,
)

# Ray's own types (`JobStatus.is_terminal()`), imported inside the functions that need them: this module
# is imported by name only, and a worker that runs locally never imports Ray.
if TYPE_CHECKING:
    from ray.job_submission import JobStatus as RayJobStatus

log = logging.getLogger("deepe.executor.ray")

SHARED_MARK = ".deepe-ray-submission"  # written by the worker; a node that reads it shares the run folder
RESULT_PREFIX = "[deepe-ray] result "
NODE_PREFIX = "[deepe-ray] node "
# Variables a stage needs on the node, besides those named in DEEPE_RAY_ENV: the workspace, the
# database, where the package is, and the Hugging Face settings.
PASSED_PREFIXES = ("DEEPE_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_", "CUDA_")
# The worker host's own GPUs mean nothing on a node: Ray sets a stage's CUDA_VISIBLE_DEVICES to the GPUs
# it reserved there (NUM_GPUS), and DEEPE_GPUS is a local worker's.
HOST_ONLY_NAMES = ("CUDA_VISIBLE_DEVICES", "DEEPE_GPUS")
PASSED_NAMES = ("PYTHONPATH", "PYTHONHASHSEED", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# A Ray job's runtime_env is shown to whoever reaches the dashboard (the Jobs API has no login): a
# variable whose name looks secret never goes there, nor the database URL's password. Nodes read
# their secrets from a file of their own (`node_secrets_file`).
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# What Ray's Jobs API client raises while the head does not answer: ConnectionError (an OSError), or
# RuntimeError on an HTTP error status (a 5xx while the dashboard restarts).
RAY_UNAVAILABLE = (OSError, RuntimeError)


def ray_address() -> str:
    """The Ray dashboard the Jobs API talks to: `RAY_ADDRESS` (`deepe worker --address` sets it)."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address:
        raise DeepeError("the ray executor needs the Ray cluster's address: give --address http://HEAD:8265 "
                         "or set RAY_ADDRESS", field="address")
    return address


def resource_wait_seconds() -> float:
    """How long a stage may wait for a node with its resources before it fails (Ray waits forever)."""
    return float(os.environ.get("DEEPE_RAY_RESOURCE_WAIT_SECONDS", "600"))


def unreachable_seconds() -> float:
    """How long a worker keeps following a Ray job while the cluster does not answer, before it fails."""
    return float(os.environ.get("DEEPE_RAY_UNREACHABLE_SECONDS", "120"))


def submission_id(job: Job, attempt: int | None = None) -> str:
    return f"deepe-{job.uuid}-{job.attempt if attempt is None else attempt}"


def stage_resources(job: Job, cluster_has_gpus: bool = False) -> dict:
    """`{num_gpus, num_cpus, memory_gb}` of a job's stage: the job's parameters over the method's
    defaults over the platform's (`params.RESOURCE_DEFAULTS`). NUM_GPUS given nowhere asks for the one
    GPU a stage uses where the cluster has GPUs (`gpus_needed`), so Ray places it on a GPU node."""
    try:
        defaults = methods.get_method(job.method).default_params
    except DeepeError:
        defaults = {}
    values = {}
    for name, default in paramlib.RESOURCE_DEFAULTS.items():
        raw = job.params.get(name, paramlib.default_value(defaults.get(name, default)))
        values[name.lower()] = float(raw or 0)
    if cluster_has_gpus and "NUM_GPUS" not in job.params and "NUM_GPUS" not in defaults:
        count, required = gpus_needed(job, 1)
        values["num_gpus"] = float(count if required else 0)
    return values


def describe_resources(resources: dict) -> str:
    """What no node offered, in words: "1 GPU", "2 GPUs", else the CPUs and memory."""
    def count(value: float, unit: str) -> str:
        return f"{value:g} {unit}{'' if value == 1 else 's'}"

    if resources["num_gpus"] > 0:
        return count(resources["num_gpus"], "GPU")
    parts = [count(resources["num_cpus"], "CPU")] if resources["num_cpus"] > 0 else []
    if resources["memory_gb"] > 0:
        parts.append(f"{resources['memory_gb']:g} GiB of memory")
    return " and ".join(parts) or "the resources this stage asks for"


def stage_environment() -> dict:
    """The variables the entrypoint gets on its node (Ray's runtime_env `env_vars`, which anyone who
    reaches the dashboard can read): no secret among them (see `SECRET_NAME`)."""
    names = set(PASSED_NAMES) | {n.strip() for n in os.environ.get("DEEPE_RAY_ENV", "").split(",") if n.strip()}
    env = {k: v for k, v in os.environ.items()  # where a node keeps its secrets is the node's own setting
           if (k in names or k.startswith(PASSED_PREFIXES)) and not SECRET_NAME.search(k)
           and k not in (SECRETS_FILE_ENV, *HOST_ONLY_NAMES)}
    held_back = sorted(k for k in names if k in os.environ and SECRET_NAME.search(k))
    if held_back:
        log.warning("not sending %s to the Ray job (its environment is readable on the dashboard): put them in "
                    "the nodes' secrets file (%s)", ", ".join(held_back), SECRETS_FILE_ENV)
    env.update(DEEPE_HOME=str(config.deepe_home()), DEEPE_DB_URL=url_without_password(config.db_url()),
               PYTHONUNBUFFERED="1")
    return env


SECRETS_FILE_ENV = "DEEPE_SECRETS_FILE"


def node_secrets_file() -> Path:
    """Where a node keeps the secrets its stages need: `DEEPE_SECRETS_FILE` (set on the node), else
    `$DEEPE_HOME/secrets.env`."""
    named = os.environ.get(SECRETS_FILE_ENV, "").strip()
    return Path(named).expanduser() if named else config.deepe_home() / "secrets.env"


def load_node_secrets(path: Path | None = None) -> list[str]:
    """Put the node's secrets (`NAME=VALUE` lines: PGPASSWORD or DEEPE_DB_URL, HF_TOKEN …) into this
    process's environment, which the stage runner and its kernel inherit; returns their names. A file
    that others may read is refused, as ssh and libpq refuse theirs."""
    path = path or node_secrets_file()
    if not path.is_file():
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DeepeError(f"the secrets file {path} can be read by others (mode {mode:04o}): chmod 600 {path}",
                         field="secrets")
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier():
            raise DeepeError(f"{path}, line {number}: expected NAME=VALUE", field="secrets")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ[name] = value
        names.append(name)
    return names


def url_without_password(url: str) -> str:
    """The database URL with its password removed: a node finds it in its own secrets file (PGPASSWORD,
    or a full DEEPE_DB_URL) or in PostgreSQL's ~/.pgpass."""
    from sqlalchemy.engine import URL, make_url

    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k.lower() != "password"}
    # URL.set() keeps a password given None: build the URL again without one
    return URL.create(parsed.drivername, username=parsed.username, host=parsed.host, port=parsed.port,
                      database=parsed.database, query=query).render_as_string(hide_password=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayStage(RunningStage):
    """A stage running as a Ray job: it outlives this worker, which only follows it."""

    poll_seconds = 0.5

    def __init__(self, executor: RayExecutor, job: Job, sid: str, stage_log: Path):
        self.executor = executor
        self.job = job
        self.sid = sid
        self.stage_log = stage_log
        self.detail = {"ray_job": sid}
        self.relay = LogRelay(executor.client, sid, stage_log)
        self.status: RayJobStatus | None = None
        self.info = None
        self._running_since: float | None = None
        self._waiting_said = False

    def wait(self, seconds: float) -> bool:
        from ray.job_submission import JobStatus as RayJobStatus

        job, sid = self.job, self.sid
        if self.info is not None:  # the first look goes at once
            time.sleep(seconds)
        # a head that does not answer (a restart, a blip) is asked again; its Ray job runs on meanwhile
        info = self.info = self.executor._ask_ray(job, self.executor.client.get_job_info, sid)
        status = self.status = RayJobStatus(info.status)
        self.relay.poll(final=status.is_terminal())
        if status is RayJobStatus.RUNNING and self._running_since is None:
            self._running_since = time.monotonic()
            log.info("job %s: Ray job %s running, %.1f s after its submission", job.id, sid,
                     time.time() - (info.start_time or 0) / 1000)
        if status.is_terminal():
            return True
        if status is RayJobStatus.PENDING:
            waited = time.time() - (info.start_time or time.time() * 1000) / 1000
            if not self._waiting_said and waited > 5:
                what = describe_resources(self.executor.resources(job))
                _stamp(self.stage_log, f"waiting for a Ray node that offers {what}")
                self._waiting_said = True
            if waited > resource_wait_seconds():
                self.executor._stop(sid)
                what = describe_resources(self.executor.resources(job))
                raise StageFailed("NoNodeOffers", what, platform=True, extra={"ray_job": sid},
                                  message=f"no node offers {what}: the Ray cluster at {self.executor.address} found "
                                          f"none in {waited:.0f} s (DEEPE_RAY_RESOURCE_WAIT_SECONDS)")
        return False

    def running_since(self) -> float | None:
        return self._running_since

    def stop(self, why: str) -> None:
        self.executor._stop(self.sid)
        if why == "cancelled":
            _stamp(self.stage_log, f"cancelled: Ray job {self.sid} stopped")
        else:
            _stamp(self.stage_log, f"stopped: {why} (Ray job {self.sid})")

    def worker_stopping(self, now: bool) -> None:
        raise ReturnToQueue()  # the Ray job runs on; the next worker follows it


class RayExecutor(ExecutionManager):
    """Runs each stage as a Ray job; Cancel stops it, a dead worker's Ray job is followed, not repeated."""

    SWEEP_SECONDS = 15.0  # how often an idle worker stops Ray jobs whose database job is over

    def __init__(self, worker_id: str, heartbeat_seconds: float | None = None, warm_kernels: int | None = None):
        super().__init__(worker_id, heartbeat_seconds, warm_kernels=0)  # kernels start on the nodes
        self.address = ray_address()
        self._last_sweep = 0.0
        self._asked_to_stop: set[str] = set()
        self._gpus_checked: tuple[float, bool] | None = None
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise DeepeError("the ray executor needs Ray's Jobs API: pip install 'deepe-widgets[ray]'",
                             field="executor") from None
        try:
            self.client = JobSubmissionClient(self.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DeepeError(f"no Ray cluster answers at {self.address} ({str(exc).splitlines()[0]})",
                             field="address") from None

    GPU_CHECK_SECONDS = 60.0  # how long the answer to "has the cluster GPUs?" is kept

    def cluster_has_gpus(self) -> bool:
        """Whether a live node of the cluster offers a GPU (asked at most once a minute; no answer: no)."""
        now = time.monotonic()
        if self._gpus_checked is None or now - self._gpus_checked[0] > self.GPU_CHECK_SECONDS:
            try:
                from ray.util.state import list_nodes

                nodes = list_nodes(address=self.address, filters=[("state", "=", "ALIVE")], timeout=10)
                has = any(float((node.resources_total or {}).get("GPU", 0)) > 0 for node in nodes)
            except Exception as exc:  # an older head without the state API: stages ask for GPUs by NUM_GPUS
                log.warning("could not ask the Ray cluster for its GPUs (%s); stages ask for NUM_GPUS only",
                            _first_line(exc))
                has = False
            self._gpus_checked = (now, has)
        return self._gpus_checked[1]

    def resources(self, job: Job) -> dict:
        """`stage_resources` for this cluster."""
        return stage_resources(job, self.cluster_has_gpus())

    def _ask_ray(self, job: Job, fn, *args):
        """`fn(*args)`, a Jobs API call, tried again while the cluster does not answer (a head restart,
        an HTTP 5xx) for up to `unreachable_seconds`, the job's lease kept meanwhile."""
        since = None
        while True:
            try:
                return fn(*args)
            except RAY_UNAVAILABLE as exc:
                if since is None:
                    since = time.monotonic()
                    log.warning("job %s: the Ray cluster at %s did not answer (%s); trying again", job.id,
                                self.address, _first_line(exc))
                elif time.monotonic() - since > unreachable_seconds():
                    raise
                if self.lease is not None:
                    self.lease.renew()
                time.sleep(2.0)

    def _info(self, sid: str, job: Job):
        """The Ray job's details, or None when there is no Ray job of that submission id."""
        def read():
            try:
                return self.client.get_job_info(sid)
            except RuntimeError as exc:
                if "does not exist" in str(exc) or "404" in str(exc):
                    return None
                raise

        return self._ask_ray(job, read)

    def _adoptable(self, job: Job) -> tuple[str, object] | None:
        """The Ray job an earlier attempt (or this one, handed back) started and left to run, or whose
        outcome nobody recorded: newest attempt first."""
        from ray.job_submission import JobStatus as RayJobStatus

        for attempt in range(job.attempt, 0, -1):
            sid = submission_id(job, attempt)
            info = self._info(sid, job)
            if info is None:
                continue
            if RayJobStatus(info.status) is RayJobStatus.STOPPED:
                return None  # stopped (a cancel, or by hand): this attempt starts afresh
            return sid, info
        return None

    def _fresh_submission_id(self, job: Job) -> str:
        sid = submission_id(job)
        number = 1
        while self._info(sid, job) is not None:  # a stopped Ray job of a handed-back attempt keeps its id
            sid, number = f"{submission_id(job)}-{number}", number + 1
        return sid

    def _submit(self, job: Job, run_dir: Path) -> str:
        resources = self.resources(job)
        sid = self._fresh_submission_id(job)
        (run_dir / SHARED_MARK).write_text(sid)
        python = os.environ.get("DEEPE_RAY_PYTHON") or sys.executable
        entrypoint = f"{python} -m deepe_widgets.executors.ray {job.id} {job.stage} {sid}"

        def submit():
            try:
                self.client.submit_job(
                    entrypoint=entrypoint, submission_id=sid,
                    runtime_env={"env_vars": stage_environment()},
                    metadata={"deepe_job": str(job.id), "deepe_stage": job.stage, "deepe_worker": self.worker_id},
                    entrypoint_num_cpus=resources["num_cpus"], entrypoint_num_gpus=resources["num_gpus"],
                    entrypoint_memory=int(resources["memory_gb"] * 2**30) or None)
            except RuntimeError as exc:
                if "already exists" not in str(exc):  # else an earlier try got through, its answer lost
                    raise

        self._ask_ray(job, submit)
        log.info("job %s: stage %s submitted to Ray as %s (%s)", job.id, job.stage, sid, resources)
        return sid

    def execute(self, job: Job) -> None:
        run_dir = Path(job.run_dir)
        stage_log = run_dir / f"{job.stage}.log"
        result_path = run_dir / f".{job.stage}.result.json"
        adopted = self._adoptable(job)
        if adopted is None:
            result_path.unlink(missing_ok=True)
            sid = self._submit(job, run_dir)
            _stamp(stage_log, f"stage {job.stage} submitted to the Ray cluster at {self.address} as {sid}")
        else:
            sid = adopted[0]
            log.info("job %s: following Ray job %s, started by an earlier worker", job.id, sid)
            _stamp(stage_log, f"following Ray job {sid}, started by an earlier worker (attempt {job.attempt})")
        stage = RayStage(self, job, sid, stage_log)
        self.follow(job, stage)
        self._outcome(job, sid, stage.status, stage.info, result_path, stage.relay)

    def _outcome(self, job: Job, sid: str, status: RayJobStatus, info, result_path: Path, relay: "LogRelay") -> None:
        from ray.job_submission import JobStatus as RayJobStatus

        result = None
        if result_path.exists():
            result = json.loads(result_path.read_text())
        elif relay.result is not None:
            result = relay.result
        if status is RayJobStatus.SUCCEEDED and (result is None or result.get("ok")):
            if relay.shared is False:  # README: a shared folder for the run folders is the documented setup
                log.warning("job %s: the run folder is not shared with node %s; its record and output are there",
                            job.id, relay.node)
                _stamp(result_path.with_name(f"{job.stage}.log"), f"the run folder is not shared with node "
                       f"{relay.node}: the record and the output stay there, at {job.run_dir}")
            return
        if status is RayJobStatus.STOPPED:
            if self.lease.call(jobs.get_job, job.id).status == JobStatus.CANCELLING:
                raise Cancelled()
            raise StageFailed("RayJobStopped", info.message, platform=True, extra={"ray_job": sid},
                              message=f"the workbench failed: Ray job {sid} was stopped outside the workbench")
        if not result or result.get("ok"):
            raise StageFailed("RayJobFailed", info.message, platform=True, extra={"ray_job": sid},
                              message=f"the workbench failed: Ray job {sid} failed: {info.message}")
        raise StageFailed.from_dict(result, ray_job=sid)

    def _stop(self, sid: str, timeout: float = 60) -> None:
        """Stop a Ray job and wait until Ray says it stopped (SIGTERM, SIGKILL after a few seconds).

        A job still PENDING has no process yet: Ray queues the stop, and the job stops as soon as a
        node takes it (or Ray's own start timeout fails it), so there is nothing to wait for."""
        from ray.job_submission import JobStatus as RayJobStatus

        self._asked_to_stop.add(sid)
        try:
            self.client.stop_job(sid)
        except RAY_UNAVAILABLE as exc:
            log.warning("could not stop Ray job %s: %s", sid, exc)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = RayJobStatus(self.client.get_job_status(sid))
                if status.is_terminal() or status is RayJobStatus.PENDING:
                    return
            except RAY_UNAVAILABLE:  # a blip while it stops: ask again
                pass
            time.sleep(0.25)

    def warm(self, kernel: str) -> None:
        """Idle: stop Ray jobs whose database job is over (cancelled while no worker followed it)."""
        if time.monotonic() - self._last_sweep < self.SWEEP_SECONDS:
            return
        self._last_sweep = time.monotonic()
        stop_orphans(self)


def stop_orphans(executor: RayExecutor) -> list[str]:
    """Stop this workspace's running Ray jobs whose job finished in the database; returns their ids."""
    from ray.job_submission import JobStatus as RayJobStatus

    running = {}
    for details in executor.client.list_jobs():
        sid = details.submission_id or ""
        if (sid.startswith("deepe-") and sid not in executor._asked_to_stop
                and not RayJobStatus(details.status).is_terminal()):
            running[sid.split("-")[1]] = sid
    if not running:
        return []
    with store.read_session() as s:
        over = s.exec(select(Job.uuid).where(Job.uuid.in_(list(running)), Job.status.in_(FINISHED))).all()
    for uuid in over:
        log.info("stopping Ray job %s: its job is over", running[uuid])
        executor._stop(running[uuid])
    return [running[uuid] for uuid in over]


class LogRelay:
    """Reads a Ray job's logs: the node's first line says whether it shares the run folder; when it
    does not, the logs go into the worker's copy of the stage log (the Train Log shows them)."""

    def __init__(self, client, sid: str, stage_log: Path):
        self.client = client
        self.sid = sid
        self.stage_log = stage_log
        self.shared: bool | None = None
        self.node: str | None = None
        self.result: dict | None = None
        self._seen = 0
        self._last = 0.0

    def poll(self, final: bool = False) -> None:
        if self.shared is True and not final or (not final and time.monotonic() - self._last < 1.0):
            return
        self._last = time.monotonic()
        try:
            text = self.client.get_job_logs(self.sid)
        except RAY_UNAVAILABLE:  # the next poll reads them
            return
        new, self._seen = text[self._seen:], len(text)
        keep = []
        for line in new.splitlines(keepends=True):
            if line.startswith(NODE_PREFIX):
                self.node = line[len(NODE_PREFIX):].split()[0]
                self.shared = "not shared" not in line
            elif line.startswith(RESULT_PREFIX):
                try:
                    self.result = json.loads(line[len(RESULT_PREFIX):])
                except ValueError:
                    pass
            elif self.shared is False:
                keep.append(line)
        if keep:
            with open(self.stage_log, "a", encoding="utf-8") as out:
                out.writelines(keep)


# ---- on the node: the Ray job's entrypoint -------------------------------------------------------

def _tail(path: Path, stop: threading.Event) -> None:
    """Copy the stage log to stdout (the Ray job's logs) as it grows, until `stop`."""
    offset = 0
    while True:
        finished = stop.is_set()
        try:
            with open(path, "rb") as stage_log:
                stage_log.seek(offset)
                chunk = stage_log.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        if finished:
            return
        stop.wait(0.5)


def node_main(argv: list[str]) -> int:
    """Run a job's stage on this node (the Ray job's entrypoint); the last line of output is the result."""
    config.skip_slow_optional_imports()
    job_id, stage, sid = int(argv[0]), argv[1], argv[2]
    try:  # before the database is opened: its password may be among them
        load_node_secrets()
    except DeepeError as exc:
        failure = StageFailed("SecretsFile", exc.message, platform=True).to_dict()
        print(f"{RESULT_PREFIX}{json.dumps(failure)}", flush=True)
        return 1
    from .. import runner  # papermill: on the node only

    job = runner.with_database(f"job {job_id}", jobs.get_job, job_id)
    run_dir = Path(job.run_dir)
    mark = run_dir / SHARED_MARK
    shared = mark.is_file() and mark.read_text().strip() == sid
    print(f"{NODE_PREFIX}{socket.gethostname()} run folder {run_dir} {'shared' if shared else 'not shared'}",
          flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)
    result_path = run_dir / f".{stage}.result.json"
    stop = threading.Event()
    tail = None
    if not shared:  # the worker cannot read the stage log: it comes through the Ray job's logs
        tail = threading.Thread(target=_tail, args=(run_dir / f"{stage}.log", stop), daemon=True)
        tail.start()
    code = runner.main([str(job_id), stage, str(result_path)])
    stop.set()
    if tail is not None:
        tail.join(timeout=10)
    result = result_path.read_text() if result_path.exists() else json.dumps(
        StageFailed("RunnerDied", "the stage runner left no result", platform=True).to_dict())
    print(f"{RESULT_PREFIX}{json.dumps(json.loads(result))}", flush=True)
    return code



if __name__ == "__main__":
    sys.exit(node_main(sys.argv[1:]))
