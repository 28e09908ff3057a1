"""The `deepe` command line. Exit codes: 0 success, 1 a job that failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .app import add_arguments as add_app_arguments
from .cli_live import add_live_commands
from .errors import DeepeError
from .params import cli_int, cli_job_id, cli_seconds
from .store import FINISHED, JobStatus


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _table(rows: list[list], headers: list[str]) -> None:
    """A plain-text table (rich, without borders, so it stays greppable and copyable)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:  # paths and names are never cut short: they get copied
        table.add_column(escape(str(header)), overflow="fold")
    for row in rows:  # cells are data (a Llama-2 row holds "[/INST]"): never rich markup
        table.add_row(*(escape(str(c)) for c in row))
    # piped output (scripts, grep) gets whole lines; a terminal its own width
    Console(highlight=False, width=None if sys.stdout.isatty() else 100_000).print(table)


def _setup(args=None) -> None:
    """Open the workspace; make sure built-in methods and demo datasets exist."""
    from . import demo_data, methods

    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()


# --- init / methods -------------------------------------------------------------------

def cmd_init(args) -> int:
    from . import config, embeddings, models, simpletuner

    _setup()
    if simpletuner.ensure_registered():  # only where a Python >= 3.12 kernel has simpletuner
        print(f"registered {simpletuner.METHOD} (kernel {simpletuner.find_kernel()})")
    record = models.ensure_default_model()
    embedding = embeddings.ensure_embedding_base_model()
    print(f"workspace: {config.deepe_home()}")
    print(f"database:  {config.display_db_url()}")
    print(f"default base model: {record.name} ({record.path})")
    print(f"embedding base model: {embedding.name} ({embedding.path})" if embedding else
          "embedding base model: none (pip install 'deepe-widgets[embedding]', then deepe init)")
    return 0


def cmd_methods_list(args) -> int:
    from . import methods

    _setup()
    rows = [methods.method_summary(m) for m in methods.list_methods()]
    if args.json:
        _print_json(rows)
        return 0
    _table([[r["name"], r["type"], r["lifecycle"], "yes" if r["builtin"] else "no",
             ", ".join(f"{s}@{i['kernel']}" for s, i in r["stages"].items())] for r in rows],
           ["NAME", "TYPE", "LIFECYCLE", "BUILT-IN", "STAGES"])
    return 0


def cmd_methods_show(args) -> int:
    from . import methods

    _setup()
    summary = methods.method_summary(methods.get_method(args.name))
    if args.json:
        _print_json(summary)
        return 0
    for key in ("name", "display_name", "type", "lifecycle", "builtin", "description"):
        print(f"{key:13} {summary[key]}")
    for stage, info in summary["stages"].items():
        print(f"stage {stage}: {info['file']} (kernel {info['kernel']}, sha256 {info['sha256'][:12]})")
    if summary["script_mode"]:
        print("script mode: the training file runs unchanged; parameters reach it as command-line flags"
              + (f" from the template: {summary['args_template']}" if summary["args_template"]
                 else " under their Hugging Face names"))
    print("parameters (--param NAME=VALUE; Hugging Face names in brackets work too):")
    for name, default in summary["parameters"].items():
        also = f"  [{', '.join(summary['aliases'][name])}]" if name in summary["aliases"] else ""
        print(f"  {name} = {default}{also}")
    return 0


def _parse_stage_specs(specs: list[str]) -> dict[str, tuple[str, str]]:
    stages = {}
    for spec in specs or []:
        if "=" not in spec:
            raise DeepeError(f"--stage {spec!r} must look like STAGE=FILE@KERNEL")
        stage, rest = spec.split("=", 1)
        stage = stage.strip()
        file, _, kernel = rest.rpartition("@")
        if not file:
            file, kernel = rest, ""
        if stage in stages:
            raise DeepeError(f"--stage {stage} is given twice; give each stage once", field="stages")
        stages[stage] = (file.strip(), kernel.strip())
    return stages


def cmd_methods_add(args) -> int:
    from . import methods

    _setup()
    method = methods.register_method(
        args.name, _parse_stage_specs(args.stage), training_type=args.type, lifecycle=args.lifecycle,
        display_name=args.display_name or "", description=args.description or "", args_template=args.args or "")
    summary = methods.method_summary(method)
    mode = " — script mode: it runs unchanged" if summary["script_mode"] else ""
    print(f"registered method {method.name} ({method.lifecycle}; stages: {', '.join(method.stages)}){mode}")
    return 0


