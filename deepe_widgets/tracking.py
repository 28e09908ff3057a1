"""Taking runs where a team already tracks experiments: MLflow and TensorBoard.

One MLflow run per job: its parameters, every metric at its step, tags (method, base model,
dataset hash, status, the job's id and uuid), and the record notebook, model card and
provenance as artifacts. Exporting a job again updates the run it made before (found by the
`deepe.job_uuid` tag) with what is new. TensorBoard gets one run folder of event files per job,
rewritten on each export.

mlflow and tensorboard are optional (`pip install 'deepe-widgets[tracking]'`): they are imported
when an export starts, and their absence is one sentence with the install command.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from sqlmodel import select

from . import config, jobs, methods, store
from . import params as paramlib
from .errors import DeepeError
from .metrics import metrics_for
from .paths import check_allowed
from .store import FINISHED, Job, JobKind, JobStatus

DEFAULT_EXPERIMENT = "deepe-widgets"
INSTALL_HINT = "pip install 'deepe-widgets[tracking]'"
MLFLOW_STATUS = {JobStatus.SUCCEEDED: "FINISHED", JobStatus.FAILED: "FAILED", JobStatus.CANCELLED: "KILLED"}
# MLflow's own limits on one log_batch request and on a parameter's value
METRICS_PER_BATCH, PARAMS_PER_BATCH, PARAM_VALUE_LIMIT = 1000, 100, 6000


def _require(module: str, package: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DeepeError(f"exporting to {what} needs the {package} package, which is not installed: "
                         f"{INSTALL_HINT} (or pip install {package})", field="tracking") from None


def select_jobs(ids: list | None = None, *, all_jobs: bool = False, since: str | None = None) -> list[Job]:
    """The jobs an export takes: `ids`, or with `all_jobs` every finished job (that finished on or
    after `since`, a YYYY-MM-DD date in local time), oldest first."""
    if ids and all_jobs:
        raise DeepeError("give job ids or --all, not both", field="jobs")
    if not ids and not all_jobs:
        raise DeepeError("say which jobs to export: their ids, or --all", field="jobs")
    if since and not all_jobs:
        raise DeepeError("--since goes with --all", field="since")
    if ids:
        return [jobs.get_job(i) for i in dict.fromkeys(ids)]
    stmt = select(Job).where(Job.status.in_(FINISHED)).order_by(Job.id)
    if since:
        try:
            start = datetime.strptime(since, "%Y-%m-%d").timestamp()
        except ValueError:
            raise DeepeError(f"--since must be a date like 2026-01-31, not {since!r}", field="since") from None
        stmt = stmt.where(Job.finished_at >= start)
    with store.read_session() as s:
        return list(s.exec(stmt))


def job_parameters(job: Job) -> dict:
    """Every parameter value a job ran with: the recorded ones (defaults included), else its
    method's defaults under the values it was given."""
    recorded = (job.provenance or {}).get("parameters")
    if recorded:
        return dict(recorded)
    values = dict(job.params)
    if job.kind == JobKind.TRAIN:
        try:
            defaults = methods.get_method(job.method).default_params
        except DeepeError:  # the method was deleted since: what the job was given is all there is
            defaults = {}
        values = {**{k: paramlib.default_value(v) for k, v in defaults.items()}, **values}
    return {k: v for k, v in values.items() if k not in paramlib.PLATFORM_SET}


def job_tags(job: Job) -> dict[str, str]:
    """What a tracker shows beside a run to find it again: method, models, dataset hash, status."""
    provenance = job.provenance or {}
    tags = {"deepe.job_id": job.id, "deepe.job_uuid": job.uuid, "deepe.job_name": job.name, "deepe.kind": job.kind,
            "deepe.method": job.method, "deepe.base_model": job.base_model, "deepe.dataset": job.dataset,
            "deepe.status": job.status, "deepe.copied_from": job.copied_from,
            "deepe.rerun_of": provenance.get("rerun_of"), "deepe.seed": provenance.get("seed"),
            "deepe.dataset_sha256": (provenance.get("dataset") or {}).get("sha256"),
            "deepe.base_model_fingerprint": (provenance.get("base_model") or {}).get("sha256"),
            "deepe.run_dir": job.run_dir}
    device = provenance.get("device") or {}
    if device.get("type"):
        tags["deepe.device"] = device["type"] + (f": {device['name']}" if device.get("name") else "")
    return {k: str(v) for k, v in tags.items() if v is not None and v != ""}


def _artifact_files(job: Job) -> dict[str, list[Path]]:
    """Artifact folder -> files: the record notebooks and the model card (when there is one)."""
    files = {"record": [Path(p) for p in jobs.job_records(job)]}
    if not job.run_dir:
        return files
    output = Path(job.run_dir) / "output"
    card = [output / name for name in ("model_card.json", "README.md") if (output / name).is_file()]
    if card:
        files["model_card"] = card
    return files


