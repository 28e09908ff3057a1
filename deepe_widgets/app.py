"""`deepe app`: the dashboard as a standalone Voila app on 127.0.0.1, behind a token."""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import config, voila_server
from . import params as paramlib


def app_notebook() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "voila_apps" / "dashboard.ipynb", here.parent / "voila_apps" / "dashboard.ipynb"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("voila_apps/dashboard.ipynb is missing from this installation")


DEFAULT_POOL_SIZE = 2     # dashboards started ahead: two visits in a row both get a drawn page at once
DEFAULT_CULL_AFTER = 120  # seconds a page may be gone without saying so before its kernel is shut down


TOKEN_ENV = "DEEPE_APP_TOKEN"  # how the token reaches the server: never its command line, which `ps` shows


def voila_command(port: int, notebook: Path | None = None, pool_size: int = DEFAULT_POOL_SIZE,
                  cull_after: float = DEFAULT_CULL_AFTER, frontend: str = "deepe") -> list[str]:
    """Voila serving `notebook` (default: the dashboard; a folder serves each notebook in it).

    The access token goes in the server's environment as `DEEPE_APP_TOKEN` (see `voila_environment`):
    any local user can read a process's command line, only its owner its environment.

    Each visit gets its own kernel. `pool_size` kernels are started, with the notebook already run,
    before anyone asks (Voila's preheated kernels), so a visitor gets a drawn page instead of waiting
    for a kernel start and the imports; the widgets poll the database, so what they show is current.
    A page's kernel is shut down when the page is closed or reloaded (Voila's page-close beacon,
    which `AppIdentityProvider` lets through), and after `cull_after` seconds without the page
    (a crashed browser, a lost network: `AppKernelManager`).

    `frontend="deepe"` draws the page with our own front end (`voila_apps/frontend`, 0.9 MB of script)
    where it was built, else with Voila's JupyterLab one (`"lab"`, 5 MB)."""
    interval = max(1, min(30, int(cull_after / 2)))
    template = ["--template=deepe"] if frontend == "deepe" and voila_server.frontend_built() else []
    return [sys.executable, "-m", "deepe_widgets.voila_server", str(notebook or app_notebook()), *template,
            "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--preheat_kernel=True", f"--pool_size={pool_size}",
            "--Voila.identity_provider_class=deepe_widgets.app.AppIdentityProvider",
            "--VoilaConfiguration.multi_kernel_manager_class=deepe_widgets.app.AppKernelManager",
            f"--MappingKernelManager.cull_idle_timeout={cull_after:g}",
            f"--MappingKernelManager.cull_interval={interval}",
            # users see short messages in the widgets; tracebacks stay in the log
            "--VoilaConfiguration.show_tracebacks=False"]


