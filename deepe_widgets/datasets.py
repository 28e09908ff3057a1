"""Registered datasets: names pointing at local jsonl / json / csv / parquet files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sqlalchemy import delete
from sqlmodel import select

from . import image_data, store
from .errors import DeepeError
from .images import check_images, image_column
from .names import check_name
from .paths import check_allowed

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# A CSV cell may hold a long document (Python's default limit is 131,072 characters); beyond this
# a file is more likely broken (an unclosed quote swallowing the rest) than a dataset.
CSV_FIELD_LIMIT = 16 * 2**20
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
                    row = _parse_json(line, f"{path}: line {lineno}")
                    if not isinstance(row, dict):
                        raise DeepeError(f"{path}: line {lineno} is not a JSON object", field="dataset")
                    count += 1
                    if limit is None or len(rows) < limit:
                        rows.append(row)
        elif fmt == "json":
            data = _parse_json(path.read_text(encoding="utf-8"), str(path))
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DeepeError(f"{path}: a .json dataset must be a list of objects", field="dataset")
            rows, count = data[:limit] if limit is not None else data, len(data)
        elif fmt == "csv":
            all_rows = _read_csv(path)
            rows, count = all_rows[:limit] if limit is not None else all_rows, len(all_rows)
        else:
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DeepeError("reading parquet needs pyarrow: pip install 'deepe-widgets[train]'",
                                 field="dataset") from None
            import pyarrow as pa

            try:
                table = pq.read_table(path)
            except (pa.ArrowException, ValueError) as exc:
                raise DeepeError(f"{path} is not a readable parquet file ({str(exc).split('. ')[0]})",
                                 field="dataset") from None
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


def _parse_json(text: str, where: str):
    """One JSON document, or a DeepeError saying what is wrong with it (`where`: file and line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeepeError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno})", field="dataset") from None
    except RecursionError:
        raise DeepeError(f"{where} is nested too deeply to read (thousands of levels of lists or objects)",
                         field="dataset") from None
    except ValueError as exc:  # an integer longer than Python converts (4,300 digits)
        raise DeepeError(f"{where} cannot be read: {str(exc).split(';')[0]}", field="dataset") from None


def _read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file with a header; a row with more fields than the header is refused
    (csv.DictReader would keep the extra under a `None` column)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = []
        try:
            for row in reader:
                if None in row:
                    raise DeepeError(f"{path}: line {reader.line_num} has {len(reader.fieldnames) + len(row[None])} "
                                     f"fields, but the header names {len(reader.fieldnames)}; quote fields that "
                                     f"hold commas", field="dataset")
                rows.append(row)
        except csv.Error as exc:
            raise DeepeError(f"{path}: line {reader.line_num} cannot be read as CSV ({exc})", field="dataset") from None
    return rows


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


def delete_dataset(name: str) -> store.DatasetRecord:
    """Forget a registered dataset (its file stays); refused while a queued or running job uses it."""
    record = get_dataset(name)
    with store.session() as s:
        using = list(s.exec(select(store.Job.id).where(store.Job.dataset == name,
                                                       store.Job.status.not_in(store.FINISHED))))
        if using:
            raise DeepeError(f"dataset {name!r} is used by job {', '.join(map(str, sorted(using)))}, which has not "
                             f"finished; cancel it or wait (deepe jobs cancel ID)", field="dataset")
        s.exec(delete(store.DatasetRecord).where(store.DatasetRecord.name == name))
    return record


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
        raise DeepeError(f"dataset {record.name!r} has no prompt and response columns (instruction/output or "
                         f"question/answer); name its own with PromptInputColumn and PromptOutputColumn "
                         f"(its columns: {', '.join(record.columns)})", field="PromptInputColumn")


