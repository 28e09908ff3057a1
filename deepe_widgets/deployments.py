"""Live Models: a registered model served as an OpenAI-compatible endpoint (vLLM).

`submit_deploy` queues a `deploy` job and registers the Live Model `<model>_l_<4 of the job
uuid>` at once, `starting`. The job runs a deployment stage notebook (the method's own, or the
built-in `method_templates/vllm/deployment.ipynb` in the `deepe-vllm` kernel) that starts the
server in a session of its own (it outlives the notebook), waits for `/v1/models` and writes
`output/server.json`; the worker then publishes the model `live` with its URL and pid, and
supervises it: a server whose process is gone is `failed` with the last lines of its log.
Adapters of one base share one server (loaded at run time). `stop` ends a server (or unloads an
adapter) and marks it `stopped`.

What depends on the machine is decided when the job runs, on the host that runs it
(`run_time_parameters`): that host is recorded as the server's, a free port is chosen there
(unless `--port` named one), an adapter joins a server of its base live there, and every new
server gets an API key of its own, written to `<run folder>/api-key` (0600). The server reads
it from `VLLM_API_KEY` in its environment; the key is never a parameter, a command-line
argument or a database value: clients read the file (`api_key`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from sqlmodel import select

from . import config, envs, gpus, jobs, methods, models, store, trainings
from .config import StageName
from .errors import DeepeError
from .models import SERVING_STATUSES, LiveState, LiveStatus
from .names import check_name
from .runtime.devices import Device
from .store import Job, JobKind, JobStatus, ModelKind

API_KEY_FILE_NAME = "api-key"  # in the deployment's run folder, 0600; adapters sharing a server share it
BUILTIN_ENGINE_METHOD = "vllm"  # the job's method label when the built-in deployment notebook runs
STOP_GRACE_SECONDS = 20.0


# vLLM 0.32's `MaxLoRARanks` (vllm/config/lora.py): --max-lora-rank takes only these
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_MAX_MODEL_LEN = 8192  # a 128k-context model's full KV cache does not fit a 24 GB card beside 7B weights
CPU_MAX_MODEL_LEN = 512  # with 1 GiB of KV cache (KV_CACHE_GB), what a CPU box serves at a usable speed
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # the share of its card the server takes (vLLM 0.32's own is 0.92)

RUNNING_STATES = SERVING_STATUSES  # a Live Model's state and status live in `models` (LiveState, LiveStatus)


def builtin_stage() -> methods.Stage:
    """The built-in vLLM deployment stage: notebook and kernel."""
    path = config.package_templates_dir() / "vllm" / "deployment.ipynb"
    return methods.Stage(file=str(path), source=str(path), kernel=envs.kernel_name("vllm"))


def stage_info(job: Job) -> methods.Stage:
    """A deploy job's stage: its method's `deployment` stage when it has one, else the built-in
    vLLM notebook."""
    if job.method and job.method != BUILTIN_ENGINE_METHOD:
        method = methods.get_method(job.method)
        if StageName.DEPLOYMENT in method.stages:
            return methods.stage_of(method, StageName.DEPLOYMENT)
    return builtin_stage()


def vllm_lora_rank(rank: int) -> int:
    """The --max-lora-rank that serves an adapter of rank `rank`: the smallest value vLLM accepts that is
    not below it (12 -> 16, 24 -> 32, 48 -> 64); an adapter above vLLM's largest is refused."""
    fitting = [allowed for allowed in VLLM_LORA_RANKS if allowed >= rank]
    if not fitting:
        raise DeepeError(f"the adapter's LoRA rank {rank} is above {VLLM_LORA_RANKS[-1]}, the largest vLLM serves; "
                         f"train it with LORA_RANK {VLLM_LORA_RANKS[-1]} or less, or save it as a Complete Model "
                         f"and deploy that", field="model")
    return fitting[0]


