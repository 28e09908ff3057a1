"""Every tab of the Voila app in Debian's chromium at 1400 and 800 px (issue 35): the Train tab fits
800 px (nothing runs past the page's right edge, Run the Train in sight and usable), the Trainings
tab offers Remove, the Models tab lists base models and keeps Try it inside its card. Screenshots of
every tab at both widths go to this test's tmp folder (`tabs-<tab>-<width>.png`): look at them."""

import re

from deepe_widgets import jobs
from deepe_widgets.runtime import MetricSink
from deepe_widgets.store import JobStatus

from helpers import customized_model

TABS = ("Methods", "Train", "Trainings", "Compare", "Models")
# visible elements of the shown page (our front end's outputs, or JupyterLab's) whose right edge runs past
# the window (a horizontal scroll bar)
PAST_RIGHT_EDGE = """() => [...document.querySelectorAll('.deepe-output *, .jp-OutputArea-output *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right > window.innerWidth + 1 && getComputedStyle(e).visibility !== 'hidden'
}).map(e => (e.className || e.tagName) + ': ' + (e.textContent || '').trim().slice(0, 40))"""
# tables that scroll sideways (a column cut off at the left or right) and buttons whose label is cut
CUT = """() => [...document.querySelectorAll('.deepe-grid-scroll, .deepe-grid, .widget-button')].filter(e =>
    e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1).map(e => e.className + ': ' + e.textContent.trim())"""


def tab(page, title: str):
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile(f"^{re.escape(title)}$")).first.click()


def dropdown(page, label: str):
    return page.locator(".widget-dropdown", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$"))) \
        .locator("select").first


def test_every_tab_at_1400_and_800_px_and_the_train_tab_fits_800(start_app, page, workspace, tmp_path):
    failed = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="too-long-a-training-name-for-800")
    assert jobs.claim_next_job("test-worker").id == failed.id
    sink = MetricSink(failed.id)  # it failed at its fourth step
    for step in range(1, 4):
        sink.add(step, {"loss": 2.7 / step}, step / 10)
    sink.close()
    jobs.finish_job(failed.id, "test-worker", JobStatus.FAILED, error="the model has no chat template")
    done = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="cards")
    assert jobs.claim_next_job("test-worker").id == done.id
    jobs.finish_job(done.id, "test-worker", JobStatus.SUCCEEDED)
    model = customized_model(done, "tiny_cards_20261207_abcd", tmp_path)
    sink = MetricSink(done.id)  # its curve, as a training writes it
    for step in range(1, 11):
        sink.add(step, {"loss": 2.5 / step, "learning_rate": 1e-3 * (1 - step / 10)}, step / 10)
    sink.close()
    app = start_app(admin=True)
    page.set_viewport_size({"width": 800, "height": 1000})
    page.goto(app.url)
    page.get_by_text("Training Method Management").wait_for()

    # the Train tab at 800 px: the form fits, a method brings its data, Run stays in sight and usable
    tab(page, "Train")
    page.get_by_text("Start a New Train").wait_for()
    dropdown(page, "Base Model").select_option("tiny")
    dropdown(page, "Training Method").select_option("DPO-Demo")
    page.wait_for_function("""() => [...document.querySelectorAll('.widget-dropdown')].some(d =>
        d.querySelector('label')?.textContent === 'Dataset' && d.querySelector('select')?.value === 'demo-dpo')""")
    page.get_by_text("Advanced", exact=True).click()
    page.wait_for_timeout(500)  # the fields settle
    # the form's widgets, whichever front end draws them
    assert page.evaluate("() => document.querySelectorAll('.jupyter-widgets').length") > 30
    assert page.evaluate(PAST_RIGHT_EDGE) == []
    run = page.get_by_role("button", name="Run the Train")
    box = run.bounding_box()
    assert run.is_enabled() and box["x"] >= 0 and box["x"] + box["width"] <= 800
    assert page.locator(".deepe-field-error:visible").count() == 0
    assert "Traceback" not in page.inner_text("body")

    # the two compared: the Compare tab shows them, not its hint
    tab(page, "Trainings")
    for job in (failed, done):
        page.locator(f"input[type=checkbox][title^='tick job {job.id} ']").first.check()
    page.get_by_role("button", name="Compare").click()
    heading = page.locator("h3", has_text=re.compile("^Compare ")).first
    heading.wait_for()
    assert done.name in heading.inner_text() and failed.name in heading.inner_text()
    page.locator(".bqplot").first.wait_for()  # the loss curves of both, overlaid

    shots = {}
    for width, height in ((800, 1800), (1400, 1400)):
        page.set_viewport_size({"width": width, "height": height})
        for title in TABS:
            tab(page, title)
            if title == "Trainings":
                page.get_by_role("button", name="Remove…").wait_for()
                page.get_by_text("too-long-a-training-name-for-800").first.wait_for()
            if title == "Models":
                page.locator(".widget-toggle-button", has_text="Customized").wait_for()
                if not page.locator(".deepe-model-card").count():
                    page.locator(f"button[title^='the card of {model.name}:']").click()
                card = page.locator(".deepe-model-card")
                card.get_by_role("button", name="Try it").wait_for()
                inner, outer = card.locator(".deepe-try-it").bounding_box(), card.bounding_box()
                assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1, width  # inside its card
                page.get_by_text("Max new tokens").wait_for()
            page.wait_for_timeout(400)  # the grid's columns settle
            if width == 800:
                assert page.evaluate(PAST_RIGHT_EDGE) == [], title
            assert page.evaluate(CUT) == [], (title, width)
            shots[title, width] = tmp_path / f"tabs-{title.lower()}-{width}.png"
            page.screenshot(path=str(shots[title, width]), full_page=True)
    # the base models, listed to be tried before any training
    page.locator(".widget-toggle-button", has_text="Base").click()
    page.locator("button[title^='the card of tiny:']").wait_for()
    page.screenshot(path=str(tmp_path / "tabs-models-base-1400.png"), full_page=True)
    assert all(path.stat().st_size > 10_000 for path in shots.values())
    print("screenshots:", tmp_path)
