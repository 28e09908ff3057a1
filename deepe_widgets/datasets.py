"""Registered datasets: names pointing at local jsonl / json / csv / parquet files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sqlmodel import select

from . import image_data, store
from .errors import DeepeError
from .images import check_images, image_column
from .names import check_name
from .paths import check_allowed

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Besides an image column, what makes rows vision-language (question and answer) rather than captioned images
VL_ANSWER_COLUMNS = {"response", "answer", "completion", "output", "assistant"}


def read_rows(path: Path, fmt: str, limit: int | None = None) -> tuple[list[str], list[dict], int]:
    """(columns, first `limit` rows, row count) of a dataset file, with clear errors."""
    try:
        if fmt == "jsonl":
            rows, count = [], 0
            with open(path, encoding="utf-8") as handle:
                for lineno, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DeepeError(f"{path}: line {lineno} is not valid JSON ({exc.msg})",
                                         field="dataset") from None
                    if not isinstance(row, dict):
                        raise DeepeError(f"{path}: line {lineno} is not a JSON object", field="dataset")
                    count += 1
                    if limit is None or len(rows) < limit:
                        rows.append(row)
        elif fmt == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DeepeError(f"{path}: a .json dataset must be a list of objects", field="dataset")
            rows, count = data[:limit] if limit is not None else data, len(data)
        elif fmt == "csv":
            with open(path, encoding="utf-8", newline="") as handle:
                all_rows = list(csv.DictReader(handle))
            rows, count = all_rows[:limit] if limit is not None else all_rows, len(all_rows)
        else:
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DeepeError("reading parquet needs pyarrow: pip install 'deepe-widgets[train]'",
                                 field="dataset") from None
            table = pq.read_table(path)
            count = table.num_rows
            rows = table.slice(0, limit if limit is not None else count).to_pylist()
            return list(table.column_names), rows, count
    except UnicodeDecodeError:
        raise DeepeError(f"{path} is not UTF-8 text; convert it to UTF-8 first", field="dataset") from None
    except json.JSONDecodeError as exc:
        raise DeepeError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})", field="dataset") from None
    except OSError as exc:
        raise DeepeError(f"cannot read {path}: {exc.strerror}", field="dataset") from None
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns, rows, count


def add_dataset(name: str, path: str | Path, replace: bool = False) -> store.DatasetRecord:
    """Register a dataset file; its format, columns and row count are detected."""
    check_name(name, "dataset")
    path = Path(path).expanduser()
    check_allowed(path, "path", "dataset file")
    if path.is_dir():  # an image folder: registered by its metadata.jsonl
        path = image_data.dataset_file(path)
    if not path.is_file():
        raise DeepeError(f"dataset file {str(path)!r} does not exist", field="path")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DeepeError(f"dataset file {str(path)!r} must end in .jsonl, .json, .csv or .parquet", field="path")
    columns, _rows, count = read_rows(path, fmt, limit=1000)
    if count == 0:
        raise DeepeError(f"dataset file {str(path)!r} has no rows", field="path")
    if image_column(columns) and ("messages" in columns or set(columns) & VL_ANSWER_COLUMNS):
        # a vision-language dataset: every image must open, or the row is named
        check_images(path, read_rows(path, fmt)[1], image_column(columns), name)
    elif fmt == "jsonl" and image_data.image_column(columns):  # images with captions: each read once, now
        image_data.check_image_rows(path, read_rows(path, fmt)[1])
    with store.session() as s:
        record = s.exec(select(store.DatasetRecord).where(store.DatasetRecord.name == name)).first()
        if record is not None and not replace:
            raise DeepeError(f"a dataset named {name!r} already exists", field="name")
        record = record or store.DatasetRecord(name=name, path="", format=fmt)
        record.path, record.format, record.columns, record.rows = str(path.resolve()), fmt, columns, count
        s.add(record)
    return record


def get_dataset(name: str) -> store.DatasetRecord:
    return store.require_named(store.DatasetRecord, name, "dataset", "dataset")


def list_datasets() -> list[store.DatasetRecord]:
    with store.read_session() as s:
        return list(s.exec(select(store.DatasetRecord).order_by(store.DatasetRecord.name)))


def preview(name: str, rows: int = 5) -> tuple[list[str], list[dict]]:
    record = get_dataset(name)
    columns, first, _count = read_rows(Path(record.path), record.format, limit=rows)
    return columns, first


def check_columns(record: store.DatasetRecord, input_column: str, output_column: str) -> None:
    """Refuse a training whose prompt/response columns the dataset lacks."""
    columns = set(record.columns)
    if input_column or output_column:
        for label, column in (("PromptInputColumn", input_column), ("PromptOutputColumn", output_column)):
            if not column:
                raise DeepeError(f"set {label} too: name both the prompt and the response column",
                                 field=label)
            if column not in columns:
                raise DeepeError(f"dataset {record.name!r} has no column {column!r} ({label}); "
                                 f"columns: {', '.join(record.columns)}", field=label)
    elif not {"instruction", "output"} <= columns and not {"question", "answer"} <= columns:
        raise DeepeError(f"dataset {record.name!r} has no instruction/output columns; set "
                         f"PromptInputColumn and PromptOutputColumn (columns: {', '.join(record.columns)})",
                         field="PromptInputColumn")


def check_preference_pairs(record: store.DatasetRecord, prompt_column: str = "", chosen_column: str = "",
                           rejected_column: str = "", max_samples: int = 0) -> None:
    """Refuse a preference dataset (DPO) without its prompt / chosen / rejected columns, or with a
    row that lacks a response or whose chosen and rejected responses are the same.

    Empty column names mean `prompt`, `chosen`, `rejected`. Without a prompt column, chosen and
    rejected must be whole conversations (lists of messages): TRL takes their shared opening turns
    as the prompt."""
    named = (("PromptInputColumn", prompt_column or "prompt"), ("PromptOutputColumn", chosen_column or "chosen"),
             ("PromptRejectedColumn", rejected_column or "rejected"))
    labels = {"PromptInputColumn": "prompt", "PromptOutputColumn": "chosen", "PromptRejectedColumn": "rejected"}
    columns, rows, _count = read_rows(Path(record.path), record.format,
                                      limit=max_samples if max_samples and max_samples > 0 else None)
    if not rows:
        raise DeepeError(f"dataset {record.name!r} has no rows", field="dataset")
    for field, column in named[1:]:
        if column not in columns:
            raise DeepeError(f"dataset {record.name!r} has no {labels[field]} column {column!r}: a preference "
                             f"dataset needs prompt, chosen and rejected columns (set {field} to name it; "
                             f"columns: {', '.join(columns)})", field=field)
    (_, prompt), (_, chosen), (_, rejected) = named
    implicit = prompt not in columns
    if implicit and (prompt_column or not all(isinstance(rows[0].get(c), list) for c in (chosen, rejected))):
        raise DeepeError(f"dataset {record.name!r} has no prompt column {prompt!r} (set PromptInputColumn to "
                         f"name it; columns: {', '.join(columns)})", field="PromptInputColumn")
    same = []
    for number, row in enumerate(rows, 1):
        for field, column in named[int(implicit):]:
            if row.get(column) in (None, "", []):
                raise DeepeError(f"dataset {record.name!r} row {number} has no {labels[field]} "
                                 f"({column!r} is empty)", field=field)
        if row[chosen] == row[rejected]:
            same.append(number)
    if same:
        more = f" (and {len(same) - 1} more)" if len(same) > 1 else ""
        raise DeepeError(f"dataset {record.name!r} row {same[0]}{more} has the same chosen and rejected response: "
                         f"a preference pair needs two different responses", field="dataset")
