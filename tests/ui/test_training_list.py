"""Remove in the Trainings tab (issue 35): a failed or cancelled training leaves the list, asked first,
and one that cannot go says why before anything is asked. Plain Python widgets, no browser."""

from pathlib import Path

from deepe_widgets import jobs, metrics
from deepe_widgets.store import JobStatus
from deepe_widgets.ui import Dashboard, TrainingList

from helpers import customized_model


def test_remove_asks_first_then_takes_a_failed_training_off_the_list_with_its_folder(workspace):
    failed = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="broken")
    assert jobs.claim_next_job("test-worker").id == failed.id
    assert jobs.finish_job(failed.id, "test-worker", JobStatus.FAILED, error="no chat template")
    cancelled = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="stopped")
    jobs.cancel_job(cancelled.id)
    board = Dashboard(start_worker=False)
    listing = board.trainings
    board.show_details(failed.id)
    assert board.detail_area.children
    listing.remove.click()
    assert "Tick the trainings to remove first" in listing.status.value
    listing.selected[failed.id].value = True
    listing.remove.click()
    question = listing.confirm_remove.children[0].value
    assert "this training (broken (failed))" in question and "deleted for good" in question
    assert listing.confirm_remove.yes.description == "Yes, remove it"
    assert [j.id for j in jobs.list_jobs()] == [cancelled.id, failed.id]  # nothing gone before Yes
    listing.confirm_remove.yes.click()
    assert f"removed job {failed.id}" in listing.status.value
    assert [j.id for j in jobs.list_jobs()] == [cancelled.id] and not Path(failed.run_dir).exists()
    assert set(listing._rows) == {cancelled.id} and listing.chosen() == []
    assert board.detail_area.children == ()  # the details of the removed job closed with it
    board.close()


def test_remove_names_what_cannot_go_before_asking(workspace, tmp_path):
    running = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="busy")
    assert jobs.claim_next_job("test-worker").id == running.id
    trained = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="made")
    jobs.cancel_job(trained.id)
    customized_model(trained, "tiny_made_20261123_abcd", tmp_path)
    listing = TrainingList()
    for job in (running, trained):
        listing.selected[job.id].value = True
    listing.remove.click()
    assert listing.confirm_remove.layout.display == "none"  # refused in words, nothing asked
    assert "is running; only a finished job can be removed" in listing.status.value
    assert "made the model tiny_made_20261123_abcd" in listing.status.value
    assert "deepe-error" in listing.status.value and len(jobs.list_jobs()) == 2
    # with one that can go ticked too, the question names it alone and the refusals stay beside it
    spare = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="spare")
    jobs.cancel_job(spare.id)
    listing.refresh()
    listing.selected[spare.id].value = True
    listing.remove.click()
    assert "(spare (cancelled))" in listing.confirm_remove.children[0].value
    assert "Not removed:" in listing.status.value and "busy" in listing.status.value
    listing.confirm_remove.yes.click()
    assert {j.id for j in jobs.list_jobs()} == {running.id, trained.id} and metrics.metrics_for(spare.id) == []
    listing.close()


def test_comparing_trainings_without_curves_says_so_instead_of_an_empty_space(workspace):
    from deepe_widgets.ui.compare_view import TrainingCompare

    first = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="first")
    second = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", name="second")
    for job in (first, second):
        jobs.cancel_job(job.id)
    view = TrainingCompare([first.id, second.id])
    assert view.figures == [] and view.legend.layout.display == "none"
    assert any("No curves to overlay" in getattr(c, "value", "") for c in view.children[-3].children)
    view.close()
