"""Start a New Train in the Voila app, in Debian's chromium: a preference method brings its own demo
dataset and its own fields, and queues with them (issue 26: DPO-Demo kept demo-sft). The screenshot
goes to test-artifacts/launcher-dpo.png (look at it)."""

import re
from pathlib import Path

from deepe_widgets import jobs

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DPO_FIELDS = ("KL Penalty (beta)", "Loss Type", "Label Smoothing")  # DPO's own, under Advanced


def tab(page, title: str):
    page.locator(".lm-TabBar-tabLabel", has_text=re.compile(f"^{re.escape(title)}$")).first.click()


def labelled(page, kind: str, label: str):
    """The input of the `.widget-KIND` whose label reads exactly `label`."""
    return page.locator(f".widget-{kind}", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$")))


def dropdown(page, label: str):
    return labelled(page, "dropdown", label).locator("select").first


def wait_for_value(page, label: str, value: str) -> None:
    """Wait until the dropdown labelled `label` shows `value` (the kernel sets it after a choice)."""
    page.wait_for_function("""([label, value]) => [...document.querySelectorAll('.widget-dropdown')].some(d =>
        d.querySelector('label')?.textContent === label && d.querySelector('select')?.value === value)""",
                           arg=[label, value])


def test_dpo_demo_brings_its_dataset_and_fields_and_queues_with_them(start_app, page, workspace):
    app = start_app(admin=False)
    page.set_viewport_size({"width": 1400, "height": 2000})  # the whole form, Advanced open, in the screenshot
    page.goto(app.url)
    page.get_by_text("Training Method Management").wait_for()
    tab(page, "Train")
    page.get_by_text("Start a New Train").wait_for()
    wait_for_value(page, "Dataset", "demo-sft")
    page.get_by_text("CAPITAL CARD").first.wait_for()
    dropdown(page, "Base Model").select_option("tiny")

    dropdown(page, "Training Method").select_option("DPO-Demo")
    wait_for_value(page, "Dataset", "demo-dpo")  # the method's own demo data, not SFT's
    labelled(page, "text", DPO_FIELDS[0]).wait_for(state="attached")  # DPO's fields replaced SFT's
    preview = page.locator(".deepe-table").first
    preview.locator("th", has_text=re.compile("^rejected$")).wait_for()
    assert [h.strip() for h in preview.locator("th").all_inner_texts()] == ["prompt", "chosen", "rejected"]
    standard = dropdown(page, "Prompt column").locator("option").first.inner_text().replace("\xa0", " ")
    assert standard == "(standard: prompt)"  # what an unset column chooser reads: its own standard column

    # back to SFT-Demo: its demo data and its fields come back; DPO's go
    dropdown(page, "Training Method").select_option("SFT-Demo")
    wait_for_value(page, "Dataset", "demo-sft")
    labelled(page, "text", DPO_FIELDS[0]).wait_for(state="detached")
    page.locator(".deepe-table th", has_text=re.compile("^instruction$")).first.wait_for()
    # and DPO-Demo a second time still brings demo-dpo (once chosen, no method used to bring its data)
    dropdown(page, "Training Method").select_option("DPO-Demo")
    wait_for_value(page, "Dataset", "demo-dpo")
    page.locator(".deepe-table th", has_text=re.compile("^rejected$")).first.wait_for()

    page.get_by_text("Advanced", exact=True).click()
    for label in DPO_FIELDS:
        labelled(page, "text", label).locator("input").first.wait_for()
    assert labelled(page, "text", "KL Penalty (beta)").locator("input").first.input_value() == "0.1"
    run = page.get_by_role("button", name="Run the Train")
    assert run.is_enabled() and page.locator(".deepe-field-error").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "launcher-dpo.png"), full_page=True)

    run.click()
    page.locator(".deepe-ok", has_text="is queued").wait_for()
    [job] = jobs.list_jobs()
    assert (job.kind, job.method, job.dataset, job.base_model) == ("train", "DPO-Demo", "demo-dpo", "tiny")
    assert "Traceback" not in page.inner_text("body")
