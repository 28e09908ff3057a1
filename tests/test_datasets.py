import json

import pytest

from deepe_widgets import datasets
from deepe_widgets.errors import DeepeError


def test_formats_are_detected_with_columns_and_rows(home, tmp_path):
    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(7)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for suffix in ("jsonl", "json", "csv", "parquet"):
        record = datasets.add_dataset(f"d-{suffix}", tmp_path / f"d.{suffix}")
        assert (record.format, record.columns, record.rows) == (suffix, ["q", "a"], 7)
        columns, first = datasets.preview(f"d-{suffix}", rows=2)
        assert columns == ["q", "a"] and first[1] == {"q": "question 1", "a": "answer 1"}


@pytest.mark.parametrize("content,message", [
    (b"", "has no rows"),
    (b"\xff\xfe\x00bad", "is not UTF-8"),
    (b'{"a": 1}\nnot json\n', "line 2 is not valid JSON"),
    (b"[1, 2]\n", "line 1 is not a JSON object"),
])
def test_bad_dataset_files_are_refused(home, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DeepeError, match=message):
        datasets.add_dataset("bad", path)
    assert datasets.list_datasets() == []


def test_names_never_become_paths(home, tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"a": 1}\n')
    for name in ("../x", "a/b", "bad\nname", "..", ""):
        with pytest.raises(DeepeError):
            datasets.add_dataset(name, path)


def test_training_refuses_columns_the_dataset_lacks(home, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "x", "a": "y"}\n')
    record = datasets.add_dataset("qa", path)
    with pytest.raises(DeepeError, match="has no prompt and response columns \\(instruction/output"):
        datasets.check_columns(record, "", "")
    with pytest.raises(DeepeError, match="has no column 'question'"):
        datasets.check_columns(record, "question", "a")
    datasets.check_columns(record, "q", "a")
