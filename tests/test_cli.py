"""The CLI contract: one `error: …` line and exit 2 for bad input, JSON on read verbs, `--wait`'s
progress, and a reader that quits early (`deepe jobs logs 1 | head`) ending it quietly."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepe_widgets import cli
from deepe_widgets.store import Job

from helpers import FAST_PARAMS, deepe, deepe_json


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`deepe ARGV` in this process: exit code, stdout, stderr (argparse's refusals exit through SystemExit)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,message", [
    (["train", "--method", "Nope", "--base-model", "tiny", "--dataset", "demo-sft"], "no method named 'Nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "nope", "--dataset", "demo-sft"], "no model named 'nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "nope"], "no dataset named 'nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft", "--param", "max_steps=x"],
     "MAX_STEPS must be a whole number"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-gsm", "--param",
      "prompt_input_column=nope", "--param", "prompt_output_column=answer"], "has no column 'nope'"),
    (["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft", "--name", "../x"],
     "may only use letters"),
    (["methods", "delete", "SFT-Demo"], "built in and cannot be deleted"),
    (["methods", "add", "--name", "x", "--stage", "training=nonexistent.ipynb@python3"], "does not exist"),
    (["methods", "add", "--name", "x", "--lifecycle", "complete", "--stage",
      "training=method_templates/custom_template/training.ipynb@python3"], "needs its saving code file"),
    (["models", "add", "m", "/tmp"], "is not a model folder"),
    (["datasets", "add", "d", "nonexistent.jsonl"], "does not exist"),
    (["datasets", "add", "d", "/etc/passwd"], "outside the allowed folders"),
    (["jobs", "show", "999"], "no job with id 999"),
    (["jobs", "show", "abc"], "job id must be a number"),
    (["worker", "--idle-exit", "-1"], "must be a number of seconds from 0"),
])
def test_bad_input_exits_2_with_one_line(workspace, args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_a_worker_with_an_unknown_executor_is_refused_before_it_starts(workspace, monkeypatch, capsys):
    monkeypatch.setenv("DEEPE_EXECUTOR", "nowhere")
    code, _, err = run_cli(["worker", "--idle-exit", "0"], capsys)
    assert code == 2 and err == "error: DEEPE_EXECUTOR='nowhere' is not an executor; choose from local, ray\n"


def test_read_verbs_speak_json(workspace, default_model):
    methods = deepe_json("methods", "list", "--json")
    assert {m["name"] for m in methods} >= {"SFT-Demo", "Custom01", "Custom02"}
    assert [d["name"] for d in deepe_json("datasets", "list", "--json")] == [
        "demo-dpo", "demo-embed", "demo-gsm", "demo-sd", "demo-sft", "demo-vl"]
    preview = deepe_json("datasets", "preview", "demo-sft", "--json", "--rows", "2")
    assert preview["columns"] == ["instruction", "input", "output"] and len(preview["rows"]) == 2
    models = deepe_json("models", "list", "--json", "--kind", "base")
    assert "tiny" in {m["name"] for m in models}
    assert deepe_json("jobs", "list", "--json") == []
    text = deepe("methods", "show", "SFT-Demo").stdout
    assert "MAX_STEPS = -1" in text and "kernel python3" in text


def _job(status: str, step: int = 0, total: int = 0) -> Job:
    return Job(id=7, method="SFT-Demo", status=status, progress_step=step, progress_total=total)


def test_progress_piped_is_a_line_per_status_or_step():
    stream, now = io.StringIO(), [0.0]
    from rich.console import Console

    with cli.output.JobProgress(Console(file=stream), clock=lambda: now[0]) as progress:
        for status, step, at in [("queued", 0, 0), ("queued", 0, 1), ("running", 0, 2), ("running", 1, 30),
                                 ("running", 1, 31), ("running", 3, 40), ("succeeded", 6, 55)]:
            now[0] = at
            progress(_job(status, step, 6 if status != "queued" and step else 0))
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["job 7 queued", "job 7 running (starting: loading the model and data …)",
                         "job 7 running [#####                         ] 1/6"]
    # from the first step on: 2 steps in 10 s, 3 to go (the model's loading is not a step's time)
    assert lines[3] == "job 7 running [###############               ] 3/6 ~0m15s left"
    assert lines[4].startswith("job 7 succeeded [##############################] 6/6") and len(lines) == 5


def test_progress_on_a_terminal_is_a_rich_bar():
    from rich.console import Console

    stream = io.StringIO()
    with cli.output.JobProgress(Console(file=stream, force_terminal=True, width=100)) as progress:
        progress(_job("running", 2, 6))
        progress(_job("succeeded", 6, 6))
    shown = stream.getvalue()
    assert "job 7 succeeded" in shown and "6/6" in shown and "━" in shown  # rich's bar, redrawn in place
    assert "[####" not in shown


@pytest.mark.training
def test_train_wait_shows_progress_then_the_outcome(workspace):
    done = deepe("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft", *FAST_PARAMS,
                 "--wait")
    progress = done.stderr.splitlines()
    assert progress[0] == "job 1 queued" and progress[-1].startswith("job 1 succeeded [") and "] 6/6" in progress[-1]
    steps = [int(line.split("] ")[1].split("/")[0]) for line in progress if "/6" in line]
    assert steps == sorted(steps) and len(set(progress)) == len(progress)  # a line when the status or step moves
    out = done.stdout.splitlines()
    assert out[0].startswith("queued job 1 (") and "job 1 succeeded" in out
    assert any(line.startswith("loss: first ") and line.endswith("over 6 logged steps") for line in out)


def test_a_reader_that_quits_early_ends_the_cli_quietly(workspace):
    """`deepe jobs logs 1 | head -1`: no BrokenPipeError traceback, exit 0 or 141 (SIGPIPE's)."""
    from deepe_widgets import jobs

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")  # queued; no worker is started
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    # far more than a pipe holds (64 KiB), so the CLI is still writing when the reader goes
    Path(job.run_dir, "training.log").write_text("".join(f"step {i}: loss 0.5\n" for i in range(100_000)))
    reader = subprocess.Popen([sys.executable, "-m", "deepe_widgets.cli", "jobs", "logs", str(job.id)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=os.environ.copy())
    assert reader.stdout.readline() == b"step 0: loss 0.5\n"
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=60) in (0, 141) and err == "", err
