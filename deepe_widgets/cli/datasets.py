"""`deepe datasets add|list|preview|delete`, and a data file given where a dataset name is asked."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DeepeError
from ..params import cli_int
from .output import print_json, table
from .workspace import prepare


def cmd_datasets_add(args) -> int:
    from .. import datasets

    prepare()
    record = datasets.add_dataset(args.name, args.path)
    print(f"registered dataset {record.name}: {record.rows} rows, {record.format}, "
          f"columns {', '.join(record.columns)}")
    return 0


def cmd_datasets_list(args) -> int:
    from .. import datasets

    prepare()
    rows = [{"name": d.name, "format": d.format, "rows": d.rows, "columns": d.columns, "path": d.path}
            for d in datasets.list_datasets()]
    if args.json:
        print_json(rows)
        return 0
    table([[r["name"], r["format"], r["rows"], ", ".join(map(str, r["columns"])), r["path"]] for r in rows],
          ["NAME", "FORMAT", "ROWS", "COLUMNS", "PATH"])
    return 0


def cmd_datasets_delete(args) -> int:
    from .. import datasets

    prepare()
    record = datasets.delete_dataset(args.name)
    print(f"deleted dataset {record.name} (its file {record.path} stays)")
    return 0


def cmd_datasets_preview(args) -> int:
    from .. import datasets

    prepare()
    columns, rows = datasets.preview(args.name, args.rows)
    if args.json:
        print_json({"columns": columns, "rows": rows})
        return 0
    table([[str(r.get(c, ""))[:40].replace("\n", " ") for c in columns] for r in rows], columns)
    return 0


def dataset_name_or_file(value: str, quiet: bool = False) -> str:
    """A registered dataset name; a data file given instead is registered under its file name
    (or found, when that file is registered already)."""
    from .. import datasets, store

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
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "dataset"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def add_arguments(sub, verb) -> None:
    """`deepe datasets …`."""
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