def cmd_methods_delete(args) -> int:
    from . import methods

    _setup()
    methods.delete_method(args.name)
    print(f"deleted method {args.name}")
    return 0


def cmd_methods_test(args) -> int:
    """Seed 003 steps A–D: run a training stage file directly, without the queue."""
    from . import params as paramlib
    from . import runner

    _setup()
    out_dir = Path(args.output or Path.cwd() / f"deepe-test-{time.strftime('%Y%m%d-%H%M%S')}")
    result = runner.run_local_test(args.file, args.base_model, args.dataset, paramlib.parse_assignments(args.param),
                                   kernel=args.kernel, output=out_dir,
                                   on_start=lambda log: print(f"running {args.file} in kernel {args.kernel!r}; "
                                                              f"log: {log}", flush=True))
    if not result["ok"]:
        print(f"training FAILED in cell {result['cell']}: {result['error']}")
        print(f"record: {result['record']}")
        return 1
    print("training finished")
    print(f"output:  {result['output']} ({', '.join(result['saved']) or 'empty'})")
    print(f"record:  {result['record']}")
    return 0


# --- models / datasets ----------------------------------------------------------------

def cmd_models_add(args) -> int:
    from . import models

    _setup()
    record = models.add_model(args.name, args.path)
    print(f"registered base model {record.name} ({record.path})")
    return 0


def cmd_models_list(args) -> int:
    from . import models

    _setup()
    models.ensure_default_model(progress=lambda m: print(m, file=sys.stderr))
    rows = [models.model_summary(m) for m in models.list_models(args.kind)]
    if args.json:
        _print_json(rows)
        return 0
    _table([[r["name"], r["kind"], r["method"] or "-", r["path"]] for r in rows], ["NAME", "KIND", "METHOD", "PATH"])
    return 0


def cmd_models_show(args) -> int:
    from . import models

    _setup()
    summary = models.model_summary(models.get_model(args.name))
    if args.json:
        _print_json(summary)
        return 0
    for key in ("name", "kind", "path", "parent", "method", "job_id"):
        print(f"{key:8} {summary[key]}")
    metrics = summary["meta"].get("metrics") or {}
    for name, stats in sorted(metrics.items()):
        best = f", best {stats['best']:.6g}" if stats.get("direction", "min") else ""
        print(f"metric   {name}: final {stats['final']:.6g}{best}")
    return 0


def cmd_models_delete(args) -> int:
    from . import models

    _setup()
    kept = models.delete_model(args.name, force=args.force)  # refused while live or used by a job
    print(models.deleted_words(args.name, kept))
    return 0


def cmd_save(args) -> int:
    from . import jobs

    _setup()
    job = jobs.submit_save(args.model, dtype=args.dtype, name=args.name, keep_adapter=args.keep_adapter)
    _start_worker()
    if args.dtype == "float32" and not args.json:
        _suggest_half_precision(args.model)
    return _after_submit(job, args)


def _suggest_half_precision(model_name: str) -> None:
    """A float32 Complete Model is as big as its base's float32 weights: say what bfloat16 saves."""
    from . import models

    folder = Path(models.get_model(models.get_model(model_name).parent or "").path)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    if str(config.get("dtype") or config.get("torch_dtype") or "float32") != "float32":
        weights *= 2  # a half-precision base, saved as float32
    if weights > 100 * 2**20:
        print(f"note: this Complete Model takes about {weights / 2**20:,.0f} MB in float32; "
              f"`deepe save {model_name} --dtype bfloat16` halves that", file=sys.stderr)


def cmd_infer(args) -> int:
    from . import inference
    from . import params as paramlib

    _setup()
    if not args.json:
        print(f"asking {args.model} …", file=sys.stderr, flush=True)
    result = inference.infer(args.model, args.prompt, system_prompt=args.system or "",
                             overrides=paramlib.parse_assignments(args.param), image=args.image)
    if args.json:
        _print_json(result)
    else:
        for item in result["responses"]:
            print(f"> {item['prompt']}\n{item['response']}\n")
        print(f"record: {result['record']}")
        if result["error"]:
            print(f"error: {result['error']}")
    return 1 if result["error"] else 0