def model_context_length(model_config: dict) -> int | None:
    """The longest sequence a model takes (`max_position_embeddings`, also in a vision-language model's
    `text_config`), or None when its config does not say."""
    for config_part in (model_config, model_config.get("text_config") or {}):
        value = config_part.get("max_position_embeddings") if isinstance(config_part, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def read_model_config(path: str | Path) -> dict:
    """A model folder's config.json ({} when there is none, e.g. a GGUF file)."""
    try:
        loaded = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def vllm_engine_flags(device: Device | str, model_config: dict, *, max_model_len: int | None = None,
                      gpu_memory_utilization: float | None = None, lora_rank: int | None = None) -> list[str]:
    """The vLLM server flags that depend on the device and the model (the deployment notebook adds the
    model, host, port, names and the key guard): CUDA graphs on a GPU (`--enforce-eager` on the CPU only);
    `--max-model-len` `max_model_len`, by default 8192 or the model's own length if shorter (512 on the
    CPU); `--gpu-memory-utilization` on a GPU (0.9 unless given); with `lora_rank`, LoRA enabled at
    the smallest rank vLLM accepts that fits it. A value that cannot work is refused in one sentence."""
    device_type = device.type if isinstance(device, Device) else str(device)
    on_cpu = device_type == "cpu"
    longest = model_context_length(model_config)
    if max_model_len is not None:
        if max_model_len < 1:
            raise DeepeError(f"--max-model-len must be 1 or more, not {max_model_len}", field="max_model_len")
        if longest is not None and max_model_len > longest:
            raise DeepeError(f"--max-model-len {max_model_len} is longer than the model takes "
                             f"(max_position_embeddings {longest})", field="max_model_len")
        length = max_model_len
    else:
        length = min(CPU_MAX_MODEL_LEN if on_cpu else DEFAULT_MAX_MODEL_LEN, longest or DEFAULT_MAX_MODEL_LEN)
    flags = ["--enforce-eager"] if on_cpu else []  # CUDA graphs exist on a GPU only, and speed decoding there
    flags += ["--max-model-len", str(length)]
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise DeepeError(f"--gpu-memory-utilization is the share of the GPU the server takes, above 0 and at "
                         f"most 1; not {gpu_memory_utilization:g}", field="gpu_memory_utilization")
    if not on_cpu:
        flags += ["--gpu-memory-utilization", f"{gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION:g}"]
    if lora_rank is not None:
        flags += ["--enable-lora", "--max-lora-rank", str(vllm_lora_rank(lora_rank))]
    return flags


def served_lora_rank(flags: list[str]) -> int | None:
    """The --max-lora-rank among a server's engine flags (None: LoRA is not enabled there)."""
    try:
        return int(flags[flags.index("--max-lora-rank") + 1])
    except (ValueError, IndexError, TypeError):
        return None


def check_joins(server: store.ModelRecord, adapter_rank: int) -> None:
    """Refuse an adapter whose rank is above what the live server of its base was started with (vLLM
    would refuse to load it)."""
    try:
        served = served_lora_rank(jobs.get_job(server.job_id).params.get("ENGINE_FLAGS") or [])
    except DeepeError:
        served = None
    if served is not None and adapter_rank > served:
        raise DeepeError(f"the adapter's LoRA rank {adapter_rank} is above the --max-lora-rank {served} of "
                         f"{server.name}, the live server of its base; stop {server.name} and deploy again",
                         field="model")


def check_port(host: str, port: int) -> None:
    """Refuse a port that is out of range or already taken on `host`."""
    if not 1024 <= port <= 65535:
        raise DeepeError(f"port must be between 1024 and 65535, not {port}", field="port")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DeepeError(f"port {port} on {host} is in use ({exc.strerror}); choose another with --port",
                             field="port") from None
    for row in list_live():  # a queued deployment has asked for it too
        state = LiveState.from_meta(row.meta)
        if state.status == LiveStatus.STARTING and state.port == port and state.host == host \
                and not state.shared_with:
            raise DeepeError(f"port {port} is taken by deployment {row.name!r}, which is starting", field="port")


def _check_folder(path: str, what: str) -> None:
    if not path or not Path(path).is_dir():
        raise DeepeError(f"the {what} folder {path!r} is gone; it cannot be deployed", field="model")


def _live_server_for_base(base_path: str) -> store.ModelRecord | None:
    """A live server of this host that serves `base_path` with LoRA enabled: adapters join it
    (called where the deploy job runs)."""
    for row in list_live():
        state = LiveState.from_meta(row.meta)
        if state.status == LiveStatus.LIVE and state.lora and state.base_path == base_path \
                and state.server_host == socket.gethostname() and state.api_key_file and _server_alive(state.pid):
            return row
    return None


def joins_live_server(job: Job) -> bool:
    """A deploy job of an adapter whose base is served live on this host: it loads into that server
    (and needs no GPU of its own)."""
    return bool(job.params.get("ADAPTER_PATH")) and _live_server_for_base(job.params.get("MODEL_PATH", "")) is not None


def check_generates(record: store.ModelRecord) -> None:
    """Refuse to deploy a model that generates nothing (a reward model scores answers): vLLM serves generation."""
    training_type = trainings.for_model(record)
    if training_type.scores_answers:
        raise DeepeError(f"{record.name} is not deployed: it is {training_type.model_is}, which scores answers "
                         f"and generates none, and vLLM serves generation", field="model")


def submit_deploy(model_name: str, *, engine: str = "vllm", host: str = "127.0.0.1", port: int | None = None,
                  name: str | None = None, max_model_len: int | None = None,
                  gpu_memory_utilization: float | None = None) -> tuple[Job, store.ModelRecord]:
    """Queue a deployment of a Complete or base model, or of a Customized Model as a LoRA adapter on
    its base; registers the Live Model (`starting`) and returns (job, live model). `max_model_len` and
    `gpu_memory_utilization` override `vllm_engine_flags`' defaults."""
    record = models.get_model(model_name)
    if record.kind == ModelKind.LIVE:
        raise DeepeError(f"{model_name!r} is already a live model; deploy the model it serves "
                         f"({record.parent})", field="model")
    check_generates(record)
    if record.kind == ModelKind.CUSTOMIZED:
        _check_folder(record.path, "adapter")
        _check_folder(models.get_model(record.parent).path, "base model")
    else:
        _check_folder(record.path, f"{record.kind} model")
    env = envs.require_env(engine)
    # PORT 0: a free port, chosen on the host that runs the job when it runs (never two the same)
    params: dict = {"HOST": host, "ENGINE_DEVICE": env.get("device", "cpu"), "PORT": port or 0}
    lora_rank = None
    if record.kind == ModelKind.CUSTOMIZED:
        base = models.get_model(record.parent)
        lora_rank = _adapter_rank(Path(record.path))
        params.update(MODEL_PATH=base.path, ADAPTER_PATH=record.path, BASE_SERVED_NAME=base.name)
        shared = _live_server_for_base(base.path)
        if shared is not None:  # refused now, as it would be when it runs
            check_joins(shared, lora_rank)
    else:
        params.update(MODEL_PATH=record.path, ADAPTER_PATH="", BASE_SERVED_NAME="")
    params["ENGINE_FLAGS"] = vllm_engine_flags(params["ENGINE_DEVICE"], read_model_config(params["MODEL_PATH"]),
                                               max_model_len=max_model_len,
                                               gpu_memory_utilization=gpu_memory_utilization, lora_rank=lora_rank)
    if port is not None:  # a port the user named: refused now if it is taken here
        check_port(host, port)
    if params["ENGINE_DEVICE"] == "cpu":  # what fits a CPU box: 1 GiB of KV cache
        params.update(KV_CACHE_GB=1)
    if name:
        check_name(name, "deployment")
    own_stage = record.method and StageName.DEPLOYMENT in _stages_of(record.method)
    method = record.method if own_stage else BUILTIN_ENGINE_METHOD
    job = Job(kind=JobKind.DEPLOY, method=method, base_model=model_name, stage=StageName.DEPLOYMENT)
    live_name = check_name(models.live_model_name(model_name, job.uuid), "live model")
    params["SERVED_NAME"] = live_name
    job.params = params
    job = jobs._queue(job, name, "deploy")
    # url, server_host, port and shared_with are known when the job runs (run_time_parameters)
    state = LiveState(status=LiveStatus.STARTING, engine=engine, host=params["HOST"], port=port,
                      url=_url(params["HOST"], port) if port else None, served_name=live_name,
                      deployed_model=model_name, deployed_kind=record.kind, base_path=params["MODEL_PATH"],
                      adapter_path=params["ADAPTER_PATH"], lora=bool(params["ADAPTER_PATH"]), job_id=job.id,
                      submitted_at=time.time())
    (Path(job.run_dir) / "output").mkdir(parents=True, exist_ok=True)
    live = models.add_model(live_name, Path(job.run_dir) / "output", kind=ModelKind.LIVE, job_id=job.id,
                            parent=model_name, method=record.method, meta=state.to_meta())
    return job, live


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_api_key(run_dir: str | Path) -> Path:
    """A new API key for a deployment's server, in `<run_dir>/api-key`, readable by its owner only."""
    path = Path(run_dir) / API_KEY_FILE_NAME
    path.unlink(missing_ok=True)  # an earlier attempt's key: never reused, and the new file is made 0600
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path


def run_time_parameters(job: Job) -> dict:
    """What a deploy job decides when it runs, on the host that runs it (the stage runner calls
    it): an adapter joins a server of its base live on this host, or a new server gets a fresh
    API key file (its port: the one asked for, else 0, a free one the notebook picks). The Live
    Model records this host as its server's. Returns the stage parameters to add."""
    params = job.params
    live_name = params["SERVED_NAME"]
    shared = _live_server_for_base(params["MODEL_PATH"]) if params.get("ADAPTER_PATH") else None
    if shared is not None:
        check_joins(shared, _adapter_rank(Path(params["ADAPTER_PATH"])))
        server = LiveState.from_meta(shared.meta)
        values = {"SHARED_URL": server.url, "SHARED_PID": server.pid, "PORT": server.port, "HOST": server.host,
                  "API_KEY_FILE": server.api_key_file or ""}
        changes = {"shared_with": shared.name, "url": server.url, "port": server.port, "host": server.host}
    else:
        values = {"SHARED_URL": "", "SHARED_PID": 0, "PORT": params.get("PORT") or 0,
                  "API_KEY_FILE": str(write_api_key(job.run_dir)),
                  "KEY_GUARD": str(config.package_templates_dir() / "vllm")}  # key_guard.py's folder
        changes = {"shared_with": None}
    _update(live_name, expect=LiveStatus.STARTING, server_host=socket.gethostname(),
            api_key_file=values["API_KEY_FILE"] or None, **changes)
    return values


def api_key(record: store.ModelRecord) -> str:
    """The API key of a Live Model's server, read from its key file (on the host that runs it)."""
    state = LiveState.from_meta(record.meta)
    path = state.api_key_file
    if not path:
        raise DeepeError(f"live model {record.name!r} has no API key file (it has not started yet)", field="model")
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise DeepeError(f"cannot read the API key of live model {record.name!r} from {path} ({exc.strerror}); "
                         f"it is kept on the host that runs its server ({state.server_host})",
                         field="model") from None


def _stages_of(method_name: str) -> dict:
    try:
        return methods.get_method(method_name).stages
    except DeepeError:
        return {}


def _adapter_rank(adapter: Path) -> int:
    try:
        return int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 16))
    except (OSError, ValueError, TypeError):
        return 16


