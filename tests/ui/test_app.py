"""`deepe app` without a browser: the URL with its token, the server log, a port already taken."""

import socket
import time
import urllib.request

from deepe_widgets import app


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


def test_app_refuses_a_port_in_use(workspace, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert app.main(["--port", str(taken.getsockname()[1]), "--no-browser"]) == 2
    assert "in use" in capsys.readouterr().err
