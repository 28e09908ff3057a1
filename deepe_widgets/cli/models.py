"""`deepe models add|list|show|delete`."""

from __future__ import annotations

import sys

from .output import print_json, table
from .workspace import prepare


def cmd_models_add(args) -> int:
    from .. import models

    prepare()
    record = models.add_model(args.name, args.path)
    print(f"registered base model {record.name} ({record.path})")
    return 0


def cmd_models_list(args) -> int:
    from .. import models

    prepare()
    models.ensure_default_model(progress=lambda m: print(m, file=sys.stderr))
    rows = [models.model_summary(m) for m in models.list_models(args.kind)]
    if args.json:
        print_json(rows)
        return 0
    table([[r["name"], r["kind"], r["method"] or "-", r["path"]] for r in rows], ["NAME", "KIND", "METHOD", "PATH"])
    return 0


def cmd_models_show(args) -> int:
    from .. import models

    prepare()
    summary = models.model_summary(models.get_model(args.name))
    if args.json:
        print_json({**summary, "evaluations": _evaluations(args.name)})
        return 0
    for key in ("name", "kind", "path", "parent", "method", "job_id"):
        print(f"{key:8} {summary[key]}")
    metrics = summary["meta"].get("metrics") or {}
    for name, stats in sorted(metrics.items()):
        best = f", best {stats['best']:.6g}" if stats.get("direction", "min") else ""
        print(f"metric   {name}: final {stats['final']:.6g}{best}")
    for result in _evaluations(args.name):
        print(f"eval     job {result['job_id']} {evaluations_line(result)}")
    return 0


def _evaluations(name: str) -> list[dict]:
    """The newest evaluation per suite, and any still to come."""
    from .. import evaluations

    newest: dict[str, dict] = {}
    for result in evaluations.results(name):
        newest.setdefault(result["suite"], result)
    return list(newest.values())


def evaluations_line(result: dict) -> str:
    from .. import evaluations

    if result["status"] == "succeeded":
        return f"{evaluations.describe(result)}; record {result['record']}"
    why = f": {result['error']}" if result.get("error") else ""
    return f"{result['suite']} on {result['dataset']}: {result['status']}{why}"


def cmd_models_delete(args) -> int:
    from .. import models

    prepare()
    kept = models.delete_model(args.name, force=args.force)  # refused while live or used by a job
    print(models.deleted_words(args.name, kept))
    return 0


def add_arguments(sub, verb) -> None:
    """`deepe models …`."""
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
