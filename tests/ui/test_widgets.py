"""The widgets in plain Python: buttons are clicked with `.click()`, no browser."""

import asyncio
import shutil
import threading
import time

import ipywidgets as w
import pytest
from ipywidgets.widgets.widget import _instances  # ipywidgets 8: every widget not yet closed

from deepe_widgets import jobs, methods, stagefiles
from deepe_widgets.runtime import MetricSink
from deepe_widgets.ui import Dashboard, MethodManager, TrainingCompare, TrainingDetail, TrainingLauncher
from deepe_widgets.ui.common import decimate
from deepe_widgets.ui.methods_view import MethodForm


def run_in_own_loop(coroutine_function):
    """Run a coroutine in an event loop of its own thread: Playwright's sync API (the browser tests,
    earlier in the same process) leaves a loop running in the main thread."""
    outcome = {}

    def target():
        try:
            outcome["value"] = asyncio.run(coroutine_function())
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


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


def test_method_form_follows_the_lifecycle_and_shows_errors_by_the_field(workspace, tmp_path):
    manager = MethodManager(admin=True)
    form = manager.form
    manager.add_button.click()
    assert form.layout.display is None
    shown = {s for s, row in form.stage_rows.items() if row.layout.display != "none"}
    assert shown == {"training", "inference-customized"}
    form.lifecycle.value = "live"
    shown = {s for s, row in form.stage_rows.items() if row.layout.display != "none"}
    assert shown == {"training", "saving", "deployment", "inference-customized", "inference-complete"}
    form.lifecycle.value = "customized"
    form.name.value = "mine"
    form.files["training"].value = str(tmp_path / "missing.ipynb")
    form.save.click()
    assert "does not exist" in form.errors["training"].value and "does not exist" in form.status.value
    assert "mine" not in [m.name for m in methods.list_methods()]
    notebook = tmp_path / "mine.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    form.files["training"].value = str(notebook)
    form.enabled["inference-customized"].value = True  # enabled without a file: refused
    form.save.click()
    assert "needs both a file and a kernel" in form.errors["inference-customized"].value
    form.enabled["inference-customized"].value = False
    form.save.click()
    assert "registered" in form.status.value and "mine" in [m.name for m in methods.list_methods()]
    assert "mine" in manager.table.children[-1].children[0].value


def test_delete_asks_first_and_is_not_offered_for_builtins(workspace, tmp_path):
    notebook = tmp_path / "mine.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    methods.register_method("mine", {"training": (notebook, "python3")})
    manager = MethodManager(admin=True)
    rows = {r.children[0].value: r for r in manager.table.children[1:]}
    assert len(rows["SFT-Demo"].children) == 5  # no delete control on a built-in
    delete, confirm, cancel = rows["mine"].children[5].children
    delete.click()
    assert "Delete method mine?" in manager.status.value and "mine" in [m.name for m in methods.list_methods()]
    confirm.click()
    assert "mine" not in [m.name for m in methods.list_methods()]
    readonly = MethodManager(admin=False)
    widgets = shown(readonly)
    assert not any(isinstance(x, MethodForm) for x in widgets)
    assert "Add New Method" not in [x.description for x in widgets if isinstance(x, w.Button)]
    assert any("registration and deletion are off" in getattr(x, "value", "") for x in widgets)
    assert all(len(r.children) == 5 for r in readonly.table.children[1:])


def test_method_table_follows_methods_registered_elsewhere(workspace, tmp_path):
    manager = MethodManager(admin=False)  # e.g. a Voila app started before the method was registered
    assert manager.refresh_if_changed() is False
    notebook = tmp_path / "later.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    methods.register_method("later", {"training": (notebook, "python3")})
    assert manager.refresh_if_changed() is True  # what its poller does every few seconds
    assert "later" in [row.children[0].value for row in manager.table.children[1:]]
    methods.delete_method("later")
    assert manager.refresh_if_changed() is True
    assert "later" not in [row.children[0].value for row in manager.table.children[1:]]


