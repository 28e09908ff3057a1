"""The widgets in plain Python: buttons are clicked with `.click()`, no browser."""

import asyncio
import html
import os
import re
import shutil
import time
from pathlib import Path

import ipywidgets as w
import pytest
from ipywidgets.widgets.widget import _instances  # ipywidgets 8: every widget not yet closed

from deepe_widgets import jobs, methods, models, stagefiles, trainings
from deepe_widgets.runtime import MetricSink
from deepe_widgets.store import Job
from deepe_widgets.store import session as store_session
from deepe_widgets.ui import Dashboard, MethodManager, TrainingCompare, TrainingDetail, TrainingLauncher
from deepe_widgets.ui.charts import decimate
from deepe_widgets.ui.methods_view import MethodForm

from helpers import customized_model, run_in_own_loop


def shown(widget: w.Widget) -> list[w.Widget]:
    """`widget` and every widget displayed inside it (through `children`)."""
    out = [widget]
    for child in getattr(widget, "children", ()):
        out.extend(shown(child))
    return out


def job_with_losses(*losses: float, **params):
    """A queued job with one `loss` row per step (what a running trainer has logged so far)."""
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params=params or None)
    sink = MetricSink(job.id)
    for step, loss in enumerate(losses, 1):
        sink.add(step, {"loss": loss, "learning_rate": 1e-4}, step / 10)
    sink.close()
    return job


