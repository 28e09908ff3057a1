"""What the `deepe` verbs print: JSON, plain-text tables, `--wait`'s progress and a job's outcome."""

from __future__ import annotations

import json
import sys

from ..store import JobStatus


def print_json(obj) -> None:
    """The `--json` output of every verb: indented, with dates and paths as strings."""
    print(json.dumps(obj, indent=2, default=str))


def table(rows: list[list], headers: list[str]) -> None:
    """A plain-text table (rich, without borders, so it stays greppable and copyable)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:  # paths and names are never cut short: they get copied
        grid.add_column(escape(str(header)), overflow="fold")
    for row in rows:  # cells are data (a Llama-2 row holds "[/INST]"): never rich markup
        grid.add_row(*(escape(str(c)) for c in row))
    # piped output (scripts, grep) gets whole lines; a terminal its own width
    Console(highlight=False, width=None if sys.stdout.isatty() else 100_000).print(grid)


class JobProgress:
    """`--wait`'s progress on stderr, as `jobs.wait_for`'s `on_poll`; use it as a context manager.

    A terminal gets a rich progress bar, redrawn in place, with the time left. A pipe or a file gets
    one line each time the job's status or step changes, so a log of it stays readable.
    """

    BAR_WIDTH = 30

    def __init__(self, console=None, clock=None):
        """`console`: where it shows (default: stderr); `clock`: seconds, for the time left (default: monotonic)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console or Console(file=sys.stderr, highlight=False)
        self.interactive = self.console.is_terminal
        # The speed is measured from the first step on, so loading the model does not count as a step's
        # time; a long window keeps a time left for trainings whose steps take minutes.
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=self.BAR_WIDTH),
            MofNCompleteColumn(), TimeRemainingColumn(), console=self.console, disable=not self.interactive,
            redirect_stdout=False, redirect_stderr=False, speed_estimate_period=600, get_time=clock)
        self.task = self.progress.add_task("", total=None)
        self._shown = None  # (status, step) of the last line written to a pipe

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, job) -> None:
        """Show where `job` stands."""
        description = f"job {job.id} {job.status}"
        if not job.progress_total and job.status == JobStatus.RUNNING:
            description += " (starting: loading the model and data …)"
        if job.progress_total:
            self.progress.update(self.task, description=description, total=job.progress_total,
                                 completed=job.progress_step)
        else:
            self.progress.update(self.task, description=description)
        if not self.interactive and (job.status, job.progress_step) != self._shown:
            self._shown = (job.status, job.progress_step)
            self.console.file.write(self._line(job, description) + "\n")
            self.console.file.flush()

    def _line(self, job, description: str) -> str:
        if not job.progress_total:
            return description
        bar = "#" * int(job.progress_step / job.progress_total * self.BAR_WIDTH)
        line = f"{description} [{bar:<{self.BAR_WIDTH}}] {job.progress_step}/{job.progress_total}"
        left = self.progress.tasks[0].time_remaining
        if left is not None:
            line += f" ~{int(left) // 60}m{int(left) % 60:02d}s left"
        return line


HELD_OUT_METRICS = ("eval_loss", "eval_heldout_cosine_ndcg@10", "eval_exact_match")


def print_outcome(summary: dict) -> None:
    """A finished job in a few lines: status, loss, held-out scores, records, models, warnings, error."""
    from .. import metrics

    print(f"job {summary['id']} {summary['status']}")
    losses = [m.value for m in metrics.metrics_for(summary["id"], name="loss")]
    if losses:
        print(f"loss: first {losses[0]:.4f}, final {losses[-1]:.4f} over {len(losses)} logged steps")
    # what the trainings measure on held-out data, from step 0 (an evaluation's scores: `deepe evaluate`)
    for name in HELD_OUT_METRICS if summary.get("kind") != "evaluate" else ():
        rows = metrics.metrics_for(summary["id"], name=name)
        if rows:
            print(f"{name}: step {rows[0].step} {rows[0].value:.4f} → step {rows[-1].step} {rows[-1].value:.4f}")
    for record in summary["records"]:
        print(f"record:   {record}")
    for artifact in summary["artifacts"]:
        print(f"{artifact['kind']} model: {artifact['name']} ({artifact['path']})")
    if summary.get("kind") == "train" and summary["status"] == "succeeded":
        from .. import jobs

        queued = [j for j in jobs.list_jobs(limit=20) if j.kind == "evaluate" and
                  j.params.get("TRAINING_JOB") == summary["id"]]
        if queued:
            print("evaluation: " + ", ".join(f"job {j.id} ({j.base_model})" for j in reversed(queued))
                  + " queued; `deepe models show MODEL` prints the scores")
    for warning in summary.get("warnings") or []:
        print(f"warning: {warning}")
    if summary["error"]:
        print(f"error: {summary['error']}")
