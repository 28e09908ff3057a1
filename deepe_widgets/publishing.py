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

from . import deployments, jobs, methods, models, provenance
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


EVALUATION_MARK = "<!-- deepe-evaluation -->"


def publish_evaluation(job: Job) -> None:
    """A succeeded evaluation joins its model's card (`model_card.json` and README.md, where the
    workbench wrote them): the suite's scores beside its base model's, the data's hash, the record."""
    from . import evaluations

    record = models.get_model(job.base_model) if job.base_model else None
    card_path = Path(record.path) / "model_card.json" if record is not None else None
    if card_path is None or not card_path.is_file():
        return  # a base model, or a folder the workbench did not write: its files stay as they are
    side = evaluations.side_by_side(record.name, job.params.get("SUITE", "generation"))
    tuned, base = side["tuned"], side["base"]
    if tuned is None or tuned["job_id"] != job.id:
        return
    card = json.loads(card_path.read_text())
    card.setdefault("evaluations", {})[tuned["suite"]] = {
        "dataset": tuned["dataset"], "dataset_sha256": tuned["dataset_sha256"], "rows": tuned["rows"],
        "metrics": tuned["metrics"], "base_model": side["base_model"],
        "base_metrics": base["metrics"] if base else None, "job_id": job.id, "record": tuned["record"]}
    card_path.write_text(json.dumps(card, indent=2, default=str))
    readme = card_path.with_name("README.md")
    text = readme.read_text() if readme.is_file() else f"# {record.name}\n"
    lines = [EVALUATION_MARK, "## Evaluation", ""]
    for suite, found in sorted(card["evaluations"].items()):
        data = f"**{found['dataset']}** (sha256 `{str(found['dataset_sha256'] or '')[:12]}`)" if found["dataset"] \
            else "a benchmark file"
        lines += [f"The **{suite}** suite on {found['rows'] or 'its'} rows of {data}; record: `{found['record']}`.",
                  "", f"| metric | base model ({found['base_model']}) | this model |", "|---|---|---|"]
        for name, value in sorted(found["metrics"].items()):
            was = (found["base_metrics"] or {}).get(name)
            lines.append(f"| {name} | {'-' if was is None else f'{was:.4g}'} | {value:.4g} |")
        lines.append("")
    readme.write_text(text.split(EVALUATION_MARK)[0].rstrip() + "\n\n" + "\n".join(lines))


def job_warnings(job: Job) -> list[str]:
    """What a succeeded job should not hide: its stage ran on the CPU beside a GPU torch could not
    use; a training logged no metric, or trained past MAX_STEPS."""
    found = []
    device_warning = (provenance.read_stage_device(job.run_dir) or {}).get("warning") if job.run_dir else None
    if device_warning:
        found.append(device_warning)
    if job.kind != JobKind.TRAIN:
        return found
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


def saved_dtype(job: Job, output: Path) -> str:
    """The dtype a save wrote: DTYPE, or for `auto` what the Complete Model's weights are kept in."""
    setting = str(job.params.get("DTYPE") or "float32")
    return provenance.model_dtype(output) if setting == "auto" else setting


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
                     meta={"dtype": saved_dtype(job, output), "record": str(Path(job.run_dir) / "saving.ipynb")})]
    return []