async def until(condition, timeout: float = 15.0) -> None:
    """Let the loop run (pollers included) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the view"
        await asyncio.sleep(0.02)


def test_method_form_follows_the_lifecycle_and_checks_as_the_user_types(workspace, tmp_path):
    manager = MethodManager(admin=True)
    form = manager.form
    manager.add_button.click()
    assert form.layout.display is None
    shown_stages = {s for s, row in form.stage_rows.items() if row.layout.display != "none"}
    assert shown_stages == {"training", "inference-customized", "evaluation"}
    form.lifecycle.value = "live"
    shown_stages = {s for s, row in form.stage_rows.items() if row.layout.display != "none"}
    # the built-in vLLM deployment
    assert shown_stages == {"training", "saving", "inference-customized", "inference-complete", "evaluation"}
    form.deploy_env.value = "custom"
    shown_stages = {s for s, row in form.stage_rows.items() if row.layout.display != "none"}
    assert shown_stages == {"training", "saving", "deployment", "inference-customized", "inference-complete",
                           "evaluation"}
    form.deploy_env.value = "vllm"
    form.lifecycle.value = "customized"
    # untouched: Save is off and says what is still needed, without red messages yet
    assert form.save.disabled and "Training Name, training code file" in form.summary.value
    assert all(box.value == "" for box in form.errors.values())
    # every problem at once, as typed, in the form's words
    form.name.value = "SFT-Demo"
    form.files["training"].value = str(tmp_path / "missing.ipynb")
    assert "already exists" in form.errors["name"].value
    assert "There is no file at" in form.errors["training"].value and form.save.disabled
    form.name.value = "mine"
    assert form.errors["name"].value == ""  # fixed: gone at once
    notebook = tmp_path / "mine.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    form.files["training"].value = str(notebook)
    assert form.errors["training"].value == "" and not form.save.disabled
    form.enabled["inference-customized"].value = True  # enabled without a file: said under that stage
    assert "Give the Customized Model inference file" in form.errors["inference-customized"].value
    assert form.save.disabled
    form.enabled["inference-customized"].value = False
    assert form.errors["inference-customized"].value == "" and not form.save.disabled
    form.save.click()
    assert "registered" in form.status.value and "mine" in [m.name for m in methods.list_methods()]
    assert "mine" in manager.rows and form.name.value == ""  # the table has it; the form starts over
    form.name.value = "mine"
    assert "already exists" in form.errors["name"].value
    manager.ask_delete("mine")
    manager.confirm.yes.click()
    assert "method mine deleted" in manager.status.value
    assert form.errors["name"].value == "" and form.status.value == ""  # no stale "already exists"


def test_delete_asks_first_and_is_not_offered_for_builtins(workspace, tmp_path):
    notebook = tmp_path / "mine.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    methods.register_method("mine", {"training": (notebook, "python3")})
    manager = MethodManager(admin=True)
    assert not isinstance(manager.rows["SFT-Demo"][-1], w.Button)  # no delete control on a built-in
    delete = manager.delete_buttons["mine"]
    assert delete.description == "Delete" and "SFT-Demo" not in manager.delete_buttons
    delete.click()
    assert "Delete method mine?" in manager.confirm.children[0].value and manager.confirm.layout.display is None
    manager.confirm.no.click()
    assert manager.confirm.layout.display == "none" and "mine" in [m.name for m in methods.list_methods()]
    delete.click()
    manager.confirm.yes.click()
    assert "mine" not in [m.name for m in methods.list_methods()] and "mine" not in manager.rows
    readonly = MethodManager(admin=False)
    widgets = shown(readonly)
    assert not any(isinstance(x, MethodForm) for x in widgets)
    assert not [x for x in widgets if isinstance(x, w.Button) and x.description in ("Add New Method", "Delete")]
    assert any("registration and deletion are off" in getattr(x, "value", "") for x in widgets)


def test_method_table_follows_methods_registered_elsewhere(workspace, tmp_path):
    manager = MethodManager(admin=False)  # e.g. a Voila app started before the method was registered
    assert manager.refresh_if_changed() is False
    notebook = tmp_path / "later.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    methods.register_method("later", {"training": (notebook, "python3")})
    assert manager.refresh_if_changed() is True  # what its poller does every few seconds
    assert "later" in manager.rows
    methods.delete_method("later")
    assert manager.refresh_if_changed() is True
    assert "later" not in manager.rows


def test_the_form_starts_filled_in_and_checks_every_field_as_the_user_types(workspace):
    launcher = TrainingLauncher(start_worker=False)
    # a first visit can run at once: the demo method, the default model, the demo data
    assert (launcher.method.value, launcher.base_model.value, launcher.dataset.value) == \
        ("SFT-Demo", models.DEFAULT_BASE_MODEL, "demo-sft")
    assert not launcher.run.disabled and launcher.problems == {}
    assert "CAPITAL CARD" in launcher.preview.value and "…" in launcher.preview.value  # a cut cell says so
    assert "NUM_GENERATIONS" not in launcher.fields  # SFT-Demo's code never reads it
    launcher.fields["BATCH_SIZE"].value = "zero"
    launcher.fields["LEARNING_RATE"].value = "5"
    # both at once, by their fields, in the fields' words; Run is off and says why
    assert "Batch Size must be a whole number" in launcher.field_errors["BATCH_SIZE"].value
    assert "Learning Rate must be between 0 and 1" in launcher.field_errors["LEARNING_RATE"].value
    assert "BATCH_SIZE" not in launcher.field_errors["BATCH_SIZE"].value
    assert launcher.run.disabled and "Batch Size, Learning Rate" in launcher.summary.value
    launcher.fields["BATCH_SIZE"].value = "4"
    assert launcher.field_errors["BATCH_SIZE"].value == ""  # fixed: cleared as typed
    assert launcher.run.disabled
    launcher.fields["LEARNING_RATE"].value = "0.005"  # allowed, outside the seed's typical range: a warning
    assert "outside the typical range" in launcher.field_errors["LEARNING_RATE"].value
    assert not launcher.run.disabled and launcher.summary.value == ""
    fields = dict(launcher.fields)
    launcher.reload()  # what going to another tab and back does: nothing typed is lost
    assert launcher.fields == fields and launcher.fields["LEARNING_RATE"].value == "0.005"
    launcher.train_name.value = "no spaces please"
    assert "may only use letters" in launcher.choice_errors["name"].value and launcher.run.disabled
    launcher.train_name.value = ""
    launcher.method.value = "GRPO-Demo"  # its own demo data follows; its yes/no parameter is a checkbox
    assert launcher.dataset.value == "demo-gsm" and isinstance(launcher.fields["LOAD_IN_4BIT"], w.Checkbox)
    assert launcher.fields["NUM_GENERATIONS"].description == "Completions per Prompt"


def test_every_built_in_method_brings_its_own_demo_dataset_in_any_order(workspace, tmp_path):
    launcher = TrainingLauncher(start_worker=False)
    offered = [name for name in launcher.method.options if methods.get_method(name).builtin]
    assert {"SFT-Demo", "GRPO-Demo", "DPO-Demo", "Embedding-Demo", "VL-Demo", "SD-Demo"} <= set(offered)
    for name in offered + offered[::-1]:  # every one, in order and back again
        launcher.method.value = name
        assert launcher.dataset.value == trainings.demo_dataset(name), name
        assert launcher.dataset.value is not None, f"{name}'s demo dataset is not registered"
    launcher.method.value = "SFT-Demo"
    launcher.method.value = "DPO-Demo"  # the preference pairs, not SFT's prompts …
    assert launcher.dataset.value == "demo-dpo"
    launcher.method.value = "GRPO-Demo"  # … and a method after it still brings its own
    assert launcher.dataset.value == "demo-gsm"
    # a user's method has no demo dataset: the choice stays, and the next built-in brings its own
    shutil.copy(stagefiles.template_notebook_path(), tmp_path / "mine.ipynb")
    methods.register_method("mine", {"training": (tmp_path / "mine.ipynb", "python3")})
    launcher.reload()
    launcher.method.value = "mine"
    assert launcher.dataset.value == "demo-gsm"
    launcher.method.value = "Embedding-Demo"
    assert launcher.dataset.value == "demo-embed"
    # a dataset the user chose stays chosen, whatever method follows
    launcher.dataset.value = "demo-sft"
    for name in ("DPO-Demo", "VL-Demo", "SFT-Demo", "GRPO-Demo"):
        launcher.method.value = name
        assert launcher.dataset.value == "demo-sft", name
    launcher.close()


def test_launcher_submits_changed_parameters_and_copies_a_train(workspace):
    submitted = []
    launcher = TrainingLauncher(on_submitted=submitted.append, start_worker=False)
    launcher.base_model.value = "tiny"
    assert {"EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "MAX_SEQ_LENGTH", "LORA_RANK", "SYSTEM_PROMPT",
            "SAVE_STEPS"} <= {n for n, t in launcher.fields.items() if any(
                box.children[0] is t for box in launcher.main_box.children)}
    launcher.fields["BATCH_SIZE"].value = "zero"
    launcher.run.click()  # a click that got through anyway: refused, nothing queued
    assert submitted == [] and jobs.list_jobs() == [] and launcher.run.disabled
    launcher.fields["BATCH_SIZE"].value = "4"
    launcher.fields["LEARNING_RATE"].value = "0.005"
    launcher.run.click()
    assert len(jobs.list_jobs()) == 1 and "is queued" in launcher.status.value
    assert "run folder" not in launcher.status.value and str(workspace) not in launcher.status.value  # no paths
    job = submitted[0]
    assert job.params == {"LEARNING_RATE": 0.005}
    # Copy the Train fills the form with that job's configuration.
    other = TrainingLauncher(start_worker=False)
    other.prefill(job)
    assert other.method.value == "SFT-Demo" and other.base_model.value == "tiny"
    assert other.fields["LEARNING_RATE"].value == "0.005"
    other.fields["LEARNING_RATE"].value = "0.001"
    other.run.click()
    copy = jobs.list_jobs()[0]
    assert copy.copied_from == job.id and copy.params == {"LEARNING_RATE": 0.001}
    assert f"a copy of job {job.id}" in other.status.value
    # a column the dataset lacks: the message sits under that chooser, before any click
    other.input_column.options = [*other.input_column.options, ("nope", "nope")]
    other.input_column.value, other.output_column.value = "nope", "output"
    assert "no column &#x27;nope&#x27;" in other.choice_errors["PromptInputColumn"].value and other.run.disabled


def test_detail_charts_every_metric_loss_first_and_decimates(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    sink = MetricSink(job.id)
    for step in range(1, 5001):
        sink.add(step, {"loss": 5.0 - step / 1000, "learning_rate": 1e-4, "grad_norm": 1.0}, step / 100)
    sink.close()
    detail = TrainingDetail(job.id)
    assert set(detail.lines) == {"loss", "learning_rate", "grad_norm"}
    # the key metric first (not alphabetically 2nd of 3), titled in words
    assert detail.charts.children[0] is detail.figures["loss"] and detail.figures["loss"].title == "Loss"
    assert detail.figures["grad_norm"].title == "Gradient norm"
    loss = detail.lines["loss"]
    assert len(loss.x) <= 2001 and loss.x[-1] == 5000 and loss.y[-1] == pytest.approx(0.0)
    assert detail.figures["loss"].axes[0].label == "step"
    detail.x_axis.value = "epoch"
    assert detail.lines["loss"].x[-1] == pytest.approx(50.0) and detail.figures["loss"].axes[0].label == "epoch"
    assert detail.tabs.titles == ("Train Overview", "Evaluation Data", "Train Log", "Record")
    assert "Copy the Train" == detail.copy.description


def test_a_starting_job_says_so_instead_of_an_empty_chart(workspace):
    from deepe_widgets.ui.training_list import status_words

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    detail = TrainingDetail(job.id)
    assert "Queued" in detail.stage_note.value and "Queued" in detail.no_data.value
    assert "No log yet" in detail.log_empty.value
    claimed = jobs.claim_next_job("test-worker")  # a worker took it; the kernel is still loading
    assert claimed.id == job.id
    detail.refresh()
    assert status_words(jobs.get_job(job.id)) == "starting…"
    assert "starting…" in detail.header.value and "Starting" in detail.no_data.value
    sink = MetricSink(job.id)
    sink.add(1, {"loss": 2.0}, 0.1)
    sink.close()
    with store_session() as s:  # the runtime moves the progress with the first step
        row = s.get(Job, job.id)
        row.progress_step, row.progress_total = 1, 10
        s.add(row)
    detail.refresh()
    assert "running" in detail.header.value and detail.stage_note.value == ""
    assert detail.no_data.layout.display == "none" and list(detail.lines["loss"].y) == [2.0]


def test_train_log_appends_keeps_noise_aside_and_says_when_a_filter_matches_nothing(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    log = Path(job.run_dir) / "training.log"
    log.write_text("[deepe] 2026-11-23 15:25:28 INFO    stage training starting in kernel 'python3'\n"
                   "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\n"
                   "\n"
                   "/x/modeling_utils.py:3303: FutureWarning: `is_gradient_checkpointing` is deprecated\n"
                   "  warnings.warn(\n"
                   "[deepe] 2026-11-23 15:25:43 INFO    training started\n")
    detail = TrainingDetail(job.id)
    [chunk] = detail.log_lines.children
    assert "training started" in chunk.value and "Kernel is running over TCP" not in chunk.value
    assert "\n\n" not in chunk.value  # no blank lines spreading the log out
    assert "3 library and kernel lines hidden" in detail.log_note.value
    with open(log, "a") as handle:
        handle.write("[deepe] 2026-11-23 15:25:44 INFO    progress 1/24\n")
    detail.refresh()
    first, second = detail.log_lines.children
    assert first is chunk and "progress 1/24" in second.value  # appended: the page keeps its place or the tail
    assert "deepe-log-box" in detail.log_view._dom_classes  # the box that sticks to the newest line
    detail.level.value = "ERROR"
    assert detail.log_view.layout.display == "none" and "No errors in this log" in detail.log_empty.value
    detail.show_noise.value = True
    detail.level.value = "WARNING"
    [shown_chunk] = detail.log_lines.children
    assert "FutureWarning" in shown_chunk.value and "deepe-noise" in shown_chunk.value
    assert detail.log_empty.value == ""


def test_decimate_keeps_spikes_and_the_newest_point():
    xs = list(range(100_000))
    ys = [0.0] * 100_000
    ys[54_321] = 9.0
    dx, dy = decimate(xs, ys, 1000)
    assert len(dx) <= 1001 and 9.0 in dy and dx[-1] == 99_999


def test_compare_names_runs_keeps_the_legend_off_the_curves_and_knows_which_way_is_best(workspace):
    a = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="lr-high", params={"learning_rate": "1e-3"})
    b = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="lr-low", params={"learning_rate": "5e-4"})
    for job, scale in ((a, 1.0), (b, 2.0)):
        sink = MetricSink(job.id)
        for step in range(1, 11):
            sink.add(step, {"loss": scale / step, "learning_rate": scale * (11 - step), "num_tokens": 40.0 * step,
                            "reward": scale * step}, None)
        sink.close()
    view = TrainingCompare([a.id, b.id])
    assert "Learning Rate" in view.config.value and "0.001" in view.config.value
    assert "LEARNING_RATE" not in view.config.value and "MODEL_PATH" not in view.config.value
    assert "lr-high" in view.config.value and "job 1" not in view.config.value
    loss = view.figures[0]  # loss first
    assert loss.title == "Loss" and [m.labels for m in loss.marks] == [["lr-high"], ["lr-low"]]
    assert not any(m.display_legend for f in view.figures for m in f.marks)  # no legend over the curves …
    assert "lr-high" in view.legend.value and "lr-low" in view.legend.value  # … one above them
    rows = {r.split("</td>")[0]: r for r in view.summary.value.split("<tr>")[2:]}
    row = next(r for k, r in rows.items() if "Loss" in k)
    assert "0.1 / 0.1" in row and "0.2 / 0.2" in row  # lowest loss
    row = next(r for k, r in rows.items() if "Reward" in k)
    assert "10 / 10" in row and "20 / 20" in row  # highest reward
    row = next(r for k, r in rows.items() if "Tokens seen" in k)
    assert ">400<" in row and " / " not in row  # a count has a final value, no "best"
    row = next(r for k, r in rows.items() if "Learning rate" in k)
    assert " / " not in row


def test_overview_shows_words_not_internal_names_and_totals_are_a_table(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"learning_rate": "5e-3"})
    sink = MetricSink(job.id)
    for step in range(1, 4):
        sink.add(step, {"loss": 3.0 / step}, None)
    sink.add(3, {"train_loss": 1.5, "total_flos": 1234.0}, None)
    sink.close()
    detail = TrainingDetail(job.id)
    overview = detail.overview.value
    assert "<b>Learning Rate</b>" in overview and "<b>0.005</b>" in overview and "changed" in overview
    assert "LoRA Rank" in overview and "Batch Size" in overview  # defaults are shown too
    for internal in ("LEARNING_RATE", "BATCH_SIZE", "MODEL_PATH", "Completions per Prompt"):
        assert internal not in overview  # internal names, and what SFT-Demo never reads, stay out
    assert set(detail.figures) == {"loss"}  # one value per run is no curve
    assert "Training loss (average)" in detail.totals.value and "1234" in detail.totals.value


def test_launcher_column_choosers_start_on_the_standard_columns(workspace):
    launcher = TrainingLauncher()
    launcher.dataset.value = "demo-sft"
    assert launcher.input_column.value == "" and launcher.input_column.label.startswith("(standard")
    assert "instruction" in launcher.input_column.options[1]


def test_dashboard_views_share_one_model(workspace):
    from deepe_widgets.ui.dashboard import TAB_COMPARE, TAB_TRAIN, TAB_TRAININGS

    dash = Dashboard(admin=False, start_worker=False)
    assert dash.model.admin is False and dash.methods.admin is False
    launcher = dash.launcher
    launcher.method.value, launcher.base_model.value, launcher.dataset.value = "SFT-Demo", "tiny", "demo-sft"
    launcher.fields["LEARNING_RATE"].value = "0.002"
    for submitted in range(2):
        launcher.run.click()
    assert len(jobs.list_jobs()) == 2
    newest = jobs.list_jobs()[0]
    assert dash.model.last_submitted == newest.id and newest.id in dash.trainings.selected
    dash.trainings._rows[newest.id]["details"].click()  # the row's own "View Details"
    assert dash.model.open_job == newest.id and dash.tabs.selected_index == TAB_TRAININGS
    [detail] = dash.detail_area.children
    assert all("deepe-chosen" in c._dom_classes for c in dash.trainings._rows[newest.id]["cells_all"])
    detail.copy.click()  # "Copy the Train": the form, filled in
    assert dash.tabs.selected_index == TAB_TRAIN and launcher.fields["LEARNING_RATE"].value == "0.002"
    detail.close_button.click()
    assert dash.detail_area.children == () and dash.model.open_job is None
    dash.trainings.selected[newest.id].value = True
    dash.trainings.compare.click()  # one ticked: asks for more
    assert "two or more" in dash.trainings.status.value and dash.model.compare_ids == []
    for box in dash.trainings.selected.values():
        box.value = True
    dash.trainings.compare.click()
    assert dash.tabs.selected_index == TAB_COMPARE and len(dash.model.compare_ids) == 2
    assert isinstance(dash.compare_area.children[0], TrainingCompare)
    dash.close()


def test_dashboard_builds_a_tab_when_it_is_first_shown(workspace):
    """A visit's page loads the widget models of the tab it shows, not of all five (each model is
    sent to the browser before the page is drawn)."""
    from deepe_widgets.ui.dashboard import TAB_METHODS, TAB_TRAIN

    before = len(_instances)
    dash = Dashboard(admin=False, start_worker=False)
    first = len(_instances) - before
    assert set(dash._views) == {TAB_METHODS} and first < 250
    dash.tabs.selected_index = TAB_TRAIN
    assert set(dash._views) == {TAB_METHODS, TAB_TRAIN} and dash.pages[TAB_TRAIN].children == (dash.launcher,)
    assert len(_instances) - before > first + 100  # the launcher's form came with its tab
    dash.close()
    assert len(_instances) == before  # nothing left in the kernel, shown or not


def test_trainings_list_pages_through_jobs_and_keeps_the_selection(workspace):
    from deepe_widgets.ui import TrainingList

    submitted = [jobs.submit_training("SFT-Demo", "tiny", "demo-sft") for _ in range(7)]
    sink = MetricSink(submitted[0].id)
    sink.add(2, {"loss": 1.25}, None)
    sink.add(1, {"loss": 2.5}, None)
    sink.close()
    listing = TrainingList(page_size=3)
    assert list(listing.selected) == [j.id for j in reversed(submitted)][:3]  # newest first
    assert "trainings 1–3 of 7" in listing.position.value and listing.newer.disabled and not listing.older.disabled
    # one grid: every row has as many cells as there are headers, so they line up at any width
    assert len(listing.table.grid.children) == len(listing.table.head) * 4
    listing.selected[submitted[-1].id].value = True
    listing.older.click()
    listing.older.click()
    assert list(listing.selected) == [submitted[0].id] and "trainings 7–7 of 7" in listing.position.value
    assert listing.older.disabled
    assert listing._rows[submitted[0].id]["cells"][-1].value == "1.2500"  # the last loss, not the first
    listing.selected[submitted[0].id].value = True
    assert listing.chosen() == sorted([submitted[0].id, submitted[-1].id])  # across pages
    listing.compare.click()
    assert "two or more" not in listing.status.value
    listing.newer.click()
    assert listing.selected[submitted[3].id].value is False and len(listing.table.rows) == 3
    listing.close()


def test_cancel_asks_first_and_says_what_it_needs(workspace):
    from deepe_widgets.ui import TrainingList

    done = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    jobs.cancel_job(done.id)
    waiting = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="waiting")
    listing = TrainingList()
    assert listing.cancel.button_style == ""  # not the brightest button on the bar
    listing.cancel.click()  # nothing ticked: it says so
    assert "Tick the trainings to cancel first" in listing.status.value
    listing.selected[done.id].value = True
    listing.cancel.click()  # only finished ones ticked
    assert "have finished" in listing.status.value and listing.confirm.layout.display == "none"
    listing.selected[waiting.id].value = True
    listing.cancel.click()
    assert "Cancel this training (waiting)?" in listing.confirm.children[0].value
    assert jobs.get_job(waiting.id).status == "queued"  # asked, not done
    listing.confirm.no.click()
    assert jobs.get_job(waiting.id).status == "queued" and listing.confirm.layout.display == "none"
    listing.cancel.click()
    listing.confirm.yes.click()
    assert jobs.get_job(waiting.id).status == "cancelled" and "waiting cancelled" in listing.status.value
    listing.close()


def test_models_tab_lists_cards_saves_and_asks_before_deleting(workspace, tmp_path):
    from deepe_widgets.ui import ModelsView

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    opened = []
    view = ModelsView(on_job=opened.append, start_worker=False)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c.value)) for c in view.rows["tiny_train1_20261123_abcd"][:6]]
    assert cells[1:4] == ["tiny", "SFT-Demo", "demo-sft"] and cells[5] == "loss 0.0036"
    assert "title='SFT-Demo'" in view.rows["tiny_train1_20261123_abcd"][2].value  # cut at 800 px: whole on hover
    view.open_model("tiny_train1_20261123_abcd")
    card = view.card
    text = "".join(getattr(c, "value", "") for c in shown(card) if isinstance(c, w.HTML))
    assert "Learning Rate 0.005" in text and "0.0036" in text and "Loss" in text
    assert "LEARNING_RATE" not in text
    card.job_button.click()
    assert opened == [job.id]
    # Save: merge to a Complete Model, in the chosen precision
    card.dtype.value = "bfloat16"
    card.save.click()
    save = jobs.list_jobs()[0]
    assert save.kind == "save" and save.params["DTYPE"] == "bfloat16" and "is queued" in card.save_note.value
    # a model another was made from is refused, in words, before "for good?" is asked
    models.add_model("tiny_train1_20261123_abcd_s_ef01", tmp_path / "merged", kind="complete",
                     parent="tiny_train1_20261123_abcd", method="SFT-Demo", meta={"dtype": "bfloat16"})
    card.delete.click()
    assert card.confirm.layout.display == "none"
    assert "tiny_train1_20261123_abcd" in [m.name for m in models.list_models()]
    assert "is the base of tiny_train1_20261123_abcd_s_ef01" in card.status.value
    assert "--force" not in card.status.value
    view.kind.value = "complete"
    assert view.card is None  # the Customized card does not stay beside the Complete list
    assert view.refresh_if_changed() is False and "tiny_train1_20261123_abcd_s_ef01" in view.rows
    view.open_model("tiny_train1_20261123_abcd_s_ef01")
    merged = view.card
    assert "tiny" in view.rows["tiny_train1_20261123_abcd_s_ef01"][1].value  # the base, through its parent
    assert merged.save_box.layout.display == "none"  # no Save offered for a Complete Model
    merged.delete.click()
    merged.confirm.yes.click()
    assert "tiny_train1_20261123_abcd_s_ef01" not in view.rows and "deleted" in view.status.value
    view.close()


def test_try_it_needs_a_prompt_and_shows_what_went_wrong(workspace, tmp_path):
    from deepe_widgets.ui.models_view import ModelCard

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    record = customized_model(job, "orphan", tmp_path, parent=None, method=None)  # no method: no inference stage
    card = ModelCard(record)
    card.try_it()
    assert "Write a prompt first" in card.try_status.value
    card.prompt.value = "Give the capital card for this country: France"
    card.try_it()  # outside a kernel's loop it runs here and now
    assert "could not answer" in card.answer.value and "no inference" in card.answer.value
    assert not card.ask.disabled and card.ask.description == "Try it"


def test_record_is_rendered_sanitised_follows_the_run_and_downloads(workspace):
    import base64

    import nbformat

    from deepe_widgets.ui import detail as detail_module
    from deepe_widgets.ui.detail import TAB_RECORD
    from deepe_widgets.ui.record import render_notebook

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# The record\n<script>alert('md')</script>"
                                              "<a href='javascript:alert(1)'>link</a>"),
                nbformat.v4.new_code_cell("print('step 1 loss 2.5')", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="step 1 loss 2.5\n"),
                    nbformat.v4.new_output("display_data", data={
                        "text/html": "<b onmouseover='alert(2)'>bold</b><img src=x onerror='alert(3)'>"
                                     "<iframe src='https://example.com'></iframe><script>alert(4)</script>",
                        "application/javascript": "alert(5)"})])]
    record = Path(job.run_dir) / "training.ipynb"
    nbformat.write(nb, record)
    body = render_notebook(record)
    assert "step 1 loss 2.5" in body and "The record" in body and "<b>bold</b>" in body
    for bad in ("<script", "alert(", "onmouseover", "onerror", "javascript:", "<iframe"):
        assert bad not in body, bad
    detail = TrainingDetail(job.id)
    detail.tabs.selected_index = TAB_RECORD  # rendered when opened
    assert "step 1 loss 2.5" in detail.record.body.value
    link = detail.record.download.value
    encoded = link.split("base64,")[1].split("'")[0]
    assert base64.b64decode(encoded) == record.read_bytes() and f"job{job.id}-training.ipynb" in link
    # the stage writes more: the tab follows
    nb.cells.append(nbformat.v4.new_code_cell("print('step 2')", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="step 2 loss 1.0\n")]))
    nbformat.write(nb, record)
    detail_module.RECORD_EVERY = 0.0
    try:
        detail.refresh()
    finally:
        detail_module.RECORD_EVERY = 2.0
    assert "step 2 loss 1.0" in detail.record.body.value


def test_opening_and_closing_views_leaves_no_widget_behind(workspace):
    a, b = job_with_losses(3.0, 2.0, 1.5), job_with_losses(2.5, 2.0, 1.0)

    async def rounds() -> list[int]:
        counts = []
        for _ in range(20):  # in a running loop, as in a kernel: the detail starts its poller
            detail = TrainingDetail(a.id)
            view = TrainingCompare([a.id, b.id])
            assert detail.figures and view.figures and detail._task is not None
            detail.close()
            view.close()
            await asyncio.sleep(0)
            assert detail._task.cancelled()
            counts.append(len(_instances))
        return counts

    counts = run_in_own_loop(rounds)
    assert counts[-1] == counts[0], counts


def test_every_live_view_polls_until_it_is_closed(workspace):
    from deepe_widgets.ui import ModelsView, TrainingList

    job = job_with_losses(2.0)

    async def scenario() -> None:  # in a running loop, as in a kernel: each view starts its poller
        views = [TrainingList(), MethodManager(admin=False), ModelsView(start_worker=False, admin=False),
                 TrainingDetail(job.id)]
        tasks = [view._task for view in views]
        await asyncio.sleep(0)
        assert all(task is not None and not task.done() for task in tasks)
        for view in views:
            assert "deepe-grid" in view.children[0].value  # the stylesheet (ui/style.css) comes first
            view.close()
        await asyncio.sleep(0)
        assert all(task.cancelled() for task in tasks)
        assert all(view.comm is None and view.connection.comm is None for view in views)

    run_in_own_loop(scenario)


def test_the_dashboard_closes_the_view_it_replaces(workspace):
    a, b = job_with_losses(3.0, 2.0), job_with_losses(2.0, 1.0)
    dash = Dashboard(admin=False, start_worker=False)
    counts = []
    for round_ in range(20):
        dash.show_details([a.id, b.id][round_ % 2])
        dash.show_compare([a.id, b.id])
        counts.append(len(_instances))
    assert counts[-1] == counts[0], counts
    [detail], [view] = dash.detail_area.children, dash.compare_area.children
    dash.close()
    assert detail.comm is None and all(figure.comm is None for figure in view.figures)
    assert len(_instances) < counts[0]


def test_a_live_view_says_reconnecting_while_the_database_is_away_then_catches_up(workspace, monkeypatch):
    job = job_with_losses(2.0)
    monkeypatch.setattr(TrainingDetail, "poll_seconds", 0.05)

    async def scenario() -> None:
        detail = TrainingDetail(job.id)  # in a running loop: its poller starts
        assert detail.connection in detail.children and detail.connection.layout.display == "none"
        # the database goes away: a folder that does not exist
        monkeypatch.setenv("DEEPE_DB_URL", f"sqlite:///{workspace}/gone/deepe.db")
        await until(lambda: "reconnecting" in detail.connection.value)
        assert detail.connection.layout.display is None and "Traceback" not in detail.connection.value
        assert not detail._task.done()  # still polling
        monkeypatch.delenv("DEEPE_DB_URL")  # it is back, and the trainer logged a step meanwhile
        sink = MetricSink(job.id)
        sink.add(2, {"loss": 1.0}, 0.2)
        sink.close()
        await until(lambda: list(detail.lines["loss"].x) == [1, 2])  # the next try after 1 s
        assert list(detail.lines["loss"].y) == [2.0, 1.0]
        assert detail.connection.value == "" and detail.connection.layout.display == "none"
        task = detail._task
        detail.close()
        await asyncio.sleep(0)
        assert task.cancelled()

    run_in_own_loop(scenario)


def test_a_training_that_succeeded_with_warnings_says_so_in_the_list(workspace):
    from deepe_widgets import store
    from deepe_widgets.ui import TrainingList

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    with store.get_engine().begin() as conn:
        conn.execute(store.Job.__table__.update().where(store.Job.__table__.c.id == job.id).values(
            status="succeeded", warnings=["the training ran 5 steps but logged no training metric"]))
    listing = TrainingList()
    try:
        listing.refresh()
        status_cell = listing._rows[job.id]["status"]
        assert "⚠ warning" in status_cell.value and "logged no training metric" in status_cell.value
    finally:
        listing.close()


def _set_provenance(job_id: int, provenance: dict) -> None:
    with store_session() as s:
        row = s.get(Job, job_id)
        row.provenance = provenance
        s.add(row)
        s.commit()


def test_rerun_queues_the_same_training_and_asks_when_something_changed(workspace, tmp_path):
    from deepe_widgets import datasets, provenance

    dash = Dashboard(admin=False, start_worker=False)
    job = job_with_losses(1.0, 0.9, LEARNING_RATE=0.002)
    data = Path(datasets.get_dataset("demo-sft").path)
    sft = methods.get_method("SFT-Demo")
    _set_provenance(job.id, {"dataset": {"sha256": provenance.sha256_file(data), "path": str(data)},
                             "stage_files": {s: {"sha256": i["sha256"], "file": i["file"]}
                                             for s, i in sft.stages.items()}})
    dash.show_details(job.id)
    [detail] = dash.detail_area.children
    assert detail.rerun.layout.display is None  # a training: Re-run beside Copy the Train
    detail.rerun.click()  # nothing changed: queued at once, linked to the first
    again = jobs.list_jobs()[0]
    assert again.id != job.id and again.copied_from == job.id and again.params == {"LEARNING_RATE": 0.002}
    assert again.provenance["rerun_of"] == job.id
    assert f"job {again.id}" in detail.rerun_note.value and detail.rerun_force.layout.display == "none"
    assert dash.model.last_submitted == again.id

    # The dataset changed since: nothing is queued; the question names what changed.
    _set_provenance(job.id, {**jobs.get_job(job.id).provenance, "dataset": {"sha256": "0" * 64, "path": str(data)}})
    detail.rerun.click()
    assert len(jobs.list_jobs()) == 2
    assert detail.rerun_force.layout.display is None
    assert "dataset file of demo-sft changed" in detail.rerun_force.children[0].value
    assert "--force" not in detail.rerun_force.children[0].value  # a button, not a CLI flag
    detail.rerun_force.no.click()
    assert len(jobs.list_jobs()) == 2 and detail.rerun_force.layout.display == "none"
    detail.rerun.click()
    detail.rerun_force.yes.click()  # "Re-run anyway"
    forced = jobs.list_jobs()[0]
    assert len(jobs.list_jobs()) == 3 and forced.copied_from == job.id
    assert "forced although" in detail.rerun_note.value
    dash.close()


def test_a_live_method_chooses_its_deployment_environment(workspace, tmp_path, monkeypatch):
    import json
    import sys

    from deepe_widgets import deployments

    # kernels from this test's folders only (another test may have registered a deepe-vllm kernel)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    manager = MethodManager(admin=True)
    form = manager.form
    manager.add_button.click()
    assert form.deploy_box.layout.display == "none"  # only a Live Model method asks
    form.lifecycle.value = "live"
    assert form.deploy_box.layout.display is None and form.deploy_env.value == "vllm"
    shown = {s for s, row in form.stage_rows.items() if row.layout.display != "none"}
    assert "deployment" not in shown and "training" in shown  # the built-in stage needs no file
    form.name.value = "live-sft"
    notebook = tmp_path / "train.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    form.files["training"].value = form.files["saving"].value = str(notebook)
    form.files["inference-customized"].value = form.files["inference-complete"].value = str(notebook)
    form.save.click()  # no deepe-vllm kernel yet: says how to get one, registers nothing
    assert "deepe envs create vllm" in form.errors["deploy_env"].value and form.save.disabled
    assert "live-sft" not in [m.name for m in methods.list_methods()]
    # once the environment's kernel exists, the method registers with the built-in deployment stage
    kernels = tmp_path / "jupyter" / "kernels" / "deepe-vllm"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vLLM (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    form.deploy_env.value = "custom"  # a custom file: its row appears and is required
    assert form.stage_rows["deployment"].layout.display is None
    assert "Give the deployment code file" in form.errors["deployment"].value
    form.deploy_env.value = "vllm"
    assert form.errors["deploy_env"].value == "" and not form.save.disabled
    form.save.click()
    method = methods.get_method("live-sft")
    assert method.lifecycle == "live" and method.stages["deployment"]["kernel"] == "deepe-vllm"
    assert method.stages["deployment"]["source"] == deployments.builtin_stage().file
    manager.close()


def test_record_sanitises_each_output_on_its_own_and_leaves_no_beacon_or_id(workspace):
    """An unclosed <style> or <script> in one output (or a markdown cell) hides nothing after it:
    the failing cell and the workbench's warnings still show; remote pictures and ids are gone."""
    import re

    import nbformat

    from deepe_widgets.ui.detail import TAB_RECORD

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    html_output = lambda markup: nbformat.v4.new_output("display_data", data={"text/html": markup})  # noqa: E731
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Setup\nnotes <style>.cell {display:none}"),
        nbformat.v4.new_code_cell("show_table()", outputs=[html_output("<div id='report'>a table<style>* {")]),
        nbformat.v4.new_code_cell("show_chart()", outputs=[html_output("<p>a chart<script>document.write('")]),
        nbformat.v4.new_code_cell("show_pictures()", outputs=[html_output(
            "<img src='https://tracker.example/open.png?who=1'><img src='//tracker.example/p.gif'>"
            "<img src='pics/local.png'><img src='data:image/png;base64,iVBORw0KGgo='>"
            "<span id='x' style='background-image:url(https://tracker.example/bg.png)'>captioned</span>"),
            html_output("<p>a validation picture</p><img src='data:image/png;base64," + "A" * 80_000 + "'>")]),
        nbformat.v4.new_code_cell("trainer.train()", outputs=[
            nbformat.v4.new_output("stream", name="stderr", text="UserWarning: padding side is left\n"),
            nbformat.v4.new_output("error", ename="ValueError", evalue="the loss is nan at step 3",
                                   traceback=["ValueError: the loss is nan at step 3"])]),
        nbformat.v4.new_markdown_cell("**Warnings from the workbench**\n\n- no metric was logged"),
    ]
    nbformat.write(nb, Path(job.run_dir) / "training.ipynb")
    detail = TrainingDetail(job.id)
    detail.tabs.selected_index = TAB_RECORD
    body = detail.record.body.value
    for later in ("a table", "a chart", "captioned", "show_pictures", "padding side is left",
                  "the loss is nan at step 3", "Warnings from the workbench", "no metric was logged"):
        assert later in body, later
    for gone in ("tracker.example", "pics/local.png", "<style", "<script", "document.write"):
        assert gone not in body, gone
    assert "data:image/png;base64,iVBORw0KGgo=" in body  # a picture the record holds stays
    assert "A" * 80_000 in body  # a large one too: pictures are not text to clip
    assert not re.search(r"\sid=", body)  # no element of a record takes an id of the page
    detail.close()