def test_launcher_submits_changed_parameters_and_reports_errors_by_field(workspace):
    submitted = []
    launcher = TrainingLauncher(on_submitted=submitted.append)
    launcher.method.value = "SFT-Demo"
    launcher.base_model.value = "tiny"
    launcher.dataset.value = "demo-sft"
    assert "instruction" in launcher.preview.value and "CAPITAL CARD" in launcher.preview.value
    assert {"EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "MAX_SEQ_LENGTH", "LORA_RANK", "SYSTEM_PROMPT",
            "SAVE_STEPS"} <= {n for n, t in launcher.fields.items() if any(
                box.children[0] is t for box in launcher.main_box.children)}
    launcher.fields["BATCH_SIZE"].value = "zero"
    launcher.run.click()
    assert "BATCH_SIZE must be a whole number" in launcher.field_errors["BATCH_SIZE"].value
    assert submitted == []
    launcher.fields["BATCH_SIZE"].value = "4"
    launcher.fields["EPOCHS"].value = "100"
    assert "outside the typical range" in launcher.warnings.value
    launcher.fields["EPOCHS"].value = "1"
    launcher.fields["LEARNING_RATE"].value = "0.005"
    jobs_before = len(jobs.list_jobs())
    launcher.run.click()
    assert len(jobs.list_jobs()) == jobs_before + 1 and "queued" in launcher.status.value
    job = submitted[0]
    assert job.params == {"LEARNING_RATE": 0.005}
    # Copy the Train fills the form with that job's configuration.
    other = TrainingLauncher(start_worker=False)
    other.prefill(job)
    assert other.method.value == "SFT-Demo" and other.fields["LEARNING_RATE"].value == "0.005"
    other.fields["LEARNING_RATE"].value = "0.001"
    other.run.click()
    copy = jobs.list_jobs()[0]
    assert copy.copied_from == job.id and copy.params == {"LEARNING_RATE": 0.001}
    assert f"a copy of job {job.id}" in other.status.value
    # a column the dataset lacks: the message sits under that chooser
    other.input_column.options = [*other.input_column.options, ("nope", "nope")]
    other.input_column.value, other.output_column.value = "nope", "output"
    other.run.click()
    assert "no column &#x27;nope&#x27;" in other.choice_errors["PromptInputColumn"].value


def test_detail_charts_every_metric_and_decimates(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    sink = MetricSink(job.id)
    for step in range(1, 5001):
        sink.add(step, {"loss": 5.0 - step / 1000, "learning_rate": 1e-4}, step / 100)
    sink.close()
    detail = TrainingDetail(job.id)
    assert set(detail.lines) == {"loss", "learning_rate"}
    loss = detail.lines["loss"]
    assert len(loss.x) <= 2001 and loss.x[-1] == 5000 and loss.y[-1] == pytest.approx(0.0)
    assert detail.figures["loss"].axes[0].label == "step"
    detail.x_axis.value = "epoch"
    assert detail.lines["loss"].x[-1] == pytest.approx(50.0) and detail.figures["loss"].axes[0].label == "epoch"
    assert detail.tabs.titles == ("Train Overview", "Evaluation Data", "Train Log")
    assert "Copy the Train" == detail.copy.description


def test_decimate_keeps_spikes_and_the_newest_point():
    xs = list(range(100_000))
    ys = [0.0] * 100_000
    ys[54_321] = 9.0
    dx, dy = decimate(xs, ys, 1000)
    assert len(dx) <= 1001 and 9.0 in dy and dx[-1] == 99_999


def test_compare_shows_differences_and_a_legend_per_job(workspace):
    a = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"learning_rate": "1e-3"})
    b = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"learning_rate": "5e-4"})
    for job, scale in ((a, 1.0), (b, 2.0)):
        sink = MetricSink(job.id)
        for step in range(1, 11):
            sink.add(step, {"loss": scale / step}, None)
        sink.close()
    view = TrainingCompare([a.id, b.id])
    assert "LEARNING_RATE" in view.config.value and "0.001" in view.config.value
    assert "MODEL_PATH" not in view.config.value
    [figure] = view.figures
    assert [m.labels for m in figure.marks] == [[f"job {a.id}"], [f"job {b.id}"]]
    assert all(m.display_legend for m in figure.marks)
    assert "0.1 / 0.1" in view.summary.value and "0.2 / 0.2" in view.summary.value


