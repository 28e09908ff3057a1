"""`deepe app` without a browser: the URL with its token, the server log, a port already taken."""

import shutil
import socket
import time
import urllib.error
import urllib.request

from deepe_widgets import app, voila_server


def test_app_prints_a_token_url_and_logs_under_the_workspace(start_app, workspace):
    served = start_app(admin=False)
    out = served.log.name
    deadline = time.monotonic() + 30
    while "?token=" not in open(out).read():
        assert time.monotonic() < deadline, open(out).read()
        time.sleep(0.2)
    text = open(out).read()
    assert f"http://127.0.0.1:{served.port}/?token={served.token}" in text and "method admin: off" in text
    [log] = (workspace / "logs").glob("app-*.log")
    page = urllib.request.urlopen(served.url, timeout=60).read().decode()
    assert "<html" in page.lower()
    assert log.stat().st_size > 0  # the server's own output goes to the workspace's log, not the terminal


def test_a_visit_without_the_token_gets_a_page_that_says_what_to_do(start_app):
    served = start_app(admin=False)

    def fetch(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{served.port}{path}", timeout=60) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, page = fetch("/")  # redirected to the login URL: our page, not Jupyter's
    assert status == 401 and "This link needs its access token" in page and "deepe app" in page
    for jupyter_words in ("jupyter server list", "Setup a Password", "Password"):
        assert jupyter_words not in page
    status, page = fetch("/?token=an-old-one")
    assert status == 401 and "not this app's" in page
    status, page = fetch(f"/?token={served.token}")
    assert status == 200 and "This link needs" not in page


def test_the_token_is_on_no_command_line_and_guards_the_widget_bundles(start_app):
    import psutil

    served = start_app(admin=False)
    status, _ = _fetch(served, f"/?token={served.token}")  # a visit: the pool's kernels are up by now
    assert status == 200
    tree = [psutil.Process(served.proc.pid), *psutil.Process(served.proc.pid).children(recursive=True)]
    lines = [" ".join(proc.cmdline()) for proc in tree]
    assert any("deepe_widgets.voila_server" in line for line in lines) and any("ipykernel" in line for line in lines)
    assert not [line for line in lines if served.token in line]
    # nor in the environment of the kernels, which run other code
    kernels = [proc for proc in tree if "ipykernel" in " ".join(proc.cmdline())]
    assert not [(k, name) for k in kernels for name, value in k.environ().items() if served.token in value]
    bundle = "/deepe/nbextensions/bqplot/index.js"
    status, page = _fetch(served, bundle)
    assert status == 401 and "This link needs its access token" in page
    status, page = _fetch(served, f"{bundle}?token={served.token}")
    assert status == 200 and len(page) > 1000


def test_a_token_on_the_command_line_is_refused(workspace, capsys):
    from deepe_widgets import cli

    assert cli.main(["app", "--token", "visible-to-ps"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "DEEPE_APP_TOKEN" in err


def _fetch(served, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}{path}", timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_voila_is_told_to_free_kernels_and_keep_a_pool():
    command = " ".join(app.voila_command(8866, pool_size=3, cull_after=30))
    assert "--pool_size=3" in command and "--MappingKernelManager.cull_idle_timeout=30" in command
    assert "deepe_widgets.app.AppIdentityProvider" in command and "deepe_widgets.app.AppKernelManager" in command
    # the classes Voila imports by those names exist (built on first use: jupyter_server is slow to import)
    from jupyter_server.auth.identity import IdentityProvider
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    assert issubclass(app.AppIdentityProvider, IdentityProvider)
    assert issubclass(app.AppKernelManager, MappingKernelManager)


def test_the_app_draws_its_page_with_our_front_end_where_it_was_built():
    if shutil.which("npm"):  # scripts/setup.sh builds it where npm is
        assert voila_server.frontend_built()
    built = voila_server.frontend_built()
    assert ("--template=deepe" in app.voila_command(8866)) == built
    assert "--template=deepe" not in app.voila_command(8866, frontend="lab")  # Voila's own page


def test_app_refuses_a_port_in_use(workspace, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert app.main(["--port", str(taken.getsockname()[1]), "--no-browser"]) == 2
    assert "in use" in capsys.readouterr().err