def test_a_large_record_shows_its_first_cells_and_says_where_the_rest_is(workspace):
    import nbformat

    from deepe_widgets.ui import record as record_module
    from deepe_widgets.ui.record import RecordView

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"print('part {i}')", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text=f"part {i} begins\n" + "x" * 20_000 + "\n")]) for i in range(1500)]
    nb.cells[0].outputs[0].text = "the first output\n" + "y" * 1_000_000 + "\nits last line\n"  # one huge output
    path = Path(job.run_dir) / "training.ipynb"
    nbformat.write(nb, path)
    assert path.stat().st_size > 25 * 2**20
    view = RecordView()
    view.set_paths([str(path)])
    started = time.monotonic()
    view.refresh()
    took = time.monotonic() - started
    body = view.body.value
    assert "the first output" in body and "its last line" in body and "characters left out here" in body
    assert "part 1 begins" in body and "part 1499 begins" not in body
    assert f"This record is {path.stat().st_size / 2**20:,.1f} MB" in body and str(path) in body
    assert len(body) < 1.5 * record_module.RECORD_BUDGET  # what reaches the page is bounded
    assert took < 30, took
    assert "too large to download here" in view.download.value
    os.utime(path)  # written again (a running stage), its start unchanged: not drawn again
    assert view.read_if_changed() is None
    view.close()


