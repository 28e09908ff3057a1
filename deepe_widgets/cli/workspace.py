"""`deepe init`, `deepe doctor` and `deepe demo`; and what every verb does first: open the workspace."""

from __future__ import annotations

import time

from ..params import cli_int
from ..store import JobStatus
from .output import JobProgress, print_json, print_outcome


def prepare() -> None:
    """Open the workspace; make sure built-in methods and demo datasets exist."""
    from .. import demo_data, methods

    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()


def start_worker() -> None:
    """A background worker for the job just queued, unless one is alive."""
    from ..worker import ensure_worker

    ensure_worker()


def cmd_init(args) -> int:
    from .. import config, embeddings, models, simpletuner

    prepare()
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


def cmd_doctor(args) -> int:
    from .. import doctor

    prepare()
    found = doctor.check()
    if args.fix:
        doctor.fix(found)
    if args.json:
        print_json([{"problem": f.problem, "fix": f.fix, "fixable": f.apply is not None, "fixed": f.fixed}
                    for f in found])
    elif not found:
        print("no problems found")
    for finding in found if not args.json else []:
        state = "fixed" if finding.fixed else ("fix with --fix" if finding.apply else "needs you")
        print(f"- {finding.problem}\n  fix: {finding.fix} [{state}]")
    return 0 if all(f.fixed for f in found) else 1


def cmd_demo(args) -> int:
    """SFT-Demo on SmolLM2 and the demo dataset, end to end."""
    from .. import jobs, models

    prepare()
    t0 = time.monotonic()
    base = models.ensure_default_model()
    params = {"max_steps": str(args.steps), "batch_size": "4", "learning_rate": "1e-3",
              "max_seq_length": "96", "save_steps": "0", "lora_rank": "8", "lora_alpha": "16"}
    job = jobs.submit_training("SFT-Demo", base.name, "demo-sft", params=params)
    start_worker()
    print(f"queued job {job.id}: SFT-Demo on {base.name} with demo-sft ({args.steps} steps)", flush=True)
    with JobProgress() as progress:
        final = jobs.wait_for(job.id, on_poll=progress)
    summary = jobs.job_summary(final)
    print_outcome(summary)
    print(f"took {time.monotonic() - t0:.0f}s; logs: deepe jobs logs {job.id}")
    return 0 if final.status == JobStatus.SUCCEEDED else 1


def add_arguments(sub, verb) -> None:
    """`deepe init`, `deepe doctor`, `deepe demo`."""
    verb(sub, "init", cmd_init, "create the workspace, built-in methods, demo datasets and default model")
    p = verb(sub, "doctor", cmd_doctor, "check the workspace and database; --fix applies the fixes", True)
    p.add_argument("--fix", action="store_true")
    p = verb(sub, "demo", cmd_demo, "SFT-Demo on SmolLM2 and the demo dataset, end to end")
    p.add_argument("--steps", type=cli_int(1), default=30)
