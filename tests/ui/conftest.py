"""Browser fixtures: `deepe app` served on 127.0.0.1 for a workspace, and Debian's chromium."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class App:
    """`deepe app` in a subprocess (output to a file); stopped with its whole process tree."""

    def __init__(self, home: Path, admin: bool, options: list[str] = ()):
        self.port, self.token = _free_port(), "test-token-" + os.urandom(4).hex()
        args = ["app", "--port", str(self.port), *options] + (["--allow-method-admin"] if admin else [])
        self.log = open(home.parent / f"app-{self.port}.out", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "deepe_widgets.cli", *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, DEEPE_APP_TOKEN=self.token))
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            assert self.proc.poll() is None and time.monotonic() < deadline, "deepe app did not start"
            time.sleep(0.3)
        self.url = f"http://127.0.0.1:{self.port}/?token={self.token}"

    def kernels(self) -> list[psutil.Process]:
        """The kernels the app runs now: one per open page, plus its pool of started ones."""
        out = []
        for proc in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if "ipykernel_launcher" in " ".join(proc.cmdline()):
                    out.append(proc)
            except psutil.NoSuchProcess:
                pass
        return out

    def memory(self) -> int:
        """Resident memory of the app's server and kernels together, in bytes."""
        total = 0
        for proc in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        from deepe_widgets.processes import kill_process_tree

        kill_process_tree(self.proc.pid)
        self.log.close()


@pytest.fixture
def start_app(workspace):
    started = []

    def start(admin: bool = True, *options: str) -> App:
        app = App(workspace, admin, list(options))
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def serve_notebook(tmp_path):
    """`serve_notebook(path)`: Voila serving that notebook as `deepe app` serves the dashboard (our page
    template, no kernels started ahead); returns its URL. Stopped with its process tree after the test."""
    from deepe_widgets import app
    from deepe_widgets.processes import kill_process_tree

    servers = []

    def serve(notebook: Path) -> str:
        port = _free_port()
        with open(tmp_path / f"voila-{port}.log", "w") as log:
            servers.append(subprocess.Popen(app.voila_command(port, notebook, pool_size=0), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=str(notebook.parent), start_new_session=True,
                                            env=app.voila_environment("t")))
        assert app.wait_until_listening(port, servers[-1], 90), "voila did not start"
        return f"http://127.0.0.1:{port}/?token=t"

    yield serve
    for server in servers:
        kill_process_tree(server.pid)


@pytest.fixture(scope="module")  # Playwright's sync API holds a running loop: none is left for the next module
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    page.screenshot(path=str(ARTIFACTS / f"{name}-final.png"), full_page=True)
    context.close()
