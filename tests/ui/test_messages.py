"""Every message belongs to a state (issue 35): a job's message follows the job until it ends and says
how it ended; an old message goes with the next action. Plain Python widgets, no browser."""

from deepe_widgets import jobs, models
from deepe_widgets.store import JobStatus
from deepe_widgets.ui import ModelsView, TrainingDetail, TrainingList

from helpers import customized_model, run_in_own_loop


def _worker_finishes(job_id: int, status: str, error: str | None = None) -> None:
    """What a worker writes at a job's end (it holds the lease as "test-worker")."""
    assert jobs.finish_job(job_id, "test-worker", status, error=error)


def test_a_save_note_follows_its_job_to_the_complete_models_name_or_why_it_failed(workspace, tmp_path):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    view = ModelsView(start_worker=False)
    view.open_model("tiny_train1_20261123_abcd")
    card = view.card
    card.save.click()
    save = card.last_save_job
    assert f"Save job {save.id}" in card.save_note.value and "is queued" in card.save_note.value
    assert jobs.claim_next_job("test-worker", kinds=("save",)).id == save.id
    run_in_own_loop(view.poll_once)  # the view's own poller moves the note on
    assert "is running" in card.save_note.value and "is queued" not in card.save_note.value
    models.add_model("tiny_train1_20261123_abcd_s_ef01", tmp_path / "merged", kind="complete", job_id=save.id,
                     parent="tiny_train1_20261123_abcd", method="SFT-Demo")
    _worker_finishes(save.id, JobStatus.SUCCEEDED)
    run_in_own_loop(view.poll_once)
    assert "Saved" in card.save_note.value and "tiny_train1_20261123_abcd_s_ef01" in card.save_note.value
    assert "is running" not in card.save_note.value and card.save_settled
    # a second save that fails says why, in the note where it was queued
    card.save.click()
    failed = card.last_save_job
    assert failed.id != save.id and "is queued" in card.save_note.value
    assert jobs.claim_next_job("test-worker", kinds=("save",)).id == failed.id
    _worker_finishes(failed.id, JobStatus.FAILED, error="the base model folder is missing")
    run_in_own_loop(view.poll_once)
    assert f"Save job {failed.id}" in card.save_note.value and "failed" in card.save_note.value
    assert "the base model folder is missing" in card.save_note.value and "#cf222e" in card.save_note.value
    view.close()


def test_cancelling_goes_once_the_job_is_cancelled_and_the_ticks_go_with_the_cancel(workspace):
    running = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="running")
    assert jobs.claim_next_job("test-worker").id == running.id
    listing = TrainingList()
    listing.selected[running.id].value = True
    listing.cancel.click()
    assert listing.confirm.yes.description == "Yes, cancel it"  # one job asked about: "it", not "them"
    listing.confirm.yes.click()
    assert "running cancelling…" in listing.status.value
    assert listing.chosen() == [] and listing.selected[running.id].value is False  # unticked after Cancel
    run_in_own_loop(listing.poll_once)  # the worker has not stopped it yet: still cancelling
    assert "cancelling…" in listing.status.value
    _worker_finishes(running.id, JobStatus.CANCELLED, error="cancelled by the user")
    run_in_own_loop(listing.poll_once)
    assert "running cancelled" in listing.status.value and "cancelling" not in listing.status.value
    assert "cancelling" not in listing._rows[running.id]["status"].value
    listing.close()


def test_the_cancel_prompt_names_every_ticked_job_and_an_old_cancel_error_goes_on_refresh(workspace):
    finished = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="finished")
    jobs.cancel_job(finished.id)
    first = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="first")
    second = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="second")
    listing = TrainingList()
    for job in (finished, first, second):
        listing.selected[job.id].value = True
    listing.cancel.click()
    question = listing.confirm.children[0].value
    assert "these 2 trainings (first, second)" in question and "finished cancelled: nothing to cancel" in question
    assert listing.confirm.yes.description == "Yes, cancel them"
    # one of them ends while the question is open: Cancel then fails for it, in words
    assert jobs.claim_next_job("test-worker").id == first.id
    _worker_finishes(first.id, JobStatus.SUCCEEDED)
    listing.confirm.yes.click()
    assert "already succeeded" in listing.status.value and "deepe-error" in listing.status.value
    assert jobs.get_job(second.id).status == JobStatus.CANCELLED
    listing.reload.click()  # the next action: the old error goes
    assert listing.status.value == ""
    listing.close()


def test_a_save_job_is_listed_as_a_save_not_as_a_training_of_its_adapter(workspace, tmp_path):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    save = jobs.submit_save("tiny_train1_20261123_abcd")
    listing = TrainingList()
    name, _status, _method, base = (c.value for c in listing._rows[save.id]["cells"][:4])
    assert f"{save.name} (saves tiny_train1_20261123_abcd)" in name
    assert "tiny_train1_20261123_abcd" not in base and ">-<" in base
    assert ">tiny<" in listing._rows[job.id]["cells"][3].value  # a training keeps its base model
    listing.close()


def test_a_cancelled_job_is_not_shown_as_an_error_nor_promised_metrics(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    jobs.claim_next_job("test-worker")
    jobs.cancel_job(job.id)
    _worker_finishes(job.id, JobStatus.CANCELLED, error="cancelled by the user")
    detail = TrainingDetail(job.id, start_worker=False)
    assert "Cancelled" in detail.overview.value and "before its first step" in detail.overview.value
    assert "#cf222e" not in detail.overview.value and "Error" not in detail.overview.value
    assert "appear here" not in detail.no_data.value and "cancelled before" in detail.no_data.value
    detail.close()
    failed = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    jobs.claim_next_job("test-worker")
    _worker_finishes(failed.id, JobStatus.FAILED, error="CUDA out of memory")
    detail = TrainingDetail(failed.id, start_worker=False)
    assert "CUDA out of memory" in detail.overview.value and "#cf222e" in detail.overview.value
    assert "failed before" in detail.no_data.value
    detail.close()


def test_compare_shows_a_defaults_value_not_only_that_it_was_the_default(workspace):
    from deepe_widgets import methods
    from deepe_widgets import params as paramlib
    from deepe_widgets.ui import TrainingCompare

    default = paramlib.default_value(methods.get_method("SFT-Demo").default_params["LEARNING_RATE"])
    changed = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="changed", params={"learning_rate": "1e-3"})
    plain = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="plain")
    view = TrainingCompare([changed.id, plain.id])
    assert f"{default} (default)" in view.config.value and "0.001" in view.config.value
    view.show_all.value = True
    assert f"{default} (default)" in view.config.value and ">(default)<" not in view.config.value
    view.close()
