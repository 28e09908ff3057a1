"""The Methods tab in the Voila app, in Debian's chromium, at 1400 and 800 px: every row says what its
method does, nothing in the Stages column is cut off, and "Delete?" is asked under its row (issue 35).
The screenshots go to test-artifacts/methods-1400.png and methods-800.png (look at them)."""

from pathlib import Path

import nbformat

from deepe_widgets import methods, stagefiles

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# the cells of the methods table whose text is cut off (wider than their box)
CUT_CELLS = """() => [...document.querySelectorAll('.deepe-wrap-rows .deepe-subcell')]
    .filter(cell => cell.scrollWidth > cell.clientWidth + 1).map(cell => cell.textContent)"""


def test_methods_tab_says_what_each_method_does_at_1400_and_800_px(start_app, page, tmp_path):
    nb = nbformat.read(stagefiles.template_notebook_path(), as_version=4)
    notebook = tmp_path / "support.ipynb"
    nbformat.write(nb, notebook)
    methods.register_method("support-bot", {"training": (notebook, "python3")}, display_name="Support Bot",
                            description="Answers our customers' questions in our own tone.")
    app = start_app(admin=True)
    page.goto(app.url)
    page.get_by_text("Training Method Management").wait_for()
    page.get_by_text("Answers our customers' questions in our own tone.").wait_for()
    page.get_by_text("Supervised fine-tuning with a LoRA adapter").first.wait_for()
    assert page.locator(".deepe-tag", has_text="template").count() == 2  # Custom01 and Custom02
    delete = page.locator("button[title='delete method support-bot']")
    delete.click()  # the bottom row: the question appears under it, not at the top of the list
    question = page.locator(".deepe-question", has_text="Delete method support-bot?")
    question.wait_for()
    assert question.bounding_box()["y"] > delete.bounding_box()["y"]
    row = page.locator(".deepe-grid > .deepe-confirm")
    assert row.bounding_box()["width"] > 0.9 * page.locator(".deepe-wrap-rows").bounding_box()["width"]  # all columns
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1400, 1500), (800, 2300)):  # the whole list (the app scrolls inside its page)
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(300)  # the grid's columns settle
        assert page.evaluate(CUT_CELLS) == [], width  # wrapped, not cut
        page.screenshot(path=str(ARTIFACTS / f"methods-{width}.png"), full_page=True)
    page.get_by_role("button", name="No, keep it").click()
    question.wait_for(state="hidden")
    assert "support-bot" in [m.name for m in methods.list_methods()]
    page.get_by_role("button", name="Add New Method").click()
    page.get_by_role("button", name="Save Method").wait_for()
    # the stage rows line up at 800 px: every file box starts where the others do
    boxes = page.locator("input[placeholder='notebook or .py file']")
    lefts = {round(boxes.nth(i).bounding_box()["x"]) for i in range(boxes.count()) if boxes.nth(i).is_visible()}
    assert len(lefts) == 1, lefts
    page.screenshot(path=str(ARTIFACTS / "methods-form-800.png"), full_page=True)