def cmd_datasets_add(args) -> int:
    from . import datasets

    _setup()
    record = datasets.add_dataset(args.name, args.path)
    print(f"registered dataset {record.name}: {record.rows} rows, {record.format}, "
          f"columns {', '.join(record.columns)}")
    return 0


def cmd_datasets_list(args) -> int:
    from . import datasets

    _setup()
    rows = [{"name": d.name, "format": d.format, "rows": d.rows, "columns": d.columns, "path": d.path}
            for d in datasets.list_datasets()]
    if args.json:
        _print_json(rows)
        return 0
    _table([[r["name"], r["format"], r["rows"], ", ".join(map(str, r["columns"])), r["path"]] for r in rows],
           ["NAME", "FORMAT", "ROWS", "COLUMNS", "PATH"])
    return 0


def cmd_datasets_delete(args) -> int:
    from . import datasets

    _setup()
    record = datasets.delete_dataset(args.name)
    print(f"deleted dataset {record.name} (its file {record.path} stays)")
    return 0


def cmd_datasets_preview(args) -> int:
    from . import datasets

    _setup()
    columns, rows = datasets.preview(args.name, args.rows)
    if args.json:
        _print_json({"columns": columns, "rows": rows})
        return 0
    _table([[str(r.get(c, ""))[:40].replace("\n", " ") for c in columns] for r in rows], columns)
    return 0


# --- training and jobs ----------------------------------------------------------------

def cmd_train(args) -> int:
    from . import datasets, jobs, methods, models, simpletuner
    from . import params as paramlib

    _setup()
    simpletuner.check_available(args.method)  # one sentence when no kernel can run it
    methods.get_method(args.method)  # refused before a data file given by path is registered
    models.get_model(args.base_model)
    params = paramlib.parse_assignments(args.param)
    known = {d.name for d in datasets.list_datasets()}
    dataset = _dataset_name_or_file(args.dataset, quiet=True)
    try:
        job = jobs.submit_training(args.method, args.base_model, dataset, name=args.name, params=params)
    except DeepeError:
        if dataset not in known:  # a file registered for this training only: a refused training forgets it
            datasets.delete_dataset(dataset)
        raise
    if dataset not in known and not args.json:
        record = datasets.get_dataset(dataset)
        print(f"registered dataset {record.name} from {record.path} ({record.rows} rows)", flush=True)
    _start_worker()
    return _after_submit(job, args)


def _dataset_name_or_file(value: str, quiet: bool = False) -> str:
    """A registered dataset name; a data file given instead is registered under its file name
    (or found, when that file is registered already)."""
    from . import datasets, store

    if store.get_one(store.DatasetRecord, name=value) is not None:
        return value
    path = Path(value).expanduser()
    if path.is_dir() and (path / "metadata.jsonl").is_file():  # an image folder: registered by its metadata
        path = path / "metadata.jsonl"
    if not path.is_file():
        names = ", ".join(d.name for d in datasets.list_datasets()) or "none"
        raise DeepeError(f"no dataset named {value!r} and no such file; datasets: {names} "
                         f"(register a file with: deepe datasets add NAME FILE)", field="dataset")
    resolved = str(path.resolve())
    for record in datasets.list_datasets():
        if record.path == resolved:
            return record.name
    stem = path.parent.name if path.name == "metadata.jsonl" else path.stem
    name = _free_name(stem, {d.name for d in datasets.list_datasets()})
    record = datasets.add_dataset(name, path)
    if not quiet:
        print(f"registered dataset {record.name} from {resolved} ({record.rows} rows)", flush=True)
    return record.name


def _free_name(stem: str, taken: set[str]) -> str:
    import re

    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "dataset"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def _start_worker() -> None:
    from .worker import ensure_worker

    ensure_worker()


def _after_submit(job, args) -> int:
    from . import jobs

    if not args.json:
        print(f"queued job {job.id} ({job.name}); run dir: {job.run_dir}", flush=True)
    if not args.wait:
        if args.json:
            _print_json(jobs.job_summary(job))
        return 0
    final = jobs.wait_for(job.id, on_poll=None if args.json else _progress_printer())
    if not args.json:
        sys.stderr.write("\n")
    summary = jobs.job_summary(final)
    if args.json:
        _print_json(summary)
    else:
        _print_outcome(summary)
    return 0 if final.status == JobStatus.SUCCEEDED else 1