_METRIC_KEY = re.compile(r"[^\w\-. /:]")


def _metric_key(name: str) -> str:
    """A metric name MLflow accepts (letters, digits, `_ - . / : space`)."""
    return re.sub(r"/+", "/", _METRIC_KEY.sub("_", name)).strip("/") or "_"


def _param_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[:PARAM_VALUE_LIMIT - 1] + "…"


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def default_mlflow_uri() -> str:
    """A SQLite tracking store in the workspace: `$DEEPE_HOME/mlflow.db` (artifacts beside it)."""
    return f"sqlite:///{config.deepe_home() / 'mlflow.db'}"


def _normalise_uri(uri: str | None) -> str:
    if not uri:
        return default_mlflow_uri()
    if uri.isdigit():
        raise DeepeError(f"--mlflow {uri} looks like a job id: put the job ids before --mlflow "
                         f"(deepe jobs export {uri} --mlflow [TRACKING_URI])", field="mlflow")
    if "://" not in uri and not uri.startswith("file:"):  # a path: a .db file is SQLite, a folder a file store
        path = Path(uri).expanduser().resolve()
        return f"sqlite:///{path}" if path.suffix in (".db", ".sqlite") else path.as_uri()
    return uri


def check_targets(tracking_uri: str | None = None, tensorboard_dir: str | os.PathLike | None = None) -> None:
    """Refuse export targets before anything is written: a local MLflow store or TensorBoard folder
    must lie in the allowed folders, inside a folder that exists (nothing is created but the target
    itself), and a folder must not be a file. `tracking_uri` "" means the default store."""
    if tracking_uri:  # the default store lies in the workspace
        uri = _normalise_uri(tracking_uri)
        local = (uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else
                 url2pathname(urlparse(uri).path) if uri.startswith("file:") else None)
        if local is not None:
            _check_target(Path(local), "mlflow", "MLflow store", folder=uri.startswith("file:"))
    if tensorboard_dir is not None:
        _check_target(Path(tensorboard_dir), "tensorboard", "TensorBoard folder", folder=True)


def _check_target(path: Path, field: str, what: str, folder: bool) -> None:
    resolved = check_allowed(path, field, what)
    if not resolved.parent.is_dir():
        raise DeepeError(f"{what} {str(path)!r}: its folder {resolved.parent} does not exist; create it first",
                         field=field)
    if folder and resolved.exists() and not resolved.is_dir():
        raise DeepeError(f"{what} {str(path)!r} is a file, not a folder", field=field)
    if not folder and resolved.is_dir():
        raise DeepeError(f"{what} {str(path)!r} is a folder; give a database file such as "
                         f"{resolved / 'mlflow.db'}", field=field)