def voila_environment(token: str, base: dict | None = None) -> dict:
    """The environment for `voila_command`'s server: `base` (default os.environ) plus the token."""
    return {**(os.environ if base is None else base), TOKEN_ENV: token}


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
    parser.add_argument("--port", type=paramlib.cli_port, default=8866)
    parser.add_argument("--allow-method-admin", action="store_true",
                        help="let app users register and delete methods (that is: register code that runs)")
    # A token on the command line is readable by every local user (`ps`): it comes from the environment.
    parser.add_argument("--token", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-browser", action="store_true", help="accepted for Jupyter habits; no browser is opened")
    parser.add_argument("--pool-size", type=paramlib.cli_int(0, 64), default=DEFAULT_POOL_SIZE, metavar="N",
                        help=f"dashboards kept started ahead for the next visitors (default {DEFAULT_POOL_SIZE})")
    parser.add_argument("--cull-after", type=paramlib.cli_seconds(), default=DEFAULT_CULL_AFTER, metavar="SECONDS",
                        help="shut a page's kernel down once the page has been gone this long "
                             f"(default {DEFAULT_CULL_AFTER}); a closed or reloaded page frees its kernel at once")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepe app", description="Serve the dashboard as a Voila app.")
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Start Voila on 127.0.0.1 and wait until it ends (Ctrl-C stops it)."""
    if args.token is not None:
        print(f"error: --token would show the token to every local user (ps); set it in the environment "
              f"instead: {TOKEN_ENV}=… deepe app", file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    if not port_is_free(args.port):  # else we would greet whatever already listens there
        print(f"error: port {args.port} on 127.0.0.1 is in use; choose another with --port", file=sys.stderr)
        return 2
    env = voila_environment(token, dict(os.environ, DEEPE_HOME=str(config.deepe_home()),
                                        DEEPE_APP_METHOD_ADMIN="1" if args.allow_method_admin else "0"))
    log_path = config.workspace_dir("logs") / f"app-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with open(log_path, "ab") as log:
        command = voila_command(args.port, pool_size=max(0, getattr(args, "pool_size", DEFAULT_POOL_SIZE)),
                                cull_after=max(1.0, getattr(args, "cull_after", DEFAULT_CULL_AFTER)))
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=str(app_notebook().parent),
                                start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    if not wait_until_listening(args.port, proc):
        print(f"error: the app did not start; see {log_path}", file=sys.stderr)
        proc.terminate()
        return 2
    print(f"deepe app: http://127.0.0.1:{args.port}/?token={token}", flush=True)
    print(f"method admin: {'on' if args.allow_method_admin else 'off'}; log: {log_path}; Ctrl-C stops it", flush=True)
    if not voila_server.frontend_built():
        print("page: Voila's JupyterLab front end (5 MB of script; ours is not built: "
              "cd voila_apps/frontend && npm ci && npm run build)", flush=True)
    print(f"kernels: {getattr(args, 'pool_size', DEFAULT_POOL_SIZE)} started ahead; a page's kernel stops when the "
          f"page closes, or {getattr(args, 'cull_after', DEFAULT_CULL_AFTER):g} s after it went away", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return 0


if __name__ == "__main__":
    sys.exit(main())


# --- the Voila server's own pieces -----------------------------------------------------------------
# Voila imports them by name (`--Voila.identity_provider_class=deepe_widgets.app.AppIdentityProvider`);
# they are built on first access, since jupyter_server takes seconds to import and `deepe` needs none
# of it.

_SERVER_CLASSES = ("AppKernelManager", "AppIdentityProvider", "TokenNeededHandler")

TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deepe-widgets: this link needs its access token</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42em;margin:3em auto;padding:0 1em;color:#1f2328;
line-height:1.5}} code{{background:#f6f8fa;padding:1px 4px;border-radius:4px}} .why{{color:#9a6700}}
input{{font:inherit;padding:4px 6px;width:22em}} button{{font:inherit;padding:4px 12px}}</style></head>
<body><h1 class="deepe-token-page">This link needs its access token</h1>
{why}
<p>The fine-tuning dashboard opens from the link <code>deepe app</code> printed when it started, for example
<code>http://127.0.0.1:8866/?token=…</code>. Open that whole link, token included. Each start of the app makes a
new token, unless it was started with <code>--token</code>.</p>
<form method="get" action="{action}"><label>Or paste the token here: <input name="token" autocomplete="off"
autofocus></label> <button type="submit">Open the dashboard</button></form></body></html>
"""


def __getattr__(name: str):
    if name in _SERVER_CLASSES:
        return _server_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _server_classes() -> dict:
    import html
    from urllib.parse import parse_qs, urlparse

    import tornado.web
    from jupyter_core.utils import ensure_async
    from jupyter_server.auth.identity import PasswordIdentityProvider
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    class AppKernelManager(AsyncMappingKernelManager):
        """Shuts a page's kernel down once the page has been gone (no websocket) for
        `cull_idle_timeout` seconds, whatever the kernel does meanwhile: a live view of a running
        training keeps a kernel "active", yet no Voila page ever comes back to the kernel of a
        page that went away. A kernel no page has reached yet (its page may still be loading) gets
        `PAGE_LOAD_GRACE` seconds more; one running a cell (drawing the dashboard) is left alone.
        Kernels with a page open follow the usual rule (`cull_connected`). Voila wraps this class
        with its pool, whose kernels (no page yet) are never culled."""

        PAGE_LOAD_GRACE = 60.0

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._page_gone_since: dict[str, float] = {}
            self._had_page: set[str] = set()

        async def start_kernel(self, *args, env=None, **kwargs):
            # Voila hands a page's kernel the page's URL, token included; the dashboard reads neither
            if env is not None:
                env = {k: v for k, v in env.items() if k not in config.WEB_REQUEST_VARIABLES}
            return await super().start_kernel(*args, env=env, **kwargs)

        def notify_connect(self, kernel_id):
            self._had_page.add(kernel_id)
            super().notify_connect(kernel_id)

        async def cull_kernels(self):
            for gone in set(self._page_gone_since) - set(self._kernels):
                del self._page_gone_since[gone]
            self._had_page &= set(self._kernels)
            await super().cull_kernels()

        async def cull_kernel_if_idle(self, kernel_id):
            kernel = self._kernels[kernel_id]
            if self._kernel_connections.get(kernel_id, 0) or getattr(kernel, "execution_state", None) == "busy":
                self._page_gone_since.pop(kernel_id, None)
                return await super().cull_kernel_if_idle(kernel_id)
            since = self._page_gone_since.setdefault(kernel_id, time.monotonic())
            limit = self.cull_idle_timeout + (0 if kernel_id in self._had_page else self.PAGE_LOAD_GRACE)
            if time.monotonic() - since >= limit:
                self.log.info("Shutting down kernel %s: its page has been gone for %.0f s", kernel_id,
                              time.monotonic() - since)
                self._page_gone_since.pop(kernel_id, None)
                await ensure_async(self.shutdown_kernel(kernel_id))

    class TokenNeededHandler(tornado.web.RequestHandler):
        """Our page for a visit without a valid token (instead of Jupyter's login page, which
        speaks of `jupyter server list` and passwords)."""

        def get(self):
            base = self.settings.get("base_url", "/")
            nxt = self.get_argument("next", base)
            tried = "token" in parse_qs(urlparse(nxt).query)
            why = ("<p class='why'>The token in that link is not this app's: it may come from an earlier start "
                   "of <code>deepe app</code>.</p>") if tried else ""
            self.set_status(401)
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(TOKEN_PAGE.format(why=why, action=html.escape(base, quote=True)))

    class AppIdentityProvider(PasswordIdentityProvider):
        """Token auth as Voila's, plus: an authenticated page gets the `_xsrf` cookie, which Voila's
        page-close beacon (`POST /voila/api/shutdown/<kernel>`) must carry; without it the server
        answers 403 and the page's kernel runs on. A visit without the token gets `TokenNeededHandler`."""

        async def _get_user(self, handler):
            user = await super()._get_user(handler)
            request = handler.request
            if user is not None and request.method == "GET" and "upgrade" not in request.headers.get(
                    "Connection", "").lower():
                handler.current_user = user  # what jupyter_server's prepare() sets next; xsrf_token reads it
                handler.xsrf_token  # noqa: B018 (reading it sets the cookie)
            return user

        def get_handlers(self):
            handlers = [(path, handler) for path, handler in super().get_handlers() if path != r"/login"]
            return [(r"/login", TokenNeededHandler), *handlers]

    return {"AppKernelManager": AppKernelManager, "AppIdentityProvider": AppIdentityProvider,
            "TokenNeededHandler": TokenNeededHandler}
