"""`deepe app`: the dashboard as a standalone Voila app on 127.0.0.1, behind a token."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import config


def app_notebook() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "voila_apps" / "dashboard.ipynb", here.parent / "voila_apps" / "dashboard.ipynb"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("voila_apps/dashboard.ipynb is missing from this installation")


def voila_command(port: int, token: str, notebook: Path | None = None) -> list[str]:
    """Voila serving `notebook` (default: the dashboard; a folder serves each notebook in it)."""
    return [sys.executable, "-m", "voila", str(notebook or app_notebook()), "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1", f"--token={token}",
            # a kernel per notebook is started and the notebook run before anyone asks: a visitor
            # gets a drawn page instead of waiting for a kernel start and the imports (~4 s here);
            # the widgets poll the database, so what they show is current once the page is open
            "--preheat_kernel=True", "--pool_size=1",
            # users see short messages in the widgets; tracebacks stay in the log
            "--VoilaConfiguration.show_tracebacks=False"]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `deepe app` (and of `python -m deepe_widgets.app`)."""
    parser.add_argument("--port", type=int, default=8866)
    parser.add_argument("--allow-method-admin", action="store_true",
                        help="let app users register and delete methods (that is: register code that runs)")
    parser.add_argument("--token", default=None, help="the access token (default: a new random one)")
    parser.add_argument("--no-browser", action="store_true", help="accepted for Jupyter habits; no browser is opened")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepe app", description="Serve the dashboard as a Voila app.")
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Start Voila on 127.0.0.1 and wait until it ends (Ctrl-C stops it)."""
    token = args.token or secrets.token_urlsafe(24)
    if not port_is_free(args.port):  # else we would greet whatever already listens there
        print(f"error: port {args.port} on 127.0.0.1 is in use; choose another with --port", file=sys.stderr)
        return 2
    env = dict(os.environ, DEEPE_HOME=str(config.deepe_home()),
               DEEPE_APP_METHOD_ADMIN="1" if args.allow_method_admin else "0")
    log_path = config.workspace_dir("logs") / f"app-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(voila_command(args.port, token), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=str(app_notebook().parent),
                                start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    if not wait_until_listening(args.port, proc):
        print(f"error: the app did not start; see {log_path}", file=sys.stderr)
        proc.terminate()
        return 2
    print(f"deepe app: http://127.0.0.1:{args.port}/?token={token}", flush=True)
    print(f"method admin: {'on' if args.allow_method_admin else 'off'}; log: {log_path}; Ctrl-C stops it", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return 0


if __name__ == "__main__":
    sys.exit(main())