# --- reading ----------------------------------------------------------------------------

def list_live() -> list[store.ModelRecord]:
    """Every Live Model, newest first."""
    with store.read_session() as s:
        return list(s.exec(select(store.ModelRecord).where(store.ModelRecord.kind == ModelKind.LIVE)
                           .order_by(store.ModelRecord.id.desc())))


def get_live(name: str) -> store.ModelRecord:
    record = models.get_model(name)
    if record.kind != ModelKind.LIVE:
        raise DeepeError(f"{name!r} is a {record.kind} model, not a live model; deploy it with: "
                         f"deepe deploy {name}", field="model")
    return record


def live_summary(record: store.ModelRecord) -> dict:
    """The JSON shape of a Live Model for `deepe deployments` and the widgets."""
    state = LiveState.from_meta(record.meta)
    return {"name": record.name, "status": state.status, "url": state.url,
            "served_name": state.served_name, "model": record.parent, "kind": state.deployed_kind,
            "engine": state.engine, "pid": state.pid, "port": state.port,
            "server_host": state.server_host, "api_key_file": state.api_key_file,
            "shared_with": state.shared_with, "job_id": record.job_id, "error": state.error,
            "command": state.command, "log": state.log, "record": state.record,
            "created_at": record.created_at, "live_at": state.live_at, "stopped_at": state.stopped_at}


