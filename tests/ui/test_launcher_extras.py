"""The Train form's Extra arguments box (Advanced): one key=value a line, checked as the user types
against the method's config class, with the closest valid key named; what passes reaches the job."""

from __future__ import annotations

import html

from deepe_widgets import jobs
from deepe_widgets.ui import TrainingLauncher


def _in_advanced(launcher, widget) -> bool:
    return any(box.children[0] is widget for box in launcher.advanced_box.children)


def test_the_extra_arguments_box_refuses_an_unknown_key_and_submits_the_rest(workspace):
    submitted = []
    launcher = TrainingLauncher(on_submitted=submitted.append, start_worker=False, admin=False)
    launcher.base_model.value = "tiny"
    box = launcher.extra_args
    assert launcher.method.value == "SFT-Demo" and box is not None and _in_advanced(launcher, box)
    assert box.description == "Extra arguments" and box.value == ""  # shown on a non-admin page: config fields
    box.value = "weight_decay=0.01\nlr_schedular_type=constant"
    shown = html.unescape(launcher.field_errors["EXTRA_ARGS"].value)
    assert "Unknown extra argument 'lr_schedular_type': SFTConfig has no such field; did you mean " \
           "'lr_scheduler_type'?" in shown
    assert launcher.run.disabled and "Extra" in launcher.summary.value
    launcher.run.click()
    assert submitted == [] and jobs.list_jobs() == []
    box.value = "weight_decay"
    assert "must look like key=value" in launcher.field_errors["EXTRA_ARGS"].value
    box.value = "weight_decay=0.01\nlr_scheduler_type=constant"
    assert launcher.field_errors["EXTRA_ARGS"].value == "" and not launcher.run.disabled
    launcher.run.click()
    [job] = submitted
    assert job.params == {"EXTRA_ARGS": {"weight_decay": 0.01, "lr_scheduler_type": "constant"}}
    # Copy the Train brings them back, a line each
    other = TrainingLauncher(start_worker=False)
    other.prefill(job)
    assert other.extra_args.value == "weight_decay=0.01\nlr_scheduler_type=constant"
    launcher.close()
    other.close()