def _local_artifact_root(uri: str) -> str | None:
    """Where a local SQLite store's artifacts go: beside the database, not in the current folder."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def export_mlflow(job_list: list[Job], tracking_uri: str | None = None,
                  experiment: str = DEFAULT_EXPERIMENT) -> list[dict]:
    """One MLflow run per job in `experiment` (created when missing): parameters, every metric
    at its step (in batches), tags, and the record notebook, model card and provenance as
    artifacts. A job exported before updates its run: new metric steps and parameters are
    added, tags and status refreshed, artifacts replaced. Returns one summary per job."""
    check_targets(tracking_uri)
    uri = _normalise_uri(tracking_uri)
    if uri.startswith("file:"):  # MLflow 3 keeps the file store only for those who ask for it, as here
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    _require("mlflow", "mlflow-skinny", "MLflow")
    if uri.startswith("sqlite:"):
        _require("alembic", "alembic", "a SQLite MLflow store")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # their INFO lines (creating tables …) are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of MLflow's own dependencies
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else client.create_experiment(
                experiment, artifact_location=_local_artifact_root(uri),
                tags={"deepe.source": "deepe-widgets"})
            return [_export_one(client, experiment_id, experiment, uri, job) for job in job_list]
        except MlflowException as exc:
            raise DeepeError(f"MLflow at {uri} refused the export: {exc.message}", field="mlflow") from None


def _export_one(client, experiment_id: str, experiment: str, uri: str, job: Job) -> dict:
    from mlflow.entities import Metric, Param, RunTag

    job = jobs.get_job(job.id)  # current status and provenance
    tags = job_tags(job)
    existing = client.search_runs([experiment_id], filter_string=f"tags.`deepe.job_uuid` = '{job.uuid}'",
                                  max_results=1)
    if existing:
        run = existing[0]
    else:
        run = client.create_run(experiment_id, start_time=_ms(job.started_at or job.created_at), tags=tags,
                                run_name=job.name)
    run_id = run.info.run_id
    # parameters are write-once in MLflow: add the new ones, keep (and report) any that differ
    had = run.data.params
    params = {k: _param_value(v) for k, v in job_parameters(job).items()}
    new_params = [Param(k, v) for k, v in sorted(params.items()) if k not in had]
    differing = sorted(k for k, v in params.items() if k in had and had[k] != v)
    rows = metrics_for(job.id)
    logged_steps: dict[str, set] = {}
    if existing:
        for key in {_metric_key(r.name) for r in rows}:
            logged_steps[key] = {m.step for m in client.get_metric_history(run_id, key)}
    new_metrics = [Metric(_metric_key(r.name), float(r.value), int(r.wall_time * 1000), int(r.step)) for r in rows
                   if r.step not in logged_steps.get(_metric_key(r.name), ())]
    for start in range(0, len(new_metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=new_metrics[start:start + METRICS_PER_BATCH])
    tag_list = [RunTag(k, v) for k, v in sorted(tags.items())]
    for start in range(0, max(len(new_params), len(tag_list)), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=new_params[start:start + PARAMS_PER_BATCH],
                         tags=tag_list[start:start + PARAMS_PER_BATCH])
    artifacts = []
    for folder, files in _artifact_files(job).items():
        for path in files:
            client.log_artifact(run_id, str(path), folder)
            artifacts.append(f"{folder}/{path.name}")
    if job.provenance:
        client.log_dict(run_id, job.provenance, "provenance.json")
        artifacts.append("provenance.json")
    if job.status in MLFLOW_STATUS:
        client.set_terminated(run_id, MLFLOW_STATUS[job.status], end_time=_ms(job.finished_at))
    return {"job": job.id, "run_id": run_id, "experiment": experiment, "experiment_id": experiment_id,
            "tracking_uri": uri, "created": not existing, "params": len(params), "params_added": len(new_params),
            "params_kept": differing, "metric_points": len(rows), "metric_points_added": len(new_metrics),
            "artifacts": artifacts, "status": MLFLOW_STATUS.get(job.status, "RUNNING")}


def tensorboard_run_dir(directory: str | os.PathLike, job: Job) -> Path:
    """The run folder TensorBoard shows for a job: `DIR/job<id>_<name>`."""
    return Path(directory).expanduser().resolve() / f"job{job.id}_{job.name}"


def export_tensorboard(job_list: list[Job], directory: str | os.PathLike) -> list[dict]:
    """Event files TensorBoard reads, one run folder per job: every metric as a scalar at its
    step (with its wall time), and the parameters and provenance as text. The folder's earlier
    event files are replaced, so exporting again never doubles a curve."""
    _require("tensorboard", "tensorboard", "TensorBoard")
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    check_targets(tensorboard_dir=directory)
    out = []
    for job in job_list:
        job = jobs.get_job(job.id)
        run_dir = tensorboard_run_dir(directory, job)
        run_dir.mkdir(parents=True, exist_ok=True)
        for old in run_dir.glob("events.out.tfevents.*"):
            old.unlink()
        by_step: dict[int, list] = {}
        rows = metrics_for(job.id)
        for row in rows:
            by_step.setdefault(int(row.step), []).append(row)
        writer = EventFileWriter(str(run_dir))
        try:
            started = job.started_at or job.created_at or time.time()
            writer.add_event(Event(wall_time=started, step=0, summary=text_pb(
                "parameters", _markdown_table(job_parameters(job)))))
            writer.add_event(Event(wall_time=started, step=0, summary=text_pb(
                "provenance", _markdown_table({**job_tags(job), **_provenance_lines(job)}))))
            for step in sorted(by_step):
                values = [Summary.Value(tag=row.name, simple_value=float(row.value)) for row in by_step[step]]
                writer.add_event(Event(wall_time=max(r.wall_time for r in by_step[step]), step=step,
                                       summary=Summary(value=values)))
        finally:
            writer.close()
        out.append({"job": job.id, "dir": str(run_dir), "metric_points": len(rows),
                    "metrics": sorted({r.name for r in rows})})
    return out


def _provenance_lines(job: Job) -> dict[str, str]:
    provenance = job.provenance or {}
    lines = {f"stage file {stage}": f"{info.get('source') or info.get('file')} sha256 {info.get('sha256')}"
             for stage, info in (provenance.get("stage_files") or {}).items()}
    lines.update({f"package {name}": version for name, version in (provenance.get("packages") or {}).items()
                  if version})
    return lines


def _markdown_table(values: dict) -> str:
    def cell(value) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return text.replace("|", "\\|").replace("\n", " ")

    return "| name | value |\n|---|---|\n" + "\n".join(f"| {k} | {cell(v)} |" for k, v in values.items())