def server_log(record: store.ModelRecord, lines: int | None = None) -> str:
    """The server's log (its last `lines`), or the deploy stage's log before the server started."""
    run_dir = Path(jobs.get_job(record.job_id).run_dir)
    path = Path(LiveState.from_meta(record.meta).log or run_dir / "output" / "server.log")
    if not path.exists():
        path = run_dir / "deployment.log"
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) if lines else text


def _log_tail(path: str | Path | None, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except (OSError, TypeError):
        return ""


# --- status changes ---------------------------------------------------------------------

def _update(name: str, expect: str | None = None, **changes) -> store.ModelRecord | None:
    """Change a Live Model's meta; with `expect`, only while its status is still that (a compare-and-set:
    the worker's check and a user's stop may race)."""
    with store.session() as s:
        row = s.exec(select(store.ModelRecord).where(store.ModelRecord.name == name).with_for_update()).first()
        if row is None or (expect is not None and LiveState.from_meta(row.meta).status != expect):
            return None
        row.meta = dataclasses.replace(LiveState.from_meta(row.meta), **changes).to_meta()
        s.add(row)
        return row


def read_server_file(job: Job) -> dict:
    try:
        return json.loads((Path(job.run_dir) / "output" / "server.json").read_text())
    except (OSError, ValueError):
        return {}


def planned_live_model(job: Job) -> list[dict]:
    """What a succeeded deploy job publishes (`models.add_model` keyword arguments): its Live Model,
    `live`, with the server's URL, pid and command from `output/server.json`."""
    server = read_server_file(job)
    current = store.get_one(store.ModelRecord, name=job.params.get("SERVED_NAME"))
    if not server or current is None:
        raise DeepeError("the deployment notebook finished without writing output/server.json")
    state = LiveState.from_meta(current.meta)
    live = dataclasses.replace(
        state, status=LiveStatus.LIVE, pid=server.get("pid"), url=server.get("url"),
        port=server.get("port") or state.port,
        server_host=server.get("host") or state.server_host or socket.gethostname(), command=server.get("command"),
        log=server.get("log"), live_at=time.time(), ready_seconds=server.get("ready_seconds"),
        record=str(Path(job.run_dir) / "deployment.ipynb"))
    return [dict(name=current.name, path=current.path, kind=ModelKind.LIVE, job_id=job.id, parent=current.parent,
                 method=current.method, replace=True, meta=live.to_meta())]


def _server_alive(pid) -> bool:
    """The pid is a running vLLM server (a pid may be reused by another process)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, ValueError):
        return False
    return "vllm" in cmdline


def _engine_group_alive(pgid: int) -> bool:
    """Processes of the server's group are left, and they are the engine's: a server's pid (its group's
    id) may since belong to an unrelated process group, which is never signalled."""
    members = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(" ".join(proc.info["cmdline"] or []).lower())
        except (psutil.Error, ProcessLookupError):
            pass
    envs_root = str(envs.envs_dir()).lower()
    return any("vllm" in cmd or envs_root in cmd for cmd in members)


def stop_server(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a server and everything in its process group (the engine's worker processes):
    SIGTERM, then SIGKILL after `grace` seconds."""
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _engine_group_alive(int(pid)):
            return
        try:
            os.killpg(int(pid), sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _engine_group_alive(int(pid)):
                return
            time.sleep(0.2)


def refresh() -> list[store.ModelRecord]:
    """Bring this host's Live Models up to date: a deployment whose job failed or was cancelled,
    or whose server process is gone, gets its final status (and any server left is stopped)."""
    here = socket.gethostname()
    changed = []
    for row in list_live():
        state = LiveState.from_meta(row.meta)
        # a deployment not yet started has no host: whichever host looks settles a failed job
        if not state.serving or state.server_host not in (here, None):
            continue
        if state.status == LiveStatus.STARTING:
            try:
                job = jobs.get_job(row.job_id)
            except DeepeError:
                job = None
            if job is not None and job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                continue  # queued or running; a succeeded job published it live
            _stop_started_server(job, grace=5.0)
            if job is not None and job.status == JobStatus.CANCELLED:
                _update(row.name, expect=LiveStatus.STARTING, status=LiveStatus.STOPPED, stopped_at=time.time(),
                        error="cancelled")
            else:
                reason = job.error if job is not None else "its deploy job is gone"
                _update(row.name, expect=LiveStatus.STARTING, status=LiveStatus.FAILED, stopped_at=time.time(),
                        error=reason)
            changed.append(row)
            continue
        if not _server_alive(state.pid):
            tail = _log_tail(state.log)
            if _update(row.name, expect=LiveStatus.LIVE, status=LiveStatus.FAILED, stopped_at=time.time(),
                       error=f"the server process (pid {state.pid}) is gone" +
                             (f"; last lines of its log:\n{tail}" if tail else "")) is not None:
                stop_server(state.pid or 0, grace=2.0)  # what is left of its group
                gpus.release_server(row.name)
                changed.append(row)
    return changed


def gone_servers() -> list[store.ModelRecord]:
    """This host's Live Models marked live whose server process is gone (for `deepe doctor`)."""
    here = socket.gethostname()
    states = [(row, LiveState.from_meta(row.meta)) for row in list_live()]
    return [row for row, state in states if state.status == LiveStatus.LIVE and state.server_host == here
            and not _server_alive(state.pid)]


def supervised_count() -> int:
    """Live or starting deployments of this host (a worker stays up while there are any)."""
    here = socket.gethostname()
    states = [LiveState.from_meta(row.meta) for row in list_live()]
    return sum(1 for state in states if state.serving and state.server_host == here)


def _stop_started_server(job: Job | None, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the server a deploy job started (not a shared one), when it runs on this host."""
    server = read_server_file(job) if job is not None else {}
    if server.get("pid") and not server.get("shared") and server.get("host", socket.gethostname()) \
            == socket.gethostname():
        stop_server(server["pid"], grace=grace)


def _request(url: str, payload: dict | None = None, timeout: float = 30.0, *, key: str) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def stop(name: str, reason: str = "stopped by the user") -> list[str]:
    """Stop a Live Model: unload it when it is an adapter on a server others still use, else stop the
    server (and mark the adapters riding on it stopped too). Returns the names now stopped."""
    record = get_live(name)
    state = LiveState.from_meta(record.meta)
    if not state.serving:
        raise DeepeError(f"live model {name!r} is already {state.status}", field="model")
    if state.status == LiveStatus.STARTING:
        job = jobs.get_job(record.job_id)
        if job.status not in store.FINISHED:
            jobs.cancel_job(job.id)
            jobs.wait_for(job.id, timeout=60)
        if state.server_host not in (socket.gethostname(), None):
            return [name]  # its host's worker stops what the cancelled job started, and marks it
        _stop_started_server(job)
        _update(name, status=LiveStatus.STOPPED, stopped_at=time.time(), error=reason)
        return [name]
    if state.server_host not in (socket.gethostname(), None):
        raise DeepeError(f"live model {name!r} is served on host {state.server_host}: stop it there", field="model")
    pid = state.pid
    others = [(r, LiveState.from_meta(r.meta)) for r in list_live() if r.name != name]
    riders = [r for r, other in others if other.serving and other.pid == pid and other.server_host == state.server_host]
    if state.lora and riders:
        status, body = _request(f"{state.url}/v1/unload_lora_adapter", {"lora_name": state.served_name},
                                key=api_key(record))
        if status >= 400 and _server_alive(pid):
            raise DeepeError(f"the server did not unload {name!r}: HTTP {status}: {body[:200]}")
        _update(name, status=LiveStatus.STOPPED, stopped_at=time.time(), error=None)
        return [name]
    # marked first: the worker's check must not take a server stopped on purpose for a crash
    stopped = [name]
    _update(name, status=LiveStatus.STOPPED, stopped_at=time.time(), error=None)
    for rider in riders:
        _update(rider.name, status=LiveStatus.STOPPED, stopped_at=time.time(),
                error=f"its server stopped with {name}")
        stopped.append(rider.name)
    stop_server(pid)
    gpus.release_server(name)  # its card is free for the next training
    return stopped


def stop_host_servers(reason: str) -> list[str]:
    """Stop every Live Model of this host (its last worker is stopping: never orphan a server)."""
    stopped: list[str] = []
    here = socket.gethostname()
    for row in list_live():
        state = LiveState.from_meta(row.meta)
        if row.name in stopped or state.server_host != here or not state.serving:
            continue
        try:
            stopped += stop(row.name, reason=reason)
        except DeepeError:
            pass
    return stopped


def wait_until_settled(job_id: int, timeout: float | None = None, on_poll=None) -> store.ModelRecord:
    """Wait for a deploy job to finish; returns its Live Model with the status it settled on."""
    job = jobs.wait_for(job_id, timeout=timeout, on_poll=on_poll)
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        refresh()
    return get_live(job.params["SERVED_NAME"])