def test_a_50_mb_train_log_shows_its_end_and_says_where_the_rest_is(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    log = Path(job.run_dir) / "training.log"
    line = "[deepe] 2026-11-23 15:25:44 INFO    progress {}/1000000 loss 0.5 " + "." * 60 + "\n"
    with open(log, "w") as handle:
        for start in range(0, 500_000, 10_000):
            handle.write("".join(line.format(i) for i in range(start, start + 10_000)))
    assert log.stat().st_size > 50 * 2**20
    started = time.monotonic()
    detail = TrainingDetail(job.id)
    took = time.monotonic() - started
    shown_text = "".join(chunk.value for chunk in detail.log_lines.children)
    assert "progress 499999/1000000" in shown_text and "progress 1/1000000" not in shown_text
    assert "of earlier lines left out here: the whole log is" in shown_text and str(log) in shown_text
    assert len(shown_text) < 400_000 and took < 15, (len(shown_text), took)
    with open(log, "a") as handle:
        handle.write(line.format("next"))
    detail.refresh()
    assert "progress next/1000000" in detail.log_lines.children[-1].value
    detail.level.value = "ERROR"  # the note shows under every filter
    assert "lines left out" in detail.log_lines.children[0].value
    detail.close()


def test_admin_is_the_notebook_user_and_the_app_as_started(monkeypatch):
    from deepe_widgets.ui.state import page_is_admin

    monkeypatch.delenv("DEEPE_APP_METHOD_ADMIN", raising=False)
    monkeypatch.delenv("VOILA_KERNEL_ID", raising=False)
    monkeypatch.delenv("VOILA_BASE_URL", raising=False)
    assert page_is_admin()  # a JupyterLab cell: its user owns the workspace
    monkeypatch.setenv("VOILA_KERNEL_ID", "k1")
    assert not page_is_admin()  # some Voila page the app did not start
    monkeypatch.setenv("DEEPE_APP_METHOD_ADMIN", "1")
    assert page_is_admin()  # deepe app --allow-method-admin
    monkeypatch.setenv("DEEPE_APP_METHOD_ADMIN", "0")
    assert not page_is_admin()


def test_a_non_admin_page_gets_no_script_flags_and_submit_refuses_them(workspace):
    from deepe_widgets.methods import register_method

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    register_method("my-sft-script", {"training": (str(scripts / "sft_trl.py"), "python3")})
    admin = TrainingLauncher(start_worker=False, admin=True)
    admin.method.value, admin.base_model.value = "my-sft-script", "tiny"
    assert {"ARGS_TEMPLATE", "EXTRA_ARGS"} <= set(admin.fields)
    admin.close()
    launcher = TrainingLauncher(start_worker=False, admin=False)
    launcher.method.value, launcher.base_model.value = "my-sft-script", "tiny"
    assert not {"ARGS_TEMPLATE", "EXTRA_ARGS"} & set(launcher.fields)
    assert "LEARNING_RATE" in launcher.fields
    # a page that sends the field all the same (a crafted message) is refused at submit
    launcher.fields["EXTRA_ARGS"] = w.Text(value="--trust_remote_code true")
    launcher.defaults.setdefault("EXTRA_ARGS", "''")
    launcher.run.click()
    assert "EXTRA_ARGS" in launcher.status.value and "--allow-method-admin" in launcher.status.value
    assert jobs.list_jobs() == []
    launcher.close()
    dash = Dashboard(admin=False, start_worker=False)
    assert dash.launcher.admin is False and dash.models.admin is False
    dash.methods.ask_delete("my-sft-script")  # no button offers it; asked all the same: refused
    dash.methods.confirm.yes.click()
    assert "--allow-method-admin" in dash.methods.status.value and methods.get_method("my-sft-script")
    dash.close()


def test_a_non_admin_page_neither_deletes_nor_deploys_models(workspace, tmp_path):
    from deepe_widgets.ui import ModelsView

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    view = ModelsView(start_worker=False, admin=False)
    view.open_model("tiny_train1_20261123_abcd")
    card = view.card
    assert card.delete is None and card.confirm is None and card.deploy_button is None
    buttons = {b.description for b in shown(card) if isinstance(b, w.Button)}
    assert not {"Delete…", "Yes, delete it", "Deploy on vLLM"} & buttons
    card._delete_asked()  # asked all the same: refused
    assert "--allow-method-admin" in card.status.value
    card.deploy()
    assert "--allow-method-admin" in card.deploy_note.value
    assert "tiny_train1_20261123_abcd" in [m.name for m in models.list_models()]
    assert (tmp_path / "tiny_train1_20261123_abcd").is_dir() and len(jobs.list_jobs()) == 1
    view.close()


def test_the_dashboard_refuses_to_delete_a_model_a_queued_job_uses(workspace, tmp_path):
    from deepe_widgets.ui import ModelsView

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    save = jobs.submit_save("tiny_train1_20261123_abcd")  # queued: it reads the adapter
    view = ModelsView(start_worker=False, admin=True)
    view.open_model("tiny_train1_20261123_abcd")
    card = view.card
    card.delete.click()  # refused before "for good?" is asked
    assert f"is used by job {save.id}" in card.status.value and "cancel" in card.status.value
    assert card.confirm.layout.display == "none"
    assert (tmp_path / "tiny_train1_20261123_abcd").is_dir()
    assert "tiny_train1_20261123_abcd" in [m.name for m in models.list_models()]
    jobs.cancel_job(save.id)
    card.delete.click()
    card.confirm.yes.click()
    assert "deleted model tiny_train1_20261123_abcd" in view.status.value
    assert not (tmp_path / "tiny_train1_20261123_abcd").exists()  # a job's output: the workspace made it
    view.close()