def check_preference_pairs(record: store.DatasetRecord, prompt_column: str = "", chosen_column: str = "",
                           rejected_column: str = "", max_samples: int = 0) -> None:
    """Refuse a preference dataset (DPO, KTO, ORPO, SimPO, a reward model) without its prompt / chosen /
    rejected columns, or with a row that lacks a response or whose chosen and rejected responses are the same.

    Empty column names mean `prompt`, `chosen`, `rejected`. Without a prompt column, chosen and
    rejected must be whole conversations (lists of messages): TRL takes their shared opening turns
    as the prompt."""
    named = (("PromptInputColumn", prompt_column or "prompt"), ("PromptOutputColumn", chosen_column or "chosen"),
             ("PromptRejectedColumn", rejected_column or "rejected"))
    labels = {"PromptInputColumn": "prompt", "PromptOutputColumn": "chosen", "PromptRejectedColumn": "rejected"}
    given = {"PromptInputColumn": prompt_column, "PromptOutputColumn": chosen_column,
             "PromptRejectedColumn": rejected_column}
    columns, rows, _count = read_rows(Path(record.path), record.format,
                                      limit=max_samples if max_samples and max_samples > 0 else None)
    if not rows:
        raise DeepeError(f"dataset {record.name!r} has no rows", field="dataset")

    def missing(field: str, column: str) -> DeepeError:
        if given[field]:  # the user named it: say that name is not there
            return DeepeError(f"dataset {record.name!r} has no column {column!r} (the {labels[field]} column); "
                              f"its columns: {', '.join(columns)}", field=field)
        return DeepeError(f"dataset {record.name!r} is not a preference dataset: it has no {labels[field]} column "
                          f"(its columns: {', '.join(columns)}). Preference tuning learns from a prompt, a chosen "
                          f"and a rejected answer per row; name yours with {field}", field=field)

    for field, column in named[1:]:
        if column not in columns:
            raise missing(field, column)
    (_, prompt), (_, chosen), (_, rejected) = named
    implicit = prompt not in columns
    if implicit and (prompt_column or not all(isinstance(rows[0].get(c), list) for c in (chosen, rejected))):
        raise missing("PromptInputColumn", prompt)
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


def check_unpaired_preferences(record: store.DatasetRecord, prompt_column: str = "", completion_column: str = "",
                               max_samples: int = 0) -> None:
    """Refuse KTO's unpaired data without its prompt / completion / label columns (empty names:
    `prompt`, `completion`), with a row that lacks a prompt or completion, or whose label is not true
    or false."""
    prompt, completion = prompt_column or "prompt", completion_column or "completion"
    columns, rows, _count = read_rows(Path(record.path), record.format,
                                      limit=max_samples if max_samples and max_samples > 0 else None)
    if not rows:
        raise DeepeError(f"dataset {record.name!r} has no rows", field="dataset")
    for field, column, given, label in (("PromptInputColumn", prompt, prompt_column, "prompt"),
                                        ("PromptOutputColumn", completion, completion_column, "completion")):
        if column not in columns:
            if given:
                raise DeepeError(f"dataset {record.name!r} has no column {column!r} (the {label} column); "
                                 f"its columns: {', '.join(columns)}", field=field)
            raise DeepeError(f"dataset {record.name!r} has neither preference pairs (prompt / chosen / rejected) "
                             f"nor KTO's rows (prompt / completion / label): it has no {label} column (its "
                             f"columns: {', '.join(columns)}); name yours with {field}", field=field)
    if "label" not in columns:
        raise DeepeError(f"dataset {record.name!r} has no label column: KTO's rows say whether each completion "
                         f"is desirable (label true) or not (false)", field="dataset")
    for number, row in enumerate(rows, 1):
        for field, column in (("PromptInputColumn", prompt), ("PromptOutputColumn", completion)):
            if row.get(column) in (None, "", []):
                raise DeepeError(f"dataset {record.name!r} row {number} has no {column!r}", field=field)
        if str(row.get("label")).lower() not in ("true", "false", "1", "0"):
            raise DeepeError(f"dataset {record.name!r} row {number} has label {row.get('label')!r}: it must be "
                             f"true (a desirable completion) or false", field="dataset")
