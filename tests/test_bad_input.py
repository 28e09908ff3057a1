"""Bad input (issue 25's 29 cases and their kin): each ends in exit 2, exactly one `error:` line, no
traceback, and nothing half-written (no dataset, method or job registered, no folder created).

The CLI runs in this process (`cli.main`), on one shared workspace: every case is a refusal, and
each checks that the workspace's catalogue is the same after it as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import cli, config, store

from helpers import REPO, deepe

TEMPLATE = REPO / "method_templates" / "custom_template" / "training.ipynb"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One workspace (built-ins, demo datasets, a base model folder `fake`) for every case."""
    from deepe_widgets import demo_data, methods, models

    root = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPE_HOME", str(root / "home"))
        patch.delenv("DEEPE_DB_URL", raising=False)
        patch.delenv("DEEPE_ALLOWED_ROOTS", raising=False)
        store.dispose_engines()
        methods.ensure_builtins()
        demo_data.ensure_demo_datasets()
        model = root / "fake-model"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
        models.add_model("fake", model)
        yield root
    store.dispose_engines()


@pytest.fixture
def ws(shared, monkeypatch, tmp_path):
    """The shared workspace for one case; the case's own files go in `tmp_path`."""
    monkeypatch.setenv("DEEPE_HOME", str(shared / "home"))
    monkeypatch.delenv("DEEPE_DB_URL", raising=False)
    monkeypatch.delenv("DEEPE_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("DEEPE_LEASE_SECONDS", raising=False)
    store.dispose_engines()
    yield tmp_path
    store.dispose_engines()


def catalogue() -> dict:
    """What a refused command must leave as it was."""
    with store.read_session() as s:
        return {table.__name__: sorted(s.exec(store.select(table.name)))
                for table in (store.DatasetRecord, store.Method, store.ModelRecord)} | {
            "jobs": sorted(s.exec(store.select(store.Job.id))),
            "runs": sorted(p.name for p in config.runs_dir().iterdir())}


def run(argv: list[str]) -> int:
    """`deepe ARGV` in this process: its exit code (argparse's refusals exit through SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@dataclass
class Case:
    argv: list[str]
    env: dict = field(default_factory=dict)
    absent: list[Path] = field(default_factory=list)  # paths the command must not create
    says: str = ""  # a word the error line holds


def write(path: Path, text: str | bytes) -> str:
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return str(path)


def method_with_defaults(tmp: Path, **cell: str) -> str:
    """The custom template with some parameters-cell defaults replaced (`BATCH_SIZE='"4"'`)."""
    notebook = nbformat.read(TEMPLATE, as_version=4)
    for cell_ in notebook.cells:
        if "parameters" in cell_.metadata.get("tags", []):
            lines = cell_.source.splitlines()
            for name, value in cell.items():
                lines = [f"{name} = {value}" if line.split("=")[0].strip() == name else line for line in lines]
            cell_.source = "\n".join(lines)
    nbformat.write(notebook, tmp / "training.ipynb")
    return f"training={tmp / 'training.ipynb'}@python3"


TRAIN = ["train", "--method", "SFT-Demo", "--base-model", "fake", "--dataset", "demo-sft"]


def cases(tmp: Path) -> dict[str, Case]:
    """Each case by name; built lazily so only the case run writes its files."""
    return {
        # --- datasets
        "csv-field-over-the-limit": lambda: Case(["datasets", "add", "d", write(
            tmp / "big.csv", "instruction,output\n" + "a" * (16 * 2**20 + 1) + ",b\n")], says="cannot be read as CSV"),
        "csv-row-with-more-fields": lambda: Case(["datasets", "add", "d", write(
            tmp / "extra.csv", "instruction,output\nq,a,surplus\n")], says="3 fields"),
        "broken-parquet": lambda: Case(["datasets", "add", "d", write(tmp / "b.parquet", b"PAR1 not really")],
                                       says="parquet"),
        "json-nested-100k-deep": lambda: Case(["datasets", "add", "d", write(
            tmp / "deep.json", "[" * 100_000 + "]" * 100_000)], says="nested too deeply"),
        "jsonl-nested-100k-deep": lambda: Case(["datasets", "add", "d", write(
            tmp / "deep.jsonl", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")], says="nested too deeply"),
        "jsonl-integer-over-4300-digits": lambda: Case(["datasets", "add", "d", write(
            tmp / "int.jsonl", '{"instruction": "q", "output": ' + "9" * 5000 + "}\n")], says="4300 digits"),
        "train-file-that-fails-stays-unregistered": lambda: Case(
            TRAIN[:-1] + [write(tmp / "nocols.jsonl", '{"q": "x", "a": "y"}\n')], says="instruction/output"),
        "image-outside-the-allowed-folders": lambda: Case(["datasets", "add", "d", write(
            tmp / "vl.jsonl", json.dumps({"image": "/etc/hostname", "question": "q", "answer": "a"}) + "\n")],
            says="outside the allowed folders"),
        # --- numbers
        "job-id-too-large": lambda: Case(["jobs", "show", str(2**70)], says="job id"),
        "export-id-too-large": lambda: Case(["jobs", "export", str(2**70), "--tensorboard", str(tmp / "tb")],
                                            absent=[tmp / "tb"], says="job id"),
        "limit-too-large": lambda: Case(["jobs", "list", "--limit", str(2**70)], says="--limit"),
        "limit-0": lambda: Case(["jobs", "list", "--limit", "0"], says="--limit"),
        "limit-negative": lambda: Case(["jobs", "list", "--limit", "-1"], says="--limit"),
        "rows-negative": lambda: Case(["datasets", "preview", "demo-sft", "--rows", "-2"], says="--rows"),
        "lines-negative": lambda: Case(["deployments", "logs", "x", "--lines", "-3"], says="--lines"),
        # --- ports and durations
        "port-99999": lambda: Case(["app", "--port", "99999"], says="--port"),
        "port-negative": lambda: Case(["app", "--port", "-1"], says="--port"),
        "port-0": lambda: Case(["app", "--port", "0"], says="--port"),
        "cull-after-inf": lambda: Case(["app", "--cull-after", "inf"], says="--cull-after"),
        "cull-after-nan": lambda: Case(["app", "--cull-after", "nan"], says="--cull-after"),
        "cull-after-negative": lambda: Case(["app", "--cull-after", "-5"], says="--cull-after"),
        # --- database and workspace
        "db-url-postgres-no-server": lambda: Case(["datasets", "list"], env={
            "DEEPE_DB_URL": "postgres://deepe:hunter2@127.0.0.1:1/deepe"}, says="DEEPE_DB_URL"),
        "db-url-nonsense": lambda: Case(["datasets", "list"], env={"DEEPE_DB_URL": "nonsense"}, says="DEEPE_DB_URL"),
        "db-url-bad-port": lambda: Case(["datasets", "list"], env={
            "DEEPE_DB_URL": "postgresql://deepe:hunter2@127.0.0.1:99999/deepe"}, says="DEEPE_DB_URL"),
        "db-url-port-not-a-number": lambda: Case(["datasets", "list"], env={
            "DEEPE_DB_URL": "postgresql://deepe:hunter2@127.0.0.1:abc/deepe"}, says="DEEPE_DB_URL"),
        "db-url-sqlite-in-a-missing-folder": lambda: Case(["datasets", "list"], env={
            "DEEPE_DB_URL": f"sqlite:///{tmp / 'missing' / 'deepe.db'}"}, absent=[tmp / "missing"],
            says="does not exist"),
        "home-is-a-file": lambda: Case(["datasets", "list"], env={"DEEPE_HOME": write(tmp / "file", "x")},
                                       says="DEEPE_HOME"),
        "home-in-proc": lambda: Case(["datasets", "list"], env={"DEEPE_HOME": "/proc/deepe"}, says="DEEPE_HOME"),
        "home-is-proc": lambda: Case(["datasets", "list"], env={"DEEPE_HOME": "/proc"}, says="DEEPE_HOME"),
        "lease-seconds-abc": lambda: Case(["jobs", "list"], env={"DEEPE_LEASE_SECONDS": "abc"},
                                          says="DEEPE_LEASE_SECONDS"),
        "lease-seconds-0": lambda: Case(["jobs", "list"], env={"DEEPE_LEASE_SECONDS": "0"},
                                        says="DEEPE_LEASE_SECONDS"),
        # --- methods and parameters
        "method-numeric-default-a-string": lambda: Case(["methods", "add", "--name", "m1", "--stage",
                                                         method_with_defaults(tmp, BATCH_SIZE='"4"')],
                                                        says="BATCH_SIZE"),
        "method-numeric-default-none": lambda: Case(["methods", "add", "--name", "m2", "--stage",
                                                     method_with_defaults(tmp, LEARNING_RATE="None")],
                                                    says="LEARNING_RATE"),
        "duplicate-stage": lambda: Case(["methods", "add", "--name", "m3", "--stage", f"training={TEMPLATE}@python3",
                                         "--stage", f"training ={TEMPLATE}@python3"], says="twice"),
        "duplicate-param": lambda: Case(TRAIN + ["--param", "max_steps=5", "--param", "max_steps=7"], says="twice"),
        "train-name-too-long-for-the-model-name": lambda: Case(TRAIN + ["--name", "n" * 120], says="shorter"),
        "secret-looking-parameter": lambda: Case(TRAIN + ["--param", "hf_token=hf_abc"],
                                                 says="environment variables"),
        # --- other
        "deploy-host-not-a-host": lambda: Case(["deploy", "fake", "--host", "not-a-host"], says="--host"),
        "deploy-port-99999": lambda: Case(["deploy", "fake", "--port", "99999"], says="--port"),
        "tensorboard-at-a-file": lambda: Case(["jobs", "export", "--all", "--tensorboard", write(tmp / "tb", "x")],
                                              says="is a file"),
        "mlflow-in-a-missing-folder": lambda: Case(["jobs", "export", "--all", "--mlflow",
                                                    str(tmp / "missing" / "dir" / "x.db")],
                                                   absent=[tmp / "missing"], says="does not exist"),
        "methods-test-output-outside": lambda: Case(
            ["methods", "test", str(TEMPLATE), "--base-model", "fake", "--dataset", "demo-sft", "--output",
             str(tmp / "out")], env={"DEEPE_ALLOWED_ROOTS": os.pathsep.join(
                 [str(REPO), str(Path(os.environ["DEEPE_HOME"]).parent)])},
            absent=[tmp / "out"], says="outside"),
    }


CASE_NAMES = list(cases(Path("/nonexistent")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_error_line_and_exit_2(ws, monkeypatch, capsys, name):
    case = cases(ws)[name]()
    before = catalogue()
    saved = {key: os.environ.get(key) for key in case.env}
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    store.dispose_engines()
    code = run(case.argv)
    out, err = capsys.readouterr()
    for key, value in saved.items():  # back to the shared workspace, to compare
        monkeypatch.setenv(key, value) if value is not None else monkeypatch.delenv(key)
    store.dispose_engines()
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(err.strip().splitlines()) == 1, err
    assert case.says in errors[0], errors[0]
    assert "Traceback" not in out + err
    assert "hunter2" not in out + err  # a database password never shows
    assert catalogue() == before
    for path in case.absent:
        assert not path.exists(), f"{path} was created"


def test_a_bad_setting_is_one_line_from_the_installed_command_too(tmp_path):
    """The same through `python -m deepe_widgets.cli`, where the environment is read at start."""
    done = deepe("jobs", "list", check=False, env={"DEEPE_HOME": write(tmp_path / "file", "x")})
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert "DEEPE_HOME" in done.stderr and "Traceback" not in done.stdout + done.stderr


def test_a_long_csv_field_is_a_dataset(ws, capsys):
    """Python's csv limit (131,072 characters) is no limit of ours: a long document is a row."""
    path = write(ws / "long.csv", "instruction,output\n" + "word " * 40_000 + ",b\n")
    assert cli.main(["datasets", "add", "long", path]) == 0
    assert "1 rows" in capsys.readouterr().out
    assert cli.main(["datasets", "delete", "long"]) == 0
    assert "its file" in capsys.readouterr().out and Path(path).is_file()


def test_rich_markup_in_rows_is_shown_as_written(ws, capsys):
    """A Llama-2 row's `[/INST]` and a `[link=…]` are text in `datasets preview`, never markup."""
    row = {"instruction": "[INST] hi [/INST]", "output": "[link=http://x.invalid]go[/link] [bold]x"}
    path = write(ws / "markup.jsonl", json.dumps(row) + "\n")
    assert cli.main(["datasets", "add", "markup", path]) == 0
    capsys.readouterr()
    try:
        assert cli.main(["datasets", "preview", "markup"]) == 0
        out = capsys.readouterr().out
        assert "[INST] hi [/INST]" in out and "[link=http://x.invalid]go[/link]" in out
        assert "\x1b]8;" not in out  # no terminal hyperlink
    finally:
        cli.main(["datasets", "delete", "markup"])


def test_datasets_delete_waits_for_the_jobs_that_use_it(ws, capsys):
    from deepe_widgets import datasets, jobs

    path = write(ws / "mine.jsonl", json.dumps({"instruction": "q", "output": "a"}) + "\n")
    datasets.add_dataset("mine", path)
    job = jobs.submit_training("SFT-Demo", "fake", "mine")  # queued; no worker is started
    try:
        assert cli.main(["datasets", "delete", "mine"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"job {job.id}" in err and "mine" in err
        assert "mine" in {d.name for d in datasets.list_datasets()}
        jobs.cancel_job(job.id)
        assert cli.main(["datasets", "delete", "mine"]) == 0
        assert "mine" not in {d.name for d in datasets.list_datasets()} and Path(path).is_file()
    finally:
        if jobs.get_job(job.id).status == "queued":
            jobs.cancel_job(job.id)


def test_init_and_errors_never_show_the_database_password():
    assert config.display_db_url("postgresql+psycopg://deepe:hunter2@db.example/deepe") == \
        "postgresql+psycopg://deepe:***@db.example/deepe"


def test_postgres_scheme_means_postgresql_through_psycopg(monkeypatch):
    pytest.importorskip("psycopg")
    monkeypatch.setenv("DEEPE_DB_URL", "postgres://deepe@db.example/deepe")
    assert config.db_url() == "postgresql+psycopg://deepe@db.example/deepe"


def test_secret_names_are_words_not_substrings():
    from deepe_widgets.params import looks_secret

    assert all(looks_secret(n) for n in ("HF_TOKEN", "wandb_api_key", "WandbApiKey", "DB_PASSWORD", "secret"))
    assert not any(looks_secret(n) for n in ("MAX_NEW_TOKENS", "TOKENIZER_NAME", "KEYWORDS", "max_steps"))


def test_a_postgres_url_as_libpq_writes_it_opens_the_database(postgres, home, monkeypatch):
    """`postgres://` (SQLAlchemy refuses that spelling) reaches the same PostgreSQL database."""
    url = postgres.new_database()  # postgresql+psycopg://postgres@127.0.0.1:PORT/deepe_N
    monkeypatch.setenv("DEEPE_DB_URL", url.replace("postgresql+psycopg://", "postgres://"))
    store.dispose_engines()
    assert config.db_url() == url
    with store.session() as s:
        s.add(store.Meta(key="written-through", value="postgres://"))
    monkeypatch.setenv("DEEPE_DB_URL", url)
    store.dispose_engines()
    assert store.get_one(store.Meta, key="written-through").value == "postgres://"
