"""The Voila app in Debian's chromium, driven by Playwright, as a non-coder would use it."""

import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import jobs, methods, stagefiles

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.training


def shot(page, name: str) -> None:
    """A screenshot kept as a test artifact (test-artifacts/, shown in CI's workspace)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, title: str):
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile(f"^{re.escape(title)}$")).first.click()


def text_input(page, label: str):
    return page.locator(".widget-text", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$"))) \
        .locator("input").first


def dropdown(page, label: str):
    return page.locator(".widget-dropdown", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$"))) \
        .locator("select").first


def job_checkbox(page, job_id: int):
    row = page.locator(".widget-hbox").filter(
        has=page.locator(".widget-html-content", has_text=re.compile(f"^{job_id}$"))).last
    return row.locator("input[type=checkbox]").first


def loss_points(page) -> int:
    figure = page.locator(".bqplot").filter(has=page.locator("text.mainheading", has_text=re.compile("^loss$")))
    path = figure.locator("path.line").first
    if not figure.count() or not path.count():
        return 0
    return (path.get_attribute("d") or "").count("L") + 1


def slow_method(tmp_path, seconds_per_step: float = 0.6) -> str:
    """The template's example with a callback that makes each step slow enough to watch."""
    template = nbformat.read(stagefiles.template_notebook_path(), as_version=4)
    user = next(c for c in template.cells if stagefiles.USER_TAG in c.metadata.get("tags", []))
    code = user.source.split(stagefiles.BEGIN_MARKER)[1].split(stagefiles.END_MARKER)[0]
    code = ("import time\nfrom transformers import TrainerCallback\nclass SlowSteps(TrainerCallback):\n"
            f"    def on_step_end(self, *a, **k):\n        time.sleep({seconds_per_step})\n"
            + code.replace("callbacks=[callback]", "callbacks=[callback, SlowSteps()]"))
    path = tmp_path / "slow.ipynb"
    nbformat.write(stagefiles.notebook_with_user_code(code), path)
    methods.register_method("Slow-SFT", {"training": (path, "python3")}, description="template, slowed down")
    return "Slow-SFT"


def test_admin_adds_and_deletes_a_method(start_app, page, tmp_path):
    notebook = tmp_path / "mine.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    app = start_app(admin=True)
    page.goto(app.url)
    page.get_by_role("button", name="Add New Method").click()
    text_input(page, "Training Name *").fill("browser-method")
    text_input(page, "Description").count()  # textarea, optional
    files = page.locator(".widget-hbox", has=page.locator(".widget-label", has_text=re.compile("^training \\*$")))
    files.locator("input[type=text]").first.fill(str(notebook))
    page.get_by_role("button", name="Save Method").click()
    page.locator(".deepe-ok", has_text="method browser-method registered").wait_for()
    shot(page, "methods-added")
    assert "browser-method" in [m.name for m in methods.list_methods()]
    row = page.locator(".widget-hbox").filter(
        has=page.locator(".widget-html-content", has_text=re.compile("^browser-method$"))).last
    row.get_by_role("button", name="Delete").click()
    page.locator(".deepe-warn", has_text="Delete method browser-method?").wait_for()
    row.get_by_role("button", name="Yes, delete").click()
    page.locator(".deepe-ok", has_text="method browser-method deleted").wait_for()
    assert "browser-method" not in [m.name for m in methods.list_methods()]


def test_non_admin_app_offers_no_method_admin_and_needs_its_token(start_app, page, workspace):
    app = start_app(admin=False)
    page.goto(app.url)
    page.get_by_text("Training Method Management").wait_for()
    page.get_by_text("SFT-Demo").first.wait_for()
    assert page.get_by_role("button", name="Add New Method").count() == 0
    assert page.get_by_role("button", name="Delete").count() == 0
    shot(page, "methods-readonly")
    opener = urllib.request.build_opener(_NoRedirect)
    status = _status(opener, urllib.request.Request(f"http://127.0.0.1:{app.port}/"))
    assert status in (302, 401, 403)  # no token: the login page, never the app
    for secret in (workspace / "deepe.db", workspace / "runs"):
        url = f"http://127.0.0.1:{app.port}/voila/files/{secret}?token={app.token}"
        assert _status(opener, urllib.request.Request(url)) in (403, 404)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(opener, request) -> int:
    try:
        return opener.open(request, timeout=30).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_train_watch_copy_and_compare(start_app, page, tmp_path):
    method = slow_method(tmp_path)
    app = start_app(admin=False)
    page.goto(app.url)
    tab(page, "Train")
    dropdown(page, "Training Method").select_option(method)
    dropdown(page, "Base Model").select_option("tiny")
    dropdown(page, "Dataset").select_option("demo-sft")
    page.get_by_text("CAPITAL CARD").first.wait_for()  # the dataset preview
    for label, value in (("Max Steps (-1: use epochs)", "24"), ("Max Tokens", "64"), ("Batch Size", "4"),
                         ("Learning Rate", "0.005"), ("Save Frequency (steps)", "0")):
        text_input(page, label).fill(value)
        text_input(page, label).press("Enter")
    page.get_by_role("button", name="Run the Train").click()
    page.locator(".deepe-ok", has_text="queued").wait_for()
    shot(page, "train-submitted")
    [first] = jobs.list_jobs()
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    job_checkbox(page, first.id).check()
    page.get_by_role("button", name="View Details").click()
    tab(page, "Evaluation Data")
    # The chart gains points while the job runs.
    deadline = time.monotonic() + 120
    while loss_points(page) < 2:
        assert time.monotonic() < deadline, "the loss chart never appeared"
        page.wait_for_timeout(300)
    early = loss_points(page)
    assert jobs.get_job(first.id).status == "running"
    while loss_points(page) <= early:
        assert time.monotonic() < deadline, "the loss chart stopped gaining points"
        page.wait_for_timeout(300)
    shot(page, "evaluation-data-live")
    assert jobs.wait_for(first.id, timeout=120).status == "succeeded"
    page.wait_for_timeout(1500)
    assert loss_points(page) == 24
    tab(page, "Train Log")
    page.locator(".deepe-log", has_text="training started").wait_for()
    page.locator(".deepe-log", has_text="saved to").wait_for()
    shot(page, "train-log")
    # Copy the Train, change the learning rate, run the copy.
    tab(page, "Train Overview")
    page.locator("code", has_text="training.ipynb").first.wait_for()  # the record (Voila shows its path only)
    shot(page, "train-overview")
    page.get_by_role("button", name="Copy the Train").click()
    page.locator(".deepe-info", has_text=f"copied from job {first.id}").wait_for()
    assert text_input(page, "Learning Rate").input_value() == "0.005"
    text_input(page, "Learning Rate").fill("0.001")
    text_input(page, "Learning Rate").press("Enter")
    page.get_by_role("button", name="Run the Train").click()
    page.locator(".deepe-ok", has_text="queued").wait_for()
    second = jobs.list_jobs()[0]
    assert second.id != first.id and second.params["LEARNING_RATE"] == 0.001
    assert second.params["MAX_STEPS"] == 24 and second.copied_from == first.id
    assert jobs.wait_for(second.id, timeout=180).status == "succeeded"
    # Compare the two.
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    job_checkbox(page, first.id).check()
    job_checkbox(page, second.id).check()
    page.get_by_role("button", name="Compare").click()
    page.get_by_text(f"Compare trainings {first.id}, {second.id}").wait_for()
    page.locator(".bqplot text.legendtext", has_text=f"job {second.id}").first.wait_for()
    assert page.get_by_text("LEARNING_RATE").count() >= 1
    shot(page, "compare")
