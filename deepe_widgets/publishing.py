"""Publishing what a finished job made: the models it registers (their names follow the rules in
`models`), a trained model's card, and the warnings a succeeded training should not hide (in the
job and in its record). The executors call it when a stage succeeded, inside the transaction that
holds the job's lease."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nbformat

from . import deployments, jobs, methods, models
from . import params as paramlib
from .metrics import metric_stats
from .runtime.script import warn_if_silent
from .scriptmode import read_script_output
from .store import Job, JobKind, ModelKind

log = logging.getLogger(__name__)


def write_model_card(job, name: str, output: Path) -> dict:
    """`model_card.json` and `README.md` beside an adapter: where it came from and how it did."""
    stats = metric_stats([job.id])[job.id]
    card = {"name": name, "base_model": job.base_model, "method": job.method, "dataset": job.dataset,
            "job_id": job.id, "job_uuid": job.uuid, "parameters": job.params,
            "metrics": {k: {"final": v["final"], "best": v["best"]} for k, v in stats.items()},
            "record": str(Path(job.run_dir) / "training.ipynb")}
    (output / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    lines = [f"# {name}", "", f"A LoRA adapter for **{job.base_model}**, trained with the **{job.method}** "
             f"method on the **{job.dataset}** dataset by deepe-widgets (job {job.id}).", "",
             "## Parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(job.params.items())] or ["| (defaults) | |"]
    lines += ["", "## Metrics", "", "| metric | final | best |", "|---|---|---|"]
    lines += [f"| {k} | {v['final']:.6g} | {v['best']:.6g} |" for k, v in sorted(card["metrics"].items())]
    lines += ["", f"Record (the executed training notebook): `{card['record']}`", ""]
    (output / "README.md").write_text("\n".join(lines))
    return card


def job_warnings(job: Job) -> list[str]:
    """What a succeeded training should not hide: it logged no metric, or trained past MAX_STEPS."""
    if job.kind != JobKind.TRAIN:
        return []
    found = []
    script = read_script_output(Path(job.run_dir) / "output") or {}
    if script.get("warning"):
        found.append(script["warning"])
    else:
        current = jobs.get_job(job.id)
        stats = metric_stats([job.id])[job.id]
        logged = sum(s["points"] for name, s in stats.items() if not name.startswith("train_"))
        defaults = methods.get_method(job.method).default_params if job.method else {}
        max_steps = job.params.get("MAX_STEPS", paramlib.default_value(defaults.get("MAX_STEPS", "-1")))
        warning = warn_if_silent(logged, current.progress_step, int(max_steps or -1))
        if warning:
            found.append(warning)
    return found


def annotate_record(job: Job, warnings: list[str]) -> None:
    """The warnings go into the record too: it is what a reader of the run opens."""
    record = Path(job.run_dir) / f"{job.stage}.ipynb"
    try:
        nb = nbformat.read(record, as_version=4)
        nb.metadata.setdefault("deepe", {})["warnings"] = warnings
        nb.cells.append(nbformat.v4.new_markdown_cell(
            "**Warnings from the workbench**\n\n" + "\n".join(f"- {w}" for w in warnings),
            metadata={"tags": ["deepe-warnings"]}))
        nbformat.write(nb, record)
    except (OSError, ValueError) as exc:
        log.warning("job %s: could not add the warnings to its record: %s", job.id, exc)


def planned_outputs(job: Job) -> list[dict]:
    """The models a finished job registers: a training's adapter becomes a Customized Model,
    a save's output a Complete Model (`add_model` keyword arguments)."""
    output = Path(job.run_dir) / "output"
    if job.kind == JobKind.DEPLOY:  # its Live Model, live now
        return deployments.planned_live_model(job)
    if not output.is_dir():
        return []
    if job.kind == JobKind.TRAIN:
        day = time.strftime("%Y%m%d", time.localtime(job.started_at or time.time()))
        name = models.trained_model_name(job.base_model, job.name, day, job.uuid)
        script = read_script_output(output) or {}
        # a script that saved a whole model (no adapter) made a Complete Model
        kind = ModelKind.COMPLETE if script.get("kind") == "full" else ModelKind.CUSTOMIZED
        card = write_model_card(job, name, output)
        if script:
            card["script"] = {k: script.get(k) for k in ("argv", "trained_by", "kind")}
        return [dict(name=name, path=output, kind=kind, job_id=job.id, parent=job.base_model,
                     method=job.method, replace=True, meta=card)]
    if job.kind == JobKind.SAVE:
        return [dict(name=models.saved_model_name(job.base_model, job.uuid), path=output, kind=ModelKind.COMPLETE,
                     job_id=job.id, parent=job.base_model, method=job.method, replace=True,
                     meta={"dtype": job.params.get("DTYPE"), "record": str(Path(job.run_dir) / "saving.ipynb")})]
    return []