def _progress_printer():
    state = {"last": None, "first": None}  # first: (time, step) when steps started to move

    def show(job):
        line = f"job {job.id} {job.status}"
        if job.progress_total:
            done = job.progress_step / job.progress_total
            bar = "#" * int(done * 30)
            line += f" [{bar:<30}] {job.progress_step}/{job.progress_total}"
            now = time.monotonic()
            if state["first"] is None and job.progress_step > 0:
                state["first"] = (now, job.progress_step)
            elif state["first"] is not None and job.progress_step > state["first"][1]:
                started, step0 = state["first"]
                per_step = (now - started) / (job.progress_step - step0)
                left = int(per_step * (job.progress_total - job.progress_step))
                line += f" ~{left // 60}m{left % 60:02d}s left"
        elif job.status == JobStatus.RUNNING:
            line += " (starting: loading the model and data …)"
        if sys.stderr.isatty():  # one line, redrawn
            if line != state["last"]:
                sys.stderr.write("\r" + line.ljust(100))
                sys.stderr.flush()
            state["last"] = line
            return
        key = (job.status, job.progress_step)  # piped: a line when the status or the step changes
        if key != state.get("key"):
            sys.stderr.write(line + "\n")
            state["key"] = key
    return show


HELD_OUT_METRICS = ("eval_heldout_cosine_ndcg@10", "eval_exact_match")


def _print_outcome(summary: dict) -> None:
    from . import metrics

    print(f"job {summary['id']} {summary['status']}")
    losses = [m.value for m in metrics.metrics_for(summary["id"], name="loss")]
    if losses:
        print(f"loss: first {losses[0]:.4f}, final {losses[-1]:.4f} over {len(losses)} logged steps")
    for name in HELD_OUT_METRICS:  # what Embedding-Demo and VL-Demo measure on held-out data, from step 0
        rows = metrics.metrics_for(summary["id"], name=name)
        if rows:
            print(f"{name}: step {rows[0].step} {rows[0].value:.4f} → step {rows[-1].step} {rows[-1].value:.4f}")
    for record in summary["records"]:
        print(f"record:   {record}")
    for artifact in summary["artifacts"]:
        print(f"{artifact['kind']} model: {artifact['name']} ({artifact['path']})")
    for warning in summary.get("warnings") or []:
        print(f"warning: {warning}")
    if summary["error"]:
        print(f"error: {summary['error']}")


def cmd_jobs_list(args) -> int:
    from . import jobs

    _setup()
    rows = jobs.list_jobs(limit=args.limit)
    if args.json:
        _print_json([jobs.job_summary(j) for j in rows])
        return 0
    from . import metrics

    table = []
    losses = metrics.last_metrics([j.id for j in rows], "loss")
    for job in rows:
        progress = f"{job.progress_step}/{job.progress_total}" if job.progress_total else "-"
        last = losses.get(job.id)
        table.append([job.id, job.name, job.status, progress, job.method, job.base_model or "-",
                      jobs.format_time(job.started_at), jobs.format_duration(job),
                      f"{last:.4f}" if last is not None else "-"])
    _table(table, ["ID", "NAME", "STATUS", "PROGRESS", "METHOD", "BASE MODEL", "STARTED", "DURATION", "LOSS"])
    return 0


def cmd_jobs_show(args) -> int:
    from . import jobs

    _setup()
    summary = jobs.job_summary(jobs.get_job(args.id))
    if args.json:
        _print_json(summary)
        return 0
    for key in ("id", "name", "status", "method", "base_model", "dataset", "attempt", "copied_from", "run_dir"):
        print(f"{key:12} {summary[key]}")
    print("params:      " + (", ".join(f"{k}={v}" for k, v in summary["params"].items()) or "(defaults)"))
    _print_outcome(summary)
    return 0


