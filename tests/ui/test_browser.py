"""The Voila app in Debian's chromium, driven by Playwright, as a non-coder would use it."""

import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import jobs, methods, models, stagefiles
from deepe_widgets.store import Job
from deepe_widgets.store import session as store_session

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
    return page.locator(f"input[type=checkbox][title^='tick job {job_id} ']").first


def view_details(page, job_id: int) -> None:
    """The row's own "View Details"."""
    page.locator(f"button[title^='job {job_id}:']").first.click()


def loss_points(page) -> int:
    figure = page.locator(".bqplot").filter(has=page.locator("text.mainheading", has_text=re.compile("^Loss$")))
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


def open_dashboard(page, url: str) -> float:
    """Visit the app; seconds until the dashboard is drawn (its first tab's title shows)."""
    started = time.monotonic()
    page.goto(url)
    page.get_by_text("Training Method Management").wait_for()
    return time.monotonic() - started


def wait_for_kernels(app, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while len(app.kernels()) != count and time.monotonic() < deadline:
        time.sleep(0.25)
    return len(app.kernels())


def steady_memory(app, timeout: float = 60) -> int:
    """The app's memory once its kernels have settled (no longer importing or drawing): two
    readings a second apart within 2 %."""
    deadline, before = time.monotonic() + timeout, app.memory()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = app.memory()
        if abs(now - before) < 0.02 * before:
            return now
        before = now
    return before


def test_thirty_visits_leave_only_the_pool_and_the_open_pages(start_app, browser):
    pool, cull_after = 2, 4
    app = start_app(False, "--pool-size", str(pool), "--cull-after", str(cull_after))
    assert wait_for_kernels(app, pool, 90) == pool  # the pool is started before anyone visits
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    open_pages, first_paint = [], []
    warm_up = context.new_page()
    open_dashboard(warm_up, app.url)
    warm_up.close(run_before_unload=True)
    assert wait_for_kernels(app, pool, 60) == pool
    idle_memory = steady_memory(app)
    for visit in range(30):
        page = context.new_page()
        first_paint.append(open_dashboard(page, app.url))
        kind = visit % 5
        if kind in (0, 1):  # a tab left open; the oldest of three is closed
            open_pages.append(page)
            if len(open_pages) > 2:
                open_pages.pop(0).close(run_before_unload=True)
        elif kind == 2:  # reloaded, then closed
            page.reload()
            page.get_by_text("Training Method Management").wait_for()
            page.close(run_before_unload=True)
        elif kind == 3:  # a tab closed
            page.close(run_before_unload=True)
        else:  # a browser that never says goodbye (a crash, a lost network): the culler frees it
            page.close(run_before_unload=False)
    shot(open_pages[-1], "dashboard-after-30-visits")
    left = wait_for_kernels(app, pool + len(open_pages), cull_after + 20)
    assert left == pool + len(open_pages), f"{left} kernels for {len(open_pages)} open pages and a pool of {pool}"
    for page in open_pages:
        page.close(run_before_unload=True)
    assert wait_for_kernels(app, pool, 30) == pool
    busy_memory = steady_memory(app)
    print(f"first paint: median {sorted(first_paint)[15]:.2f} s, max {max(first_paint):.2f} s; "
          f"memory {idle_memory / 2**20:.0f} MiB before, {busy_memory / 2**20:.0f} MiB after 30 visits")
    assert busy_memory < idle_memory * 1.2, (idle_memory, busy_memory)  # flat: nothing piles up per visit
    context.close()


def test_admin_adds_and_deletes_a_method(start_app, page, tmp_path):
    notebook = tmp_path / "mine.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    app = start_app(admin=True)
    page.goto(app.url)
    page.get_by_role("button", name="Add New Method").click()
    save = page.get_by_role("button", name="Save Method")
    assert save.is_disabled()  # nothing to save yet, and it says what is needed
    page.get_by_text("Still needed: Training Name, training code file").wait_for()
    text_input(page, "Training Name *").fill("SFT-Demo")
    page.locator(".deepe-field-error", has_text="already exists").wait_for()  # as typed, not after Save
    text_input(page, "Training Name *").fill("browser-method")
    page.locator(".deepe-field-error", has_text="already exists").wait_for(state="detached")
    files = page.locator(".widget-hbox", has=page.locator(".widget-label", has_text=re.compile("^training \\*$")))
    files.locator("input[type=text]").first.fill(str(tmp_path / "missing.ipynb"))
    page.locator(".deepe-field-error", has_text="There is no file at").wait_for()
    shot(page, "method-form-errors")
    files.locator("input[type=text]").first.fill(str(notebook))
    page.locator(".deepe-field-error").first.wait_for(state="detached")
    save.click()
    page.locator(".deepe-ok", has_text="method browser-method registered").wait_for()
    shot(page, "methods-added")
    assert "browser-method" in [m.name for m in methods.list_methods()]
    page.locator("button[title='delete method browser-method']").click()
    page.locator(".deepe-question", has_text="Delete method browser-method?").wait_for()
    assert "browser-method" in [m.name for m in methods.list_methods()]  # asked, not done
    shot(page, "method-delete-asks")
    page.get_by_role("button", name="Yes, delete").click()
    page.locator(".deepe-ok", has_text="method browser-method deleted").wait_for()
    assert "browser-method" not in [m.name for m in methods.list_methods()]
    assert page.locator(".deepe-field-error").count() == 0  # no stale "already exists" beside "deleted"


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
    assert status in (302, 401, 403)  # no token: our page, never the app
    for secret in (workspace / "deepe.db", workspace / "runs"):
        url = f"http://127.0.0.1:{app.port}/voila/files/{secret}?token={app.token}"
        assert _status(opener, urllib.request.Request(url)) in (403, 404)
    # a visitor without the token: our page, in words, not Jupyter's login page
    other = page.context.browser.new_context()
    visitor = other.new_page()
    visitor.goto(f"http://127.0.0.1:{app.port}/")
    visitor.get_by_text("This link needs its access token").wait_for()
    text = visitor.locator("body").inner_text()
    assert "deepe app" in text and "jupyter server list" not in text and "Password" not in text
    shot(visitor, "token-page")
    visitor.goto(f"http://127.0.0.1:{app.port}/?token=an-old-token")
    visitor.get_by_text("not this app's").wait_for()
    visitor.locator("input[name=token]").fill(app.token)  # pasting the right one opens the dashboard
    visitor.get_by_role("button", name="Open the dashboard").click()
    visitor.get_by_text("Training Method Management").wait_for()
    other.close()


def test_the_page_is_drawn_by_our_front_end_and_loads_bqplot_only_for_a_chart(start_app, page):
    """The dashboard's page loads one script of ours (voila_apps/frontend), not Voila's JupyterLab
    bundle (5 MB in ~80 files), and bqplot's bundle only once a chart is drawn."""
    app = start_app(admin=False)
    page.goto(app.url)
    page.get_by_text("SFT-Demo").first.wait_for()
    tab(page, "Train")
    page.get_by_text("Start a New Train").wait_for()
    scripts = page.evaluate("performance.getEntriesByType('resource').filter(e => e.initiatorType === 'script')"
                            ".map(e => [new URL(e.name).pathname, e.decodedBodySize])")
    paths = [path for path, _ in scripts]
    assert "/voila/templates/deepe/static/app.js" in paths, paths
    assert not [p for p in paths if p.startswith("/voila/static/") or "/labextensions/" in p], paths
    assert not [p for p in paths if "nbextensions" in p], "bqplot loaded before any chart was drawn"
    assert sum(size for _, size in scripts) < 1_500_000
    # Font Awesome icons (the Run button's) come with our stylesheet
    icon = page.locator("button i.fa-play").first
    assert "FontAwesome" in icon.evaluate("i => getComputedStyle(i, '::before').fontFamily")
    shot(page, "our-front-end-train")
    # what a chart loads: bqplot's own classic-notebook bundle, as installed (test_train_watch_copy_and_compare
    # sees the curves it draws)
    # (the page's browser has the login cookie; a plain client needs the token, as for every page)
    bundle = f"http://127.0.0.1:{app.port}/deepe/nbextensions/bqplot/index.js?token={app.token}"
    with urllib.request.urlopen(bundle, timeout=30) as r:
        assert b'define(["@jupyter-widgets/base"]' in r.read(400)  # an AMD module needing only base


def test_our_page_draws_any_notebook_output_and_survives_a_widget_library_that_is_missing(serve_notebook, page,
                                                                                           tmp_path):
    """The page template with another notebook: a widget from a library that is not installed gets
    its error in place, and the outputs after it (a widget, a picture, printed words) are drawn."""
    cells = ["""import ipywidgets, traitlets
class Missing(ipywidgets.DOMWidget):
    _model_module = _view_module = traitlets.Unicode("no-such-widget-library").tag(sync=True)
    _model_name = traitlets.Unicode("MissingModel").tag(sync=True)
    _view_name = traitlets.Unicode("MissingView").tag(sync=True)
Missing()""", "ipywidgets.HTML(\"<b class='fine'>still drawn</b>\")",
             "import io\nfrom PIL import Image\nfrom IPython.display import Image as Picture\nbuf = io.BytesIO()\n"
             "Image.new('RGB', (8, 8), 'teal').save(buf, 'PNG')\nPicture(data=buf.getvalue())",
             "print('plain words')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "other.ipynb")
    page.goto(serve_notebook(tmp_path / "other.ipynb"))
    page.locator("b.fine", has_text="still drawn").wait_for()
    page.locator("img[src^='data:image/png;base64,']").wait_for()
    page.get_by_text("plain words").wait_for()
    page.get_by_text("Click to show javascript error.").click()  # ipywidgets' own error widget, in place
    page.get_by_text("no-such-widget-library").first.wait_for()
    assert page.locator("#loading").count() == 0
    shot(page, "our-page-other-outputs")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(opener, request) -> int:
    try:
        return opener.open(request, timeout=30).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_form_guides_and_the_trainings_table_holds_at_800px(start_app, browser):
    app = start_app(False, "--pool-size", "1")
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    open_dashboard(page, app.url)
    tab(page, "Train")
    # filled in: a first visitor can run at once
    assert dropdown(page, "Training Method").input_value() == "SFT-Demo"
    assert dropdown(page, "Base Model").input_value() == "SmolLM2-135M-Instruct"
    assert dropdown(page, "Dataset").input_value() == "demo-sft"
    page.get_by_text("CAPITAL CARD").first.wait_for()
    assert "…" in page.locator(".deepe-table").first.inner_text()  # a cut cell says so
    run = page.get_by_role("button", name="Run the Train")
    assert run.is_enabled()
    text_input(page, "Batch Size").fill("zero")
    text_input(page, "Learning Rate").fill("5")
    # every error at once, as typed, under its field, in its label's words; Run waits
    page.locator(".deepe-field-error", has_text="Batch Size must be a whole number").wait_for()
    page.locator(".deepe-field-error", has_text="Learning Rate must be between 0 and 1").wait_for()
    assert run.is_disabled() and page.get_by_text("BATCH_SIZE").count() == 0
    shot(page, "train-form-errors")
    text_input(page, "Batch Size").fill("4")
    page.locator(".deepe-field-error", has_text="Batch Size must").wait_for(state="detached")
    text_input(page, "Learning Rate").fill("0.0002")
    page.locator(".deepe-field-error").first.wait_for(state="detached")
    assert run.is_enabled()
    # Trainings: 30 queued jobs (no worker here), a real table at 800 px
    queued = [jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name=f"run-{i:02d}") for i in range(30)]
    with store_session() as s:  # a start time in the top row: the Started column shows it whole
        row = s.get(Job, queued[-1].id)
        row.started_at = time.time()
        s.add(row)
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("trainings 1–25 of 30").wait_for()
    heads = page.locator(".deepe-trainings .deepe-head")
    cells = page.locator(".deepe-trainings .deepe-cell:not(.deepe-head)")
    columns = heads.count()
    assert columns == 10 and cells.count() == 25 * columns
    head_x = [round(heads.nth(i).bounding_box()["x"]) for i in range(columns)]
    for row in (0, 7, 24):
        row_x = [round(cells.nth(row * columns + i).bounding_box()["x"]) for i in range(columns)]
        assert row_x == head_x, (row, head_x, row_x)
    scroller = page.locator(".deepe-trainings").first
    assert scroller.evaluate("b => b.scrollWidth <= b.clientWidth + 1")  # no sideways scrolling at 800 px
    started = cells.nth(6).locator(".widget-html-content")  # the top row's Started: "12-02 01:25", not cut
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d", started.inner_text())
    assert started.evaluate("c => c.scrollWidth <= c.clientWidth")
    shot(page, "trainings-800px")
    # View Details on a low row: the details open in sight, not below 25 rows
    view_details(page, queued[8].id)
    header = page.locator("h3", has_text="run-08").first
    header.wait_for()
    box = header.bounding_box()
    assert 0 <= box["y"] and box["y"] + box["height"] <= 900, box
    page.get_by_text("Queued: waiting for a worker").first.wait_for()
    shot(page, "details-in-sight")
    # Cancel: says what it needs, then asks first
    page.get_by_role("button", name="Cancel…").click()
    page.get_by_text("Tick the trainings to cancel first").wait_for()
    job_checkbox(page, queued[-1].id).check()
    page.get_by_role("button", name="Cancel…").click()
    page.locator(".deepe-question", has_text="Cancel this training (run-29)?").wait_for()
    assert jobs.get_job(queued[-1].id).status == "queued"
    shot(page, "cancel-asks")
    page.get_by_role("button", name="Yes, cancel it").click()
    page.locator(".deepe-ok", has_text="run-29 cancelled").wait_for()
    assert jobs.get_job(queued[-1].id).status == "cancelled"
    context.close()


def test_train_watch_copy_and_compare(start_app, page, tmp_path):
    method = slow_method(tmp_path)
    app = start_app(admin=False)
    page.goto(app.url)
    tab(page, "Train")
    before = text_input(page, "Max Steps (-1: use epochs)").get_attribute("id")
    dropdown(page, "Training Method").select_option(method)
    # the fields of this method replace SFT-Demo's: fill those, not the ones on their way out
    page.wait_for_function("""old => [...document.querySelectorAll('.widget-text label')]
        .some(l => l.textContent === 'Max Steps (-1: use epochs)' && l.htmlFor && l.htmlFor !== old)""", arg=before)
    page.wait_for_timeout(300)
    dropdown(page, "Base Model").select_option("tiny")
    dropdown(page, "Dataset").select_option("demo-sft")
    page.get_by_text("CAPITAL CARD").first.wait_for()  # the dataset preview
    for label, value in (("Max Steps (-1: use epochs)", "24"), ("Max Tokens", "64"), ("Batch Size", "4"),
                         ("Learning Rate", "0.005"), ("Save Frequency (steps)", "0")):
        text_input(page, label).fill(value)
        text_input(page, label).press("Enter")
    page.get_by_role("button", name="Run the Train").click()
    page.locator(".deepe-ok", has_text="is queued").wait_for()
    shot(page, "train-submitted")
    [first] = jobs.list_jobs()
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    view_details(page, first.id)
    # before its first step the job says it is starting (the kernel loads model and data)
    page.get_by_text("Starting… the stage kernel is loading").first.wait_for()
    shot(page, "details-starting")
    tab(page, "Evaluation Data")
    # The chart gains points while the job runs; loss is the first chart.
    deadline = time.monotonic() + 120
    while loss_points(page) < 2:
        assert time.monotonic() < deadline, "the loss chart never appeared"
        page.wait_for_timeout(300)
    titles = page.locator(".bqplot text.mainheading").all_text_contents()
    assert titles[0] == "Loss", titles
    early = loss_points(page)
    assert jobs.get_job(first.id).status == "running"
    while loss_points(page) <= early:
        assert time.monotonic() < deadline, "the loss chart stopped gaining points"
        page.wait_for_timeout(300)
    shot(page, "evaluation-data-live")
    # The log follows its tail while lines arrive
    tab(page, "Train Log")
    page.locator(".deepe-log", has_text="training started").first.wait_for()
    box = page.locator(".deepe-log-box").first
    lines_before = box.inner_text().count("\n")
    page.wait_for_timeout(2500)
    assert box.inner_text().count("\n") > lines_before  # it grew …
    assert abs(box.evaluate("b => b.scrollTop")) < 2  # … and the newest line is what shows
    assert "Kernel is running over TCP" not in box.inner_text()  # kernel chatter kept aside
    shot(page, "train-log-live")
    # The record, while the run runs
    tab(page, "Record")
    page.locator(".deepe-record .cell").first.wait_for()
    assert page.locator(".deepe-record script").count() == 0
    page.locator("a.deepe-download").wait_for()
    shot(page, "record-live")
    assert jobs.wait_for(first.id, timeout=120).status == "succeeded"
    # the list above follows by itself (no Refresh click)
    page.locator(".deepe-trainings .deepe-job-status", has_text="succeeded").first.wait_for(timeout=15_000)
    tab(page, "Evaluation Data")
    deadline = time.monotonic() + 10
    while loss_points(page) != 24 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert loss_points(page) == 24
    tab(page, "Train Log")
    page.locator(".deepe-log", has_text="saved to").first.wait_for()
    page.get_by_text("library and kernel line").first.wait_for()
    page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="errors")).first \
        .select_option(label="errors")
    page.get_by_text("No errors in this log").wait_for()  # an empty filter says so
    shot(page, "train-log")
    # Copy the Train, change the learning rate, run the copy.
    tab(page, "Train Overview")
    page.locator(".deepe-table td", has_text="Learning Rate").first.wait_for()
    assert page.locator(".deepe-table", has_text="LEARNING_RATE").count() == 0
    copy_box = page.get_by_role("button", name="Copy the Train").bounding_box()
    rerun_box = page.get_by_role("button", name="Re-run").bounding_box()  # beside it, same row
    assert abs(copy_box["y"] - rerun_box["y"]) < 4 and rerun_box["x"] > copy_box["x"]
    page.get_by_role("button", name="Re-run").scroll_into_view_if_needed()
    shot(page, "train-overview")
    page.get_by_role("button", name="Copy the Train").click()
    page.locator(".deepe-info", has_text=f"Copied from job {first.id}").wait_for()
    assert text_input(page, "Learning Rate").input_value() == "0.005"
    text_input(page, "Learning Rate").fill("0.001")
    text_input(page, "Learning Rate").press("Enter")
    page.get_by_role("button", name="Run the Train").click()
    page.locator(".deepe-ok", has_text="is queued").wait_for()
    second = jobs.list_jobs()[0]
    assert second.id != first.id and second.params["LEARNING_RATE"] == 0.001
    assert second.params["MAX_STEPS"] == 24 and second.copied_from == first.id
    assert jobs.wait_for(second.id, timeout=180).status == "succeeded"
    # Compare the two: run names, one legend above the charts, best in each metric's direction
    tab(page, "Trainings")
    page.get_by_role("button", name="Refresh").click()
    job_checkbox(page, first.id).check()
    job_checkbox(page, second.id).check()
    page.get_by_role("button", name="Compare").click()
    page.get_by_text(f"Compare {first.name}, {second.name}").wait_for()
    legend = page.locator(".deepe-legend", has_text=second.name).first  # the compare view's, not a hidden one
    legend.wait_for()
    assert first.name in legend.inner_text() and second.name in legend.inner_text()
    assert page.locator(".bqplot .legend").count() == 0 or not page.locator(".bqplot .legend").first.is_visible()
    charts = legend.locator("xpath=following::div[contains(@class, 'bqplot')][1]").bounding_box()
    assert legend.bounding_box()["y"] + legend.bounding_box()["height"] <= charts["y"] + 1  # outside, above
    config = page.locator(".deepe-table", has_text="parameter").last.inner_text()
    assert "Learning Rate" in config and "LEARNING_RATE" not in config
    summary = page.locator(".deepe-table", has_text="final / best").inner_text()
    assert "Learning rate (no best)" in summary and "Loss (lowest)" in summary
    shot(page, "compare")


