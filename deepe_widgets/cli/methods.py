"""`deepe methods list|show|add|delete|test`."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import DeepeError
from .output import print_json, table
from .workspace import prepare


def cmd_methods_list(args) -> int:
    from .. import methods

    prepare()
    rows = [methods.method_summary(m) for m in methods.list_methods()]
    if args.json:
        print_json(rows)
        return 0
    table([[r["name"], r["type"], r["lifecycle"], "yes" if r["builtin"] else "no",
            ", ".join(f"{s}@{i['kernel']}" for s, i in r["stages"].items())] for r in rows],
          ["NAME", "TYPE", "LIFECYCLE", "BUILT-IN", "STAGES"])
    return 0


def cmd_methods_show(args) -> int:
    from .. import methods

    prepare()
    summary = methods.method_summary(methods.get_method(args.name))
    if args.json:
        print_json(summary)
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


def parse_stage_specs(specs: list[str]) -> dict[str, tuple[str, str]]:
    """`--stage STAGE=FILE@KERNEL` flags as {stage: (file, kernel)}."""
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
    from .. import methods

    prepare()
    method = methods.register_method(
        args.name, parse_stage_specs(args.stage), training_type=args.type, lifecycle=args.lifecycle,
        display_name=args.display_name or "", description=args.description or "", args_template=args.args or "")
    summary = methods.method_summary(method)
    mode = " — script mode: it runs unchanged" if summary["script_mode"] else ""
    print(f"registered method {method.name} ({method.lifecycle}; stages: {', '.join(method.stages)}){mode}")
    return 0


def cmd_methods_delete(args) -> int:
    from .. import methods

    prepare()
    methods.delete_method(args.name)
    print(f"deleted method {args.name}")
    return 0


def cmd_methods_test(args) -> int:
    """Seed 003 steps A–D: run a training stage file directly, without the queue."""
    from .. import params as paramlib
    from .. import runner

    prepare()
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


def add_arguments(sub, verb) -> None:
    """`deepe methods …`."""
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