def cmd_jobs_logs(args) -> int:
    from . import jobs

    _setup()
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
    from . import jobs, metrics

    _setup()
    job = jobs.get_job(args.id)
    if not (args.all or args.name):  # one line per metric; rows with --name or --all
        stats = metrics.metric_stats([job.id])[job.id]
        if args.json:
            _print_json(stats)
            return 0
        way = {"min": "lowest", "max": "highest", None: "-"}
        _table([[name, s["points"], s["last_step"], f"{s['first']:.6g}", f"{s['final']:.6g}",
                 f"{s['best']:.6g}" if s["direction"] else "-", way[s["direction"]]]
                for name, s in sorted(stats.items())],
               ["METRIC", "POINTS", "LAST STEP", "FIRST", "FINAL", "BEST", "BETTER"])
        if not stats:
            print(f"job {job.id} has logged no metric yet")
        return 0
    rows = [{"step": m.step, "name": m.name, "value": m.value, "epoch": m.epoch}
            for m in metrics.metrics_for(job.id, name=args.name)]
    if args.json:
        _print_json([{k: r[k] for k in ("step", "name", "value")} for r in rows])
        return 0
    _table([[r["step"], r["name"], f"{r['value']:.6g}"] for r in rows], ["STEP", "NAME", "VALUE"])
    return 0


def cmd_jobs_cancel(args) -> int:
    from . import jobs

    _setup()
    job = jobs.cancel_job(args.id)
    if job.status == JobStatus.CANCELLING:
        final = jobs.wait_for(job.id, timeout=30, poll=0.2)
        print(f"job {final.id} {final.status}")
    else:
        print(f"job {job.id} {job.status}")
    return 0


def cmd_jobs_copy(args) -> int:
    from . import jobs
    from . import params as paramlib

    _setup()
    job = jobs.copy_job(args.id, name=args.name, params=paramlib.parse_assignments(args.param))
    _start_worker()
    return _after_submit(job, args)


def cmd_jobs_rerun(args) -> int:
    from . import jobs, reruns

    _setup()
    job, notes = reruns.rerun_job(args.id, force=args.force, name=args.name)
    if not args.json:
        seed = (jobs.get_job(args.id).provenance or {}).get("seed")
        print(f"re-running job {args.id} as job {job.id}: same method files, parameters, dataset and base model"
              + (f", seed {seed}" if seed is not None else ""), flush=True)
    for note in notes:  # beside --json's output, not in it
        print(f"note: {note}", file=sys.stderr if args.json else sys.stdout, flush=True)
    _start_worker()
    return _after_submit(job, args)


def cmd_jobs_export(args) -> int:
    from . import tracking

    _setup()
    if args.mlflow is None and not args.tensorboard:
        raise DeepeError("say where to export: --mlflow [TRACKING_URI] and/or --tensorboard DIR")
    tracking.check_targets(args.mlflow, args.tensorboard)  # before a first target is written
    selected = tracking.select_jobs(args.ids, all_jobs=args.all, since=args.since)
    report: dict = {"jobs": [j.id for j in selected]}
    if not selected:
        if args.json:
            _print_json(report)
        else:
            print("no finished job to export")
        return 0
    if args.mlflow is not None:
        report["mlflow"] = tracking.export_mlflow(selected, args.mlflow or None, experiment=args.experiment)
    if args.tensorboard:
        report["tensorboard"] = tracking.export_tensorboard(selected, args.tensorboard)
    if args.json:
        _print_json(report)
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
    from . import compare

    _setup()
    report = compare.compare_jobs(args.ids)
    if args.json:
        _print_json(report)
        return 0
    print("configuration (differences):" if report["differences"] else "configuration: identical")
    keys = sorted(report["differences"])
    if keys:
        _table([[k] + [report["differences"][k].get(str(i), "-") for i in report["ids"]] for k in keys],
               ["PARAMETER"] + [f"job {i}" for i in report["ids"]])
    print()
    rows = []
    for name, per_job in sorted(report["metrics"].items()):
        for job_id in report["ids"]:
            stats = per_job.get(str(job_id))
            if stats:
                rows.append([name, job_id, f"{stats['final']:.6g}", f"{stats['best']:.6g}", stats["points"]])
    _table(rows, ["METRIC", "JOB", "FINAL", "BEST", "POINTS"])
    if report.get("max_abs_diff"):  # two jobs: how far apart their curves are, step by step
        print()
        gaps = sorted(report["max_abs_diff"].items())
        _table([[name, f"{d['value']:.3g}", d["step"], d["steps"]] for name, d in gaps],
               ["METRIC", "MAX |DIFF|", "AT STEP", "STEPS COMPARED"])
    return 0