def test_models_tab_tries_saves_and_deletes(start_app, page, workspace):
    from deepe_widgets import worker

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="capitals",
                               params={"max_steps": 6, "batch_size": 4, "learning_rate": 5e-3,
                                       "max_seq_length": 64, "save_steps": 0})
    worker.ensure_worker()
    app = start_app(admin=True)  # deleting a model is an admin action
    page.goto(app.url)
    assert jobs.wait_for(job.id, timeout=180).status == "succeeded"
    [model] = [m for m in models.list_models("customized")]
    tab(page, "Models")
    page.get_by_text(model.name).first.wait_for()
    row_text = page.locator(".deepe-models").inner_text()
    for expected in ("tiny", "SFT-Demo", "demo-sft", "loss "):
        assert expected in row_text
    page.locator(f"button[title^='the card of {model.name}:']").click()
    card = page.locator(".deepe-model-card")
    card.get_by_text("Training metrics").wait_for()
    shot(page, "model-card")
    # Try it: this model and its base answer the same prompt, side by side
    card.locator("textarea").fill("Give the capital card for this country: France")
    card.get_by_role("button", name="Try it").click()
    card.get_by_role("button", name="Answering…").wait_for()  # busy while the kernels answer
    card.get_by_text("answered in").wait_for(timeout=180_000)
    answers = card.locator(".deepe-answer").all_inner_texts()
    assert len(answers) == 2 and all(a.strip() and "answering" not in a for a in answers), answers
    assert "could not answer" not in " ".join(answers)
    record_title = card.get_by_text("Record of this answer")
    record_title.wait_for(state="visible")
    page.wait_for_timeout(500)  # the accordion appears with the answers: a click while it is drawn can be lost
    record_title.click()
    card.locator(".deepe-record .cell").first.wait_for(timeout=120_000)  # the record is read and drawn
    shot(page, "model-try-it")
    # Save: a save job, then the Complete Model under Complete
    card.locator("select").filter(has=page.locator("option", has_text="bfloat16")).select_option(
        label="bfloat16 (half the size)")
    card.get_by_role("button", name="Save as Complete Model").click()
    card.get_by_text("is queued").wait_for()
    save = jobs.list_jobs()[0]
    assert save.kind == "save" and save.params["DTYPE"] == "bfloat16"
    assert jobs.wait_for(save.id, timeout=180).status == "succeeded"
    page.locator(".widget-toggle-button", has_text="Complete").click()
    [merged] = models.list_models("complete")
    page.get_by_text(merged.name).first.wait_for()
    shot(page, "models-complete")
    # Delete asks first; the customized one is refused while the complete one depends on it
    page.locator(".widget-toggle-button", has_text="Customized").click()
    page.locator(f"button[title^='the card of {model.name}:']").click()  # the row of the list shown now
    page.locator(".deepe-model-card h3", has_text=model.name).wait_for()
    page.get_by_role("button", name="Delete…").click()
    page.locator(".deepe-error", has_text="is the base of").wait_for()  # refused before "for good?" is asked
    assert not page.locator(".deepe-question", has_text=f"Delete {model.name}").is_visible()
    assert model.name in [m.name for m in models.list_models()]
    shot(page, "model-delete-refused")