def test_overview_lists_every_parameter_and_totals_are_a_table(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"learning_rate": "5e-3"})
    sink = MetricSink(job.id)
    for step in range(1, 4):
        sink.add(step, {"loss": 3.0 / step}, None)
    sink.add(3, {"train_loss": 1.5, "total_flos": 1234.0}, None)
    sink.close()
    detail = TrainingDetail(job.id)
    overview = detail.overview.value
    assert "<b>LEARNING_RATE</b>" in overview and "0.005" in overview and "changed" in overview
    assert "LORA_RANK" in overview and "BATCH_SIZE" in overview  # defaults are shown too
    assert "MODEL_PATH" not in overview  # set by the platform per run
    assert set(detail.figures) == {"loss"}  # one value per run is no curve
    assert "train_loss" in detail.totals.value and "1234" in detail.totals.value


def test_launcher_column_choosers_start_on_the_standard_columns(workspace):
    launcher = TrainingLauncher()
    launcher.dataset.value = "demo-sft"
    assert launcher.input_column.value == "" and launcher.input_column.label.startswith("(standard")
    assert "instruction" in launcher.input_column.options[1]


def test_dashboard_views_share_one_model(workspace):
    from deepe_widgets.ui import Dashboard
    from deepe_widgets.ui.dashboard import TAB_COMPARE, TAB_TRAIN, TAB_TRAININGS

    dash = Dashboard(admin=False)
    assert dash.model.admin is False and dash.methods.admin is False
    launcher = dash.launcher
    launcher.method.value, launcher.base_model.value, launcher.dataset.value = "SFT-Demo", "tiny", "demo-sft"
    launcher.fields["LEARNING_RATE"].value = "0.002"
    jobs_before = len(jobs.list_jobs())
    for submitted in range(2):
        launcher.run.click()
    assert len(jobs.list_jobs()) == jobs_before + 2
    newest = jobs.list_jobs()[0]
    assert dash.model.last_submitted == newest.id and newest.id in dash.trainings.selected
    dash.trainings.selected[newest.id].value = True
    dash.trainings.details.click()
    assert dash.model.open_job == newest.id and dash.tabs.selected_index == TAB_TRAININGS
    [detail] = dash.detail_area.children
    detail.copy.click()  # "Copy the Train": the form, filled in
    assert dash.tabs.selected_index == TAB_TRAIN and launcher.fields["LEARNING_RATE"].value == "0.002"
    dash.trainings.details.click()
    dash.trainings.compare.click()  # one selected: asks for more
    assert "two or more" in dash.trainings.status.value and dash.model.compare_ids == []
    for box in dash.trainings.selected.values():
        box.value = True
    dash.trainings.compare.click()
    assert dash.tabs.selected_index == TAB_COMPARE and len(dash.model.compare_ids) == 2
    assert isinstance(dash.compare_area.children[0], TrainingCompare)


def test_trainings_list_pages_through_jobs_and_keeps_the_selection(workspace):
    from deepe_widgets.ui import TrainingList

    submitted = [jobs.submit_training("SFT-Demo", "tiny", "demo-sft") for _ in range(7)]
    sink = MetricSink(submitted[0].id)
    sink.add(2, {"loss": 1.25}, None)
    sink.add(1, {"loss": 2.5}, None)
    sink.close()
    listing = TrainingList(page_size=3)
    assert list(listing.selected) == [j.id for j in reversed(submitted)][:3]  # newest first
    assert "jobs 1–3 of 7" in listing.position.value and listing.newer.disabled and not listing.older.disabled
    listing.selected[submitted[-1].id].value = True
    listing.older.click()
    listing.older.click()
    assert list(listing.selected) == [submitted[0].id] and "jobs 7–7 of 7" in listing.position.value
    assert listing.older.disabled
    [row] = listing.rows.children[1:]
    assert row.children[-1].value == "1.2500"  # the last loss, not the first
    listing.selected[submitted[0].id].value = True
    assert listing.chosen() == sorted([submitted[0].id, submitted[-1].id])  # across pages
    listing.compare.click()
    assert "two or more" not in listing.status.value
    listing.newer.click()
    assert listing.selected[submitted[3].id].value is False and len(listing.rows.children) == 4
    listing.close()


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
        status_cell = listing._rows[job.id]["cells"][2]
        assert "⚠ warning" in status_cell.value and "logged no training metric" in status_cell.value
    finally:
        listing.close()