def cmd_doctor(args) -> int:
    from . import doctor

    _setup()
    found = doctor.check()
    if args.fix:
        doctor.fix(found)
    if args.json:
        _print_json([{"problem": f.problem, "fix": f.fix, "fixable": f.apply is not None, "fixed": f.fixed}
                     for f in found])
    elif not found:
        print("no problems found")
    for finding in found if not args.json else []:
        state = "fixed" if finding.fixed else ("fix with --fix" if finding.apply else "needs you")
        print(f"- {finding.problem}\n  fix: {finding.fix} [{state}]")
    return 0 if all(f.fixed for f in found) else 1


def cmd_app(args) -> int:
    from .app import serve

    _setup()
    return serve(args)


def cmd_worker(args) -> int:
    from .worker import main as worker_main

    _setup()
    argv = ["--idle-exit", str(args.idle_exit)] if args.idle_exit is not None else []
    argv += ["--executor", args.executor] if args.executor else []
    return worker_main(argv + (["--address", args.address] if args.address else []))


def cmd_worker_stop(args) -> int:
    from .worker import stop_workers

    asked = stop_workers(now=args.now)
    if not asked:
        print("no worker is running on this host")
        return 0
    how = "at once" if args.now else "after the running job's checkpoint (it goes back to the queue)"
    print(f"asked {len(asked)} worker(s) to stop {how}: pid {', '.join(map(str, asked))}")
    return 0


def cmd_demo(args) -> int:
    """SFT-Demo on SmolLM2 and the demo dataset, end to end."""
    from . import jobs, models

    _setup()
    t0 = time.monotonic()
    base = models.ensure_default_model()
    params = {"max_steps": str(args.steps), "batch_size": "4", "learning_rate": "1e-3",
              "max_seq_length": "96", "save_steps": "0", "lora_rank": "8", "lora_alpha": "16"}
    job = jobs.submit_training("SFT-Demo", base.name, "demo-sft", params=params)
    _start_worker()
    print(f"queued job {job.id}: SFT-Demo on {base.name} with demo-sft ({args.steps} steps)", flush=True)
    final = jobs.wait_for(job.id, on_poll=_progress_printer())
    sys.stderr.write("\n")
    summary = jobs.job_summary(final)
    _print_outcome(summary)
    print(f"took {time.monotonic() - t0:.0f}s; logs: deepe jobs logs {job.id}")
    return 0 if final.status == JobStatus.SUCCEEDED else 1


