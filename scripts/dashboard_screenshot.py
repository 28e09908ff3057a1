"""Take docs/images/dashboard.png: `deepe app` on a throw-away workspace with two tiny trainings.

    PYTHONPATH=$PWD .venv/bin/python scripts/dashboard_screenshot.py [OUT.png]

Uses Debian's chromium through Playwright, as the browser tests do; stops the app, its kernels and
the worker it started before it exits.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TRAININGS = [("lr-5e-3", "0.005"), ("lr-2e-3", "0.002")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _deepe(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "deepe_widgets.cli", *args], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


def _tab(page, title: str) -> None:
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile(f"^{re.escape(title)}$")).first.click()


def main(out: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="deepe-shot-"))
    os.environ.update(DEEPE_HOME=str(home / "home"), DEEPE_WORKER_IDLE_EXIT="5")
    os.environ.pop("DEEPE_DB_URL", None)
    from playwright.sync_api import sync_playwright

    from deepe_widgets import demo_data, methods, models, store
    from deepe_widgets.processes import kill_process_tree
    from deepe_widgets.testing import make_tiny_model

    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()
    models.add_model("tiny-llama", make_tiny_model(home / "tiny-llama"))
    for name, learning_rate in TRAININGS:
        _deepe("train", "--method", "SFT-Demo", "--base-model", "tiny-llama", "--dataset", "demo-sft",
               "--name", name, "--param", "max_steps=24", "--param", "batch_size=4", "--param", "max_seq_length=64",
               "--param", f"learning_rate={learning_rate}", "--param", "save_steps=0", "--wait")
    port = _free_port()
    log = open(home / "app.log", "w")
    app = subprocess.Popen([sys.executable, "-m", "deepe_widgets.cli", "app", "--port", str(port)], stdout=log,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, DEEPE_APP_TOKEN="x"))
    try:
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if app.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"deepe app did not start; see {home / 'app.log'}")
            time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)
            page.goto(f"http://127.0.0.1:{port}/?token=x")
            page.get_by_text("Training Method Management").wait_for()
            _tab(page, "Trainings")
            page.get_by_role("button", name="Refresh").click()
            page.locator(".deepe-trainings .deepe-job-status", has_text="succeeded").first.wait_for()
            with store.session() as s:
                last = max(job.id for job in s.exec(store.select(store.Job)))
            page.locator(f"button[title^='job {last}:']").first.click()
            _tab(page, "Evaluation Data")
            page.locator(".bqplot path.line").first.wait_for()
            page.wait_for_timeout(1500)  # let the charts finish drawing
            out.parent.mkdir(parents=True, exist_ok=True)
            chart = page.locator(".bqplot").first.bounding_box()  # down to the first row of charts
            bottom = chart["y"] + chart["height"] + 12
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1400, "height": bottom})
            browser.close()
    finally:
        kill_process_tree(app.pid)
        log.close()
        with store.session() as s:
            for worker in s.exec(store.select(store.Worker)):
                kill_process_tree(worker.pid)
        store.dispose_engines()
        shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "dashboard.png")
