"""First paint of the dashboard and of each of its tabs, against Voila's one-widget floor in the same run.

    .venv/bin/python -m benchmarks.first_paint [--visits 5] [--pool 5] [--pause 0]

Both apps are served the way `deepe app` serves the dashboard (`app.voila_command`: preheated kernels,
the same pool), on a fresh workspace; the floor with Voila's own JupyterLab front end, the dashboard
with ours (`--frontend lab`: Voila's, as before it had its own). Each visit is a new browser context
(nothing cached), timed from `page.goto` to the first tab's title (the floor: its one widget); then each
tab from its click to its content. The floor's visits come first, then the dashboard's after the pools
refilled, so each app's refills (a new kernel running its notebook) weigh on its own visits.
`--pause 0` makes the visits back-to-back (the pool refills while they run); a pause of ~15 s lets it
refill between visits.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TABS = (("Train", "text=Start a New Train"), ("Trainings", "text=No trainings yet"),
        ("Compare", "text=Tick two or more"), ("Models", "text=No Customized Models yet"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument("--pool", type=int, default=5, help="preheated kernels per app")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between visits (0: back-to-back)")
    parser.add_argument("--cached", action="store_true",
                        help="visits share one browser profile (its HTTP cache: Voila's 5 MB of scripts), as a "
                             "returning visitor's; default: each visit a new profile, nothing cached")
    parser.add_argument("--frontend", choices=("deepe", "lab"), default="deepe",
                        help="the dashboard's front end: ours (voila_apps/frontend, the default of `deepe app`) or "
                             "Voila's JupyterLab one, as the floor has")
    parser.add_argument("--settle", type=float, default=25.0, help="seconds for the pools to run their notebooks")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="deepe-paint-"))
    os.environ["DEEPE_HOME"] = str(home)
    os.environ.pop("DEEPE_DB_URL", None)

    import nbformat
    import psutil
    from playwright.sync_api import sync_playwright

    from deepe_widgets import app, demo_data, methods
    from deepe_widgets.processes import kill_process_tree

    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()
    floor = home / "floor.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ipywidgets\nipywidgets.HTML(\"<b class='floor'>one widget</b>\")")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, floor)

    def serve(notebook: Path, frontend: str):
        port = free_port()
        log = open(home / f"voila-{port}.log", "w")
        proc = subprocess.Popen(app.voila_command(port, notebook, pool_size=args.pool, frontend=frontend),
                                stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(notebook.parent),
                                env=app.voila_environment("bench", dict(os.environ, DEEPE_APP_METHOD_ADMIN="0")),
                                start_new_session=True)
        if not app.wait_until_listening(port, proc, 120):
            raise RuntimeError(f"voila did not start: {log.name}")
        return proc, f"http://127.0.0.1:{port}/?token=bench"

    def kernels(proc) -> int:
        return sum(1 for p in psutil.Process(proc.pid).children(recursive=True)
                   if "ipykernel_launcher" in " ".join(p.cmdline()))

    shared = {}

    def visit(browser, url: str, ready: str, tabs=()) -> dict:
        if args.cached and url not in shared:  # one untimed visit fills the cache
            shared[url] = browser.new_context(viewport={"width": 1400, "height": 1000})
            first = shared[url].new_page()
            first.goto(url)
            first.locator(ready).first.wait_for()
            first.close(run_before_unload=True)
            time.sleep(args.settle)
        context = shared.get(url) or browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        started = time.monotonic()
        page.goto(url)
        page.locator(ready).first.wait_for()
        row = {"first paint": time.monotonic() - started}
        for title, marker in tabs:
            started = time.monotonic()
            page.locator(".lm-TabBar-tabLabel", has_text=re.compile(f"^{re.escape(title)}$")).first.click()
            page.locator(marker).first.wait_for()
            row[f"tab {title}"] = time.monotonic() - started
        page.close(run_before_unload=True)
        if not args.cached:
            context.close()
        time.sleep(args.pause)
        return row

    results = {}
    floor_app, floor_url = serve(floor, "lab")  # Voila's own page: its JupyterLab front end
    dash_app, dash_url = serve(app.app_notebook(), args.frontend)
    try:
        deadline = time.monotonic() + 180
        while min(kernels(floor_app), kernels(dash_app)) < args.pool and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(args.settle)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            # one app after the other, each from full pools: a visit's kernel refill (the notebook run
            # again) is paid by that app's next visits, not by the other app's
            results["floor"] = [visit(browser, floor_url, ".floor") for _ in range(args.visits)]
            time.sleep(args.settle)
            results["dashboard"] = [visit(browser, dash_url, "text=Training Method Management", TABS)
                                    for _ in range(args.visits)]
            browser.close()
    finally:
        kill_process_tree(floor_app.pid)
        kill_process_tree(dash_app.pid)
    floor_median = statistics.median(r["first paint"] for r in results["floor"])
    print(f"{args.visits} visits ({'one browser profile, cached' if args.cached else 'each a new browser profile'}), "
          f"dashboard front end {args.frontend}, pool {args.pool}, pause {args.pause:g} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| what | median | max | ratio to floor |\n|---|---|---|---|")
    for name, rows in results.items():
        for key in rows[0]:
            values = [r[key] for r in rows]
            ratio = f"{statistics.median(values) / floor_median:.2f}" if key == "first paint" else ""
            print(f"| {name} {key} | {statistics.median(values):.2f} s | {max(values):.2f} s | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