class _Parser(argparse.ArgumentParser):
    """argparse, with the CLI's contract for bad input: one `error: …` line on stderr, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deepe", description="deepe-widgets: fine-tune LLMs from Jupyter.")
    sub = parser.add_subparsers(dest="command", required=True)

    def verb(parent, name, func, help_text, json_flag=False):
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    verb(sub, "init", cmd_init, "create the workspace, built-in methods, demo datasets and default model")

    methods = sub.add_parser("methods", help="training methods").add_subparsers(dest="verb", required=True)
    verb(methods, "list", cmd_methods_list, "list methods", True)
    p = verb(methods, "show", cmd_methods_show, "show one method", True)
    p.add_argument("name")
    p = verb(methods, "add", cmd_methods_add, "register a method")
    p.add_argument("--name", required=True)
    p.add_argument("--display-name")
    p.add_argument("--type", default="chat", help="chat, embedding, vision-language or image-generation")
    p.add_argument("--lifecycle", default="customized", help="customized, complete or live")
    p.add_argument("--description")
    p.add_argument("--args", metavar="TEMPLATE",
                   help="for a training script with its own flag names: its command line, with {PARAMETER} "
                        "placeholders, e.g. \"--base_model {MODEL_PATH} --data_path {DATASET_PATH} "
                        "--output_dir {OUTPUT_DIR}\"")
    p.add_argument("--stage", action="append", metavar="STAGE=FILE@KERNEL",
                   help="a stage file and its kernel, e.g. training=train.ipynb@python3 (repeatable)")
    p = verb(methods, "delete", cmd_methods_delete, "delete a (non built-in) method")
    p.add_argument("name")
    p = verb(methods, "test", cmd_methods_test, "run a training file directly, without the queue (seed 003 A-D)")
    p.add_argument("file")
    p.add_argument("--base-model", required=True, help="a model folder or a registered model name")
    p.add_argument("--dataset", required=True, help="a dataset file or a registered dataset name")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--output", help="folder for the record, log and output (default: ./deepe-test-<time>)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")

    models = sub.add_parser("models", help="base models and trained models").add_subparsers(dest="verb", required=True)
    p = verb(models, "add", cmd_models_add, "register a base model folder")
    p.add_argument("name")
    p.add_argument("path")
    p = verb(models, "list", cmd_models_list, "list models", True)
    p.add_argument("--kind", choices=["base", "customized", "complete", "live"])
    p = verb(models, "show", cmd_models_show, "show one model", True)
    p.add_argument("name")
    p = verb(models, "delete", cmd_models_delete, "delete a model (and the folder the workspace made)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="also when other models were made from it")

    p = verb(sub, "save", cmd_save, "merge a customized model into its base: a complete model", True)
    p.add_argument("model")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--keep-adapter", action="store_true",
                   help="keep the LoRA as a file beside the base instead of fusing it (SD-Demo)")
    p.add_argument("--name")
    p.add_argument("--wait", action="store_true")
    p = verb(sub, "infer", cmd_infer, "answer prompts with a model (its method's inference stage; a live model: "
             "chat completions on its endpoint)", True)
    p.add_argument("model")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--image", help="the image a vision-language model answers about")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="max_new_tokens=…, temperature=…; an embedding model: corpus=FILE, top_k=…")

    datasets = sub.add_parser("datasets", help="datasets").add_subparsers(dest="verb", required=True)
    p = verb(datasets, "add", cmd_datasets_add, "register a jsonl, json, csv or parquet file")
    p.add_argument("name")
    p.add_argument("path")
    verb(datasets, "list", cmd_datasets_list, "list datasets", True)
    p = verb(datasets, "preview", cmd_datasets_preview, "show the first rows", True)
    p.add_argument("name")
    p.add_argument("--rows", type=cli_int(1), default=5)
    p = verb(datasets, "delete", cmd_datasets_delete, "forget a dataset (its file stays); refused while a "
             "queued or running job uses it")
    p.add_argument("name")

    p = verb(sub, "train", cmd_train, "queue a training", True)
    p.add_argument("--method", required=True)
    p.add_argument("--base-model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--name")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")
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
    p = verb(jobs_p, "logs", cmd_jobs_logs, "print the stage logs")
    p.add_argument("id", type=cli_job_id)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p = verb(jobs_p, "copy", cmd_jobs_copy, "queue a copy of a training, some parameters changed", True)
    p.add_argument("id", type=cli_job_id)
    p.add_argument("--name")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")
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
    p = verb(sub, "doctor", cmd_doctor, "check the workspace and database; --fix applies the fixes", True)
    p.add_argument("--fix", action="store_true")
    p = verb(sub, "app", cmd_app, "serve the dashboard as a Voila app on 127.0.0.1")
    add_app_arguments(p)
    p = verb(sub, "worker", cmd_worker, "run a worker in the foreground (SIGTERM: stop after a checkpoint)")
    p.add_argument("--idle-exit", type=cli_seconds(above_zero=False), default=None)
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where stages run (default: DEEPE_EXECUTOR, else local)")
    p.add_argument("--address", default=None, help="the ray executor's Ray dashboard (default: RAY_ADDRESS)")
    worker_sub = p.add_subparsers(dest="verb")
    p = verb(worker_sub, "stop", cmd_worker_stop, "stop this host's workers: the running job saves a "
             "checkpoint and goes back to the queue")
    p.add_argument("--now", action="store_true", help="hand the running job back without the checkpoint")
    p = verb(sub, "demo", cmd_demo, "SFT-Demo on SmolLM2 and the demo dataset, end to end")
    p.add_argument("--steps", type=cli_int(1), default=30)
    add_live_commands(sub, verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    from . import config

    config.skip_slow_optional_imports()
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "compare" and len(args.ids) < 2:
        parser.exit(2, "error: compare needs two or more job ids\n")
    try:
        config.check_environment()
        return args.func(args)
    except DeepeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (queued and running jobs go on; see: deepe jobs list)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
