"""The ray executor against the local one, on the same training, in one run.

    python -m benchmarks.ray_executor            SmolLM2 (the full configuration); writes benchmarks/RESULTS-ray.md
    python -m benchmarks.ray_executor --tiny     the tiny model (seconds)

A Ray head is started on 127.0.0.1 for the run (its own temp dir) and stopped after. Rows:
submit → running (the job row says running: claimed) and submit → the stage's first cell (the
kernel runs on the node), then submit → succeeded and the ratio ray / local.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .suite import HERE, Bench


def _first_cell_at(job) -> float | None:
    from datetime import datetime

    import nbformat

    try:
        record = nbformat.read(Path(job.run_dir) / "training.ipynb", as_version=4)
    except OSError:
        return None
    starts = [datetime.fromisoformat(c.metadata["papermill"]["start_time"].replace("Z", "+00:00")).timestamp()
              for c in record.cells if c.metadata.get("papermill", {}).get("start_time")]
    return min(starts) if starts else None


def run_one(bench: Bench, executor: str, log: Path) -> dict:
    from deepe_widgets import jobs, worker

    with open(log, "ab") as out:  # a fresh worker for each run: the same start for both executors
        proc = subprocess.Popen([sys.executable, "-m", "deepe_widgets.worker", "--executor", executor,
                                 "--idle-exit", "3"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ,
                                                                                         "DEEPE_WARM_KERNELS": "0"})
    deadline = time.monotonic() + 120
    while proc.pid not in [w.pid for w in worker.live_workers()]:  # up and polling before the submit
        assert proc.poll() is None and time.monotonic() < deadline, f"the {executor} worker did not start: see {log}"
        time.sleep(0.2)
    time.sleep(1.0)
    t0 = time.time()
    job = jobs.submit_training("SFT-Demo", bench.base, "demo-sft", params=bench.params)
    while jobs.get_job(job.id).status == "queued":
        time.sleep(0.01)
    running = time.time() - t0
    final = jobs.wait_for(job.id, poll=0.5)
    proc.wait(timeout=120)
    assert final.status == "succeeded", final.error
    first = _first_cell_at(final)
    return {"running": running, "first_cell": (first - t0) if first else float("nan"),
            "succeeded": final.finished_at - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_executor")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    from deepe_widgets.raycluster import RayHead

    with tempfile.TemporaryDirectory(prefix="deepe-bench-ray-") as tmp:
        bench = Bench(args.tiny, Path(tmp))
        head = RayHead(Path(tmp) / "ray", num_cpus=4)
        head.start()
        os.environ["RAY_ADDRESS"] = head.address
        results: dict[str, list[dict]] = {"local": [], "ray": []}
        try:
            for rep in range(args.repeats):  # alternate the order: neither side always gets the warm cache
                for executor in (("local", "ray") if rep % 2 == 0 else ("ray", "local")):
                    results[executor].append(run_one(bench, executor, Path(tmp) / f"worker-{executor}.log"))
                    print(executor, results[executor][-1], flush=True)
        finally:
            left = head.stop()
        med = {ex: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for ex, rows in results.items()}
        ratio = med["ray"]["succeeded"] / med["local"]["succeeded"]
        lines = [f"# The ray executor against the local one ({'tiny' if args.tiny else 'full'} configuration)", "",
                 f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}; a one-node Ray head on 127.0.0.1 "
                 f"(started in {head.started_seconds:.0f} s); SFT-Demo, {bench.steps} steps; median of "
                 f"{args.repeats} runs each, alternating; a fresh worker per run, no kernel started ahead.", "",
                 "| row | local | ray | ratio ray / local |", "|---|---|---|---|"]
        for key, label in (("running", "submit → running (claimed)"), ("first_cell", "submit → first cell runs"),
                           ("succeeded", "submit → succeeded")):
            lines.append(f"| {label} | {med['local'][key]:.2f} s | {med['ray'][key]:.2f} s | "
                         f"{med['ray'][key] / med['local'][key]:.2f} |")
        ray_log = (Path(tmp) / "worker-ray.log").read_text(errors="replace")
        pending = [float(x) for x in re.findall(r"running, ([0-9.]+) s after its submission", ray_log)]
        extra = med["ray"]["first_cell"] - med["local"]["first_cell"]
        pending_median = statistics.median(pending) if pending else float("nan")
        lines += ["", f"Overhead ratio (submit → succeeded): {ratio:.2f}. The ray executor reaches the first cell "
                      f"{extra:.1f} s later; Ray's own start of the job (submitted → RUNNING: its supervisor actor in "
                      f"a new worker process) is {pending_median:.1f} s of it (median), the rest the entrypoint's "
                      f"start under Ray's job supervisor. Ray processes left after stopping the head: {len(left)}.",
                  ""]
        text = "\n".join(lines)
    print(text)
    output = args.output or (None if args.tiny else str(HERE / "RESULTS-ray.md"))
    if output:
        Path(output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
