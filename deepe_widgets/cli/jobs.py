"""`deepe train|save|evaluate|infer|compare` and `deepe jobs list|show|logs|metrics|cancel|delete|copy|rerun|export`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import DeepeError
from ..params import cli_int, cli_job_id
from ..provenance import SAVING_DTYPES
from ..store import FINISHED, JobStatus
from .datasets import dataset_name_or_file
from .output import JobProgress, print_json, print_outcome, table
from .workspace import prepare, start_worker


def cmd_train(args) -> int:
    from .. import datasets, jobs, methods, models, simpletuner
    from .. import params as paramlib

    prepare()
    simpletuner.check_available(args.method)  # one sentence when no kernel can run it
    methods.get_method(args.method)  # refused before a data file given by path is registered
    models.get_model(args.base_model)
    params = _with_extras(paramlib.parse_assignments(args.param), args.extra)
    known = {d.name for d in datasets.list_datasets()}
    dataset = dataset_name_or_file(args.dataset, quiet=True)
    try:
        job = jobs.submit_training(args.method, args.base_model, dataset, name=args.name, params=params)
    except DeepeError:
        if dataset not in known:  # a file registered for this training only: a refused training forgets it
            datasets.delete_dataset(dataset)
        raise
    if dataset not in known and not args.json:
        record = datasets.get_dataset(dataset)
        print(f"registered dataset {record.name} from {record.path} ({record.rows} rows)", flush=True)
    start_worker()
    return _after_submit(job, args)


def _with_extras(params: dict, extra: list[str] | None) -> dict:
    """`--param` assignments with `--extra key=value` added as the EXTRA_ARGS parameter."""
    from .. import params as paramlib

    if not extra:
        return params
    if any(paramlib.normalise(key) == paramlib.normalise(paramlib.EXTRA_ARGS) for key in params):
        raise DeepeError("give extra arguments with --extra key=value, or --param extra_args=…, not both",
                         field=paramlib.EXTRA_ARGS)
    return {**params, paramlib.EXTRA_ARGS.lower(): paramlib.parse_extra_args(extra)}


def _after_submit(job, args) -> int:
    from .. import jobs

    if not args.json:
        print(f"queued job {job.id} ({job.name}); run dir: {job.run_dir}", flush=True)
    if not args.wait:
        if args.json:
            print_json(jobs.job_summary(job))
        return 0
    if args.json:
        final = jobs.wait_for(job.id)
    else:
        with JobProgress() as progress:
            final = jobs.wait_for(job.id, on_poll=progress)
    summary = jobs.job_summary(final)
    if args.json:
        print_json(summary)
    else:
        print_outcome(summary)
    return 0 if final.status == JobStatus.SUCCEEDED else 1


def cmd_save(args) -> int:
    from .. import jobs

    prepare()
    job = jobs.submit_save(args.model, dtype=args.dtype, name=args.name, keep_adapter=args.keep_adapter)
    start_worker()
    if args.dtype in ("float32", "auto") and not args.json:
        _suggest_half_precision(args.model, args.dtype)
    return _after_submit(job, args)


def cmd_evaluate(args) -> int:
    from .. import evaluations
    from .. import params as paramlib

    prepare()
    params = paramlib.parse_assignments(args.param)
    *before, job = evaluations.evaluate(args.model, dataset=args.dataset, suite=args.suite, params=params,
                                        name=args.name, with_base=not args.no_base)
    start_worker()
    if before and not args.json:
        print(f"queued job {before[0].id} ({before[0].name}): its base model {before[0].base_model} on the same "
              f"rows, first", flush=True)
    code = _after_submit(job, args)
    result = evaluations.latest(args.model, job.params["SUITE"]) if args.wait and not args.json else None
    if result is not None and result["job_id"] == job.id:  # a failure: print_outcome said why
        print(evaluations.describe(result))
        print(f"record: {result['record']}")
    return code


def _suggest_half_precision(model_name: str, dtype: str = "float32") -> None:
    """A float32 Complete Model is as big as its base's float32 weights: say what bfloat16 saves
    (with `auto`, only where the base itself is float32)."""
    from .. import models
    from ..provenance import model_dtype

    folder = Path(models.get_model(models.get_model(model_name).parent or "").path)
    if not (folder / "config.json").is_file():
        return
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    if model_dtype(folder) != "float32":
        if dtype == "auto":
            return  # saved in the base's own half precision already
        weights *= 2  # a half-precision base, saved as float32
    if weights > 100 * 2**20:
        print(f"note: this Complete Model takes about {weights / 2**20:,.0f} MB in float32; "
              f"`deepe save {model_name} --dtype bfloat16` halves that", file=sys.stderr)


def cmd_infer(args) -> int:
    from .. import inference
    from .. import params as paramlib

    prepare()
    if not args.json:
        print(f"asking {args.model} …", file=sys.stderr, flush=True)
    result = inference.infer(args.model, args.prompt, system_prompt=args.system or "",
                             overrides=paramlib.parse_assignments(args.param), image=args.image)
    if args.json:
        print_json(result)
    else:
        for item in result["responses"]:
            answer = item.get("response")
            if isinstance(answer, str) and not answer.strip():  # say why, not a blank line
                answer = f"(an empty answer: {inference.empty_answer_words(item)})"
            print(f"> {item['prompt']}\n{answer}\n")
        print(f"record: {result['record']}")
        if result["error"]:
            print(f"error: {result['error']}")
    return 1 if result["error"] else 0


def cmd_jobs_list(args) -> int:
    from .. import jobs

    prepare()
    rows = jobs.list_jobs(limit=args.limit)
    if args.json:
        print_json([jobs.job_summary(j) for j in rows])
        return 0
    from .. import metrics

    lines = []
    losses = metrics.last_metrics([j.id for j in rows], "loss")
    for job in rows:
        progress = f"{job.progress_step}/{job.progress_total}" if job.progress_total else "-"
        last = losses.get(job.id)
        lines.append([job.id, job.name, job.status, progress, job.method, job.base_model or "-",
                      jobs.format_time(job.started_at), jobs.format_duration(job),
                      f"{last:.4f}" if last is not None else "-"])
    table(lines, ["ID", "NAME", "STATUS", "PROGRESS", "METHOD", "BASE MODEL", "STARTED", "DURATION", "LOSS"])
    return 0


def cmd_jobs_show(args) -> int:
    from .. import jobs

    prepare()
    summary = jobs.job_summary(jobs.get_job(args.id))
    if args.json:
        print_json(summary)
        return 0
    for key in ("id", "name", "status", "method", "base_model", "dataset", "attempt", "copied_from", "run_dir"):
        print(f"{key:12} {summary[key]}")
    print("params:      " + (", ".join(f"{k}={v}" for k, v in summary["params"].items()) or "(defaults)"))
    print_outcome(summary)
    return 0


def cmd_jobs_logs(args) -> int:
    from .. import jobs

    prepare()
    job = jobs.get_job(args.id)
    run_dir = Path(job.run_dir)
    offsets: dict[Path, int] = {}
    while True:
        for log in sorted(run_dir.glob("*.log")):
            if log.name == "runner.log":
                continue
            with open(log, encoding="utf-8", errors="replace") as handle:
                handle.seek(offsets.get(log, 0))
                while chunk := handle.read(2**20):  # in pieces: a log may be gigabytes
                    sys.stdout.write(chunk)
                offsets[log] = handle.tell()
            sys.stdout.flush()
        if not args.follow or jobs.get_job(job.id).status in FINISHED:
            if args.follow:  # one last read after the job ended
                args.follow = False
                continue
            return 0
        time.sleep(0.5)


def cmd_jobs_metrics(args) -> int:
    from .. import jobs, metrics

    prepare()
    job = jobs.get_job(args.id)
    if not (args.all or args.name):  # one line per metric; rows with --name or --all
        stats = metrics.metric_stats([job.id])[job.id]
        if args.json:
            print_json(stats)
            return 0
        way = {"min": "lowest", "max": "highest", None: "-"}
        table([[name, s["points"], s["last_step"], f"{s['first']:.6g}", f"{s['final']:.6g}",
                f"{s['best']:.6g}" if s["direction"] else "-", way[s["direction"]]]
               for name, s in sorted(stats.items())],
              ["METRIC", "POINTS", "LAST STEP", "FIRST", "FINAL", "BEST", "BETTER"])
        if not stats:
            print(f"job {job.id} has logged no metric yet")
        return 0
    rows = [{"step": m.step, "name": m.name, "value": m.value, "epoch": m.epoch}
            for m in metrics.metrics_for(job.id, name=args.name)]
    if args.json:
        print_json([{k: r[k] for k in ("step", "name", "value")} for r in rows])
        return 0
    table([[r["step"], r["name"], f"{r['value']:.6g}"] for r in rows], ["STEP", "NAME", "VALUE"])
    return 0


def cmd_jobs_cancel(args) -> int:
    from .. import jobs

    prepare()
    job = jobs.cancel_job(args.id)
    if job.status == JobStatus.CANCELLING:
        final = jobs.wait_for(job.id, timeout=30, poll=0.2)
        print(f"job {final.id} {final.status}")
    else:
        print(f"job {job.id} {job.status}")
    return 0


def cmd_jobs_delete(args) -> int:
    from .. import jobs

    prepare()
    job = jobs.get_job(args.id)
    removed = jobs.delete_job(args.id)
    print(f"removed job {job.id} ({job.name}, {job.status})"
          + (f" and its run folder {removed}" if removed else ""))
    return 0


def cmd_jobs_copy(args) -> int:
    from .. import jobs
    from .. import params as paramlib

    prepare()
    job = jobs.copy_job(args.id, name=args.name, params=_with_extras(paramlib.parse_assignments(args.param),
                                                                     args.extra))
    start_worker()
    return _after_submit(job, args)


def cmd_jobs_rerun(args) -> int:
    from .. import jobs, reruns

    prepare()
    job, notes = reruns.rerun_job(args.id, force=args.force, name=args.name)
    if not args.json:
        seed = (jobs.get_job(args.id).provenance or {}).get("seed")
        print(f"re-running job {args.id} as job {job.id}: same method files, parameters, dataset and base model"
              + (f", seed {seed}" if seed is not None else ""), flush=True)
    for note in notes:  # beside --json's output, not in it
        print(f"note: {note}", file=sys.stderr if args.json else sys.stdout, flush=True)
    start_worker()
    return _after_submit(job, args)


def cmd_jobs_export(args) -> int:
    from .. import tracking

    prepare()
    if args.mlflow is None and not args.tensorboard:
        raise DeepeError("say where to export: --mlflow [TRACKING_URI] and/or --tensorboard DIR")
    tracking.check_targets(args.mlflow, args.tensorboard)  # before a first target is written
    selected = tracking.select_jobs(args.ids, all_jobs=args.all, since=args.since)
    report: dict = {"jobs": [j.id for j in selected]}
    if not selected:
        if args.json:
            print_json(report)
        else:
            print("no finished job to export")
        return 0
    if args.mlflow is not None:
        report["mlflow"] = tracking.export_mlflow(selected, args.mlflow or None, experiment=args.experiment)
    if args.tensorboard:
        report["tensorboard"] = tracking.export_tensorboard(selected, args.tensorboard)
    if args.json:
        print_json(report)
        return 0
    for item in report.get("mlflow", []):
        how = "new run" if item["created"] else "updated run"
        print(f"job {item['job']} -> MLflow {how} {item['run_id']} ({item['status']}): {item['params']} params, "
              f"{item['metric_points']} metric points ({item['metric_points_added']} new), "
              f"{len(item['artifacts'])} artifacts")
        if item["params_kept"]:
            print(f"  note: MLflow keeps a parameter's first value; differing now: {', '.join(item['params_kept'])}")
    if report.get("mlflow"):
        first = report["mlflow"][0]
        print(f"experiment {first['experiment']} in {first['tracking_uri']} (view with the full mlflow "
              f"package: mlflow ui --backend-store-uri {first['tracking_uri']})")
    for item in report.get("tensorboard", []):
        print(f"job {item['job']} -> TensorBoard {item['dir']}: {item['metric_points']} points of "
              f"{len(item['metrics'])} metrics")
    if args.tensorboard:
        print(f"view: tensorboard --logdir {Path(args.tensorboard).expanduser().resolve()}")
    return 0


def cmd_compare(args) -> int:
    from .. import compare

    prepare()
    report = compare.compare_jobs(args.ids)
    if args.json:
        print_json(report)
        return 0
    print("configuration (differences):" if report["differences"] else "configuration: identical")
    keys = sorted(report["differences"])
    if keys:
        table([[k] + [report["differences"][k].get(str(i), "-") for i in report["ids"]] for k in keys],
              ["PARAMETER"] + [f"job {i}" for i in report["ids"]])
    print()
    rows = []
    for name, per_job in sorted(report["metrics"].items()):
        for job_id in report["ids"]:
            stats = per_job.get(str(job_id))
            if stats:
                rows.append([name, job_id, f"{stats['final']:.6g}", f"{stats['best']:.6g}", stats["points"]])
    table(rows, ["METRIC", "JOB", "FINAL", "BEST", "POINTS"])
    if report.get("max_abs_diff"):  # two jobs: how far apart their curves are, step by step
        print()
        gaps = sorted(report["max_abs_diff"].items())
        table([[name, f"{d['value']:.3g}", d["step"], d["steps"]] for name, d in gaps],
              ["METRIC", "MAX |DIFF|", "AT STEP", "STEPS COMPARED"])
    return 0




def add_arguments(sub, verb) -> None:
    """`deepe save|infer|train|compare` and `deepe jobs …`."""
    p = verb(sub, "save", cmd_save, "merge a customized model into its base: a complete model", True)
    p.add_argument("model")
    p.add_argument("--dtype", default="auto", choices=list(SAVING_DTYPES),
                   help="auto (default): the base model's own dtype; or cast to float32, float16, bfloat16")
    p.add_argument("--keep-adapter", action="store_true",
                   help="keep the LoRA as a file beside the base instead of fusing it (SD-Demo)")
    p.add_argument("--name")
    p.add_argument("--wait", action="store_true")
    p = verb(sub, "evaluate", cmd_evaluate, "score a model: on the rows its training held out (or a dataset's), "
             "a local benchmark file, or against its base model with a judge model", True)
    p.add_argument("model")
    p.add_argument("--dataset", help="evaluate on this registered dataset (default: the rows the model's "
                   "training held out)")
    p.add_argument("--suite", help="generation (default), benchmark or judge; retrieval for an embedding model")
    p.add_argument("--no-base", action="store_true", help="do not also evaluate its base model on the same rows "
                   "(done once per base model, rows and settings)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="max_rows=…, batch_size=…, max_new_tokens=…, system_prompt=…; benchmark_file=FILE; "
                        "judge=LIVE_MODEL")
    p.add_argument("--name")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    p = verb(sub, "infer", cmd_infer, "answer prompts with a model (its method's inference stage; a live model: "
             "chat completions on its endpoint)", True)
    p.add_argument("model")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--image", help="the image a vision-language model answers about")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="max_new_tokens=…, temperature=…; an embedding model: corpus=FILE, top_k=…")

    p = verb(sub, "train", cmd_train, "queue a training", True)
    p.add_argument("--method", required=True)
    p.add_argument("--base-model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--name")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")
    p.add_argument("--extra", action="append", metavar="KEY=VALUE",
                   help="a field of the trainer's config the parameters do not cover (e.g. SFTConfig's "
                        "packing=true, neftune_noise_alpha=5): checked against the method's config class; the "
                        "value is read as JSON where it parses (5, true, [1, 2]), else as text. A script gets "
                        "it as --KEY VALUE. Repeat for more")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")

    jobs_p = sub.add_parser("jobs", help="trainings and other jobs").add_subparsers(dest="verb", required=True)
    p = verb(jobs_p, "list", cmd_jobs_list, "list jobs", True)
    p.add_argument("--limit", type=cli_int(1), default=50)
    for name, func, text in (("show", cmd_jobs_show, "show one job"),
                             ("metrics", cmd_jobs_metrics, "a job's metrics: one line each, or the rows"),
                             ("cancel", cmd_jobs_cancel, "cancel a queued or running job")):
        p = verb(jobs_p, name, func, text, name != "cancel")
        p.add_argument("id", type=cli_job_id)
        if name == "metrics":
            p.add_argument("--name", help="the rows of this metric")
            p.add_argument("--all", action="store_true", help="every row (default: one line per metric)")
    p = verb(jobs_p, "delete", cmd_jobs_delete, "remove a finished job from the list: its metrics and its run "
             "folder go too; refused while it runs, or while a model it made is registered")
    p.add_argument("id", type=cli_job_id)
    p = verb(jobs_p, "logs", cmd_jobs_logs, "print the stage logs")
    p.add_argument("id", type=cli_job_id)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p = verb(jobs_p, "copy", cmd_jobs_copy, "queue a copy of a training, some parameters changed", True)
    p.add_argument("id", type=cli_job_id)
    p.add_argument("--name")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")
    p.add_argument("--extra", action="append", metavar="KEY=VALUE",
                   help="the copy's extra arguments (as deepe train --extra), in place of the job's")
    p.add_argument("--wait", action="store_true")

    p = verb(jobs_p, "rerun", cmd_jobs_rerun, "queue a training again with the same method files, parameters, "
             "dataset and seed; refused when one of them changed, unless --force", True)
    p.add_argument("id", type=cli_job_id)
    p.add_argument("--force", action="store_true", help="re-run even though the dataset, a stage file or the "
                   "base model changed since")
    p.add_argument("--name")
    p.add_argument("--wait", action="store_true")
    p = verb(jobs_p, "export", cmd_jobs_export, "export jobs to MLflow (one run per job) and/or TensorBoard", True)
    p.add_argument("ids", nargs="*", metavar="ID", type=cli_job_id)
    p.add_argument("--all", action="store_true", help="every finished job")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="with --all: the jobs that finished on or after this day")
    p.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                   help="an MLflow tracking URI (sqlite:///…, file:…, http://…); default: "
                        "sqlite:///$DEEPE_HOME/mlflow.db")
    p.add_argument("--experiment", default="deepe-widgets", help="the MLflow experiment (created when missing)")
    p.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files under DIR, a folder per job")

    p = verb(sub, "compare", cmd_compare, "compare two or more jobs", True)
    p.add_argument("ids", nargs="+", type=cli_job_id)
