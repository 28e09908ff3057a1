"""The Models tab's card (issue 35): base models listed and tried before any training, with the
answer's length and temperature; an empty answer says why; Deploy only where vLLM is installed; a
model others depend on refused before "for good?" is asked. Plain Python widgets, no browser."""

import json
import sys
from pathlib import Path

import pytest

from deepe_widgets import jobs, models
from deepe_widgets.store import ModelKind
from deepe_widgets.ui import ModelsView
from deepe_widgets.ui.models_view import ModelCard

from helpers import customized_model


def test_a_base_model_is_listed_and_tried_with_the_length_and_temperature_given(workspace):
    view = ModelsView(start_worker=False, admin=True)
    view.kind.value = ModelKind.BASE
    assert "tiny" in view.rows and "try, evaluate" in view.rows["tiny"][-1].tooltip
    view.open_model("tiny")
    card = view.card
    assert card.delete is None and card.save_box.layout.display == "none"  # listed as a base, not deletable here
    card._delete_asked()
    assert "is a base model: it is not deleted here" in card.status.value and models.get_model("tiny")
    assert (card.max_new_tokens.value, card.temperature.value) == (64, 0.0)  # the inference stage's defaults
    assert card.max_new_tokens.layout.display is None and card.temperature.layout.display is None
    card.max_new_tokens.value, card.temperature.value = 3, 0.7
    card.prompt.value = "Give the capital card for this country: France"
    card.try_it()  # outside a kernel's loop it runs here and now
    [answer] = card.last_try["tiny"]["responses"]
    assert answer["new_tokens"] <= 3 and answer["ended"] in ("stop", "length")
    record = json.loads(Path(card.last_try["tiny"]["record"]).read_text())
    parameters = "".join(next(c["source"] for c in record["cells"] if "injected-parameters" in
                              c["metadata"].get("tags", [])))
    assert "MAX_NEW_TOKENS = 3" in parameters and "TEMPERATURE = 0.7" in parameters
    assert "answered in" in card.try_status.value and "answering" not in card.answer.value
    assert card.base_column.layout.display == "none"  # a base model answers alone
    view.close()


def test_an_empty_answer_says_why_in_words(workspace, tmp_path):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    card = ModelCard(customized_model(job, "tiny_train1_20261123_abcd", tmp_path), start_worker=False)
    stopped = card._answer_of({"responses": [{"prompt": "hi", "response": "", "new_tokens": 1, "ended": "stop",
                                              "first_token": "<|im_end|>"}]})
    assert "the model stopped at once: it produced its end-of-turn token (&lt;|im_end|&gt;) first" in stopped
    ran_out = card._answer_of({"responses": [{"prompt": "hi", "response": " ", "new_tokens": 8,
                                              "ended": "length"}]})
    assert "used all 8 new tokens" in ran_out and "allow more new tokens" in ran_out
    card.close()


def test_deploy_is_offered_only_where_the_vllm_environment_is(workspace, tmp_path, monkeypatch):
    from deepe_widgets import envs

    monkeypatch.setenv("DEEPE_ENVS_DIR", str(tmp_path / "envs"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    record = customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    card = ModelCard(record, start_worker=False, admin=True)
    assert card.deploy_button.disabled
    assert "no vllm deployment environment" in card.deploy_note.value and "deepe envs create vllm" in \
        card.deploy_note.value
    card.close()
    # a finished environment (its python, its marker, its kernel): Deploy is offered
    python = envs.env_python("vllm")
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    (envs.envs_dir() / "vllm" / envs.MARKER).write_text(json.dumps({"engine": "vllm", "device": "cpu"}))
    kernel = tmp_path / "jupyter-data" / "kernels" / "deepe-vllm"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": [str(python), "-m", "ipykernel_launcher", "-f",
                                                             "{connection_file}"], "display_name": "vLLM",
                                                    "language": "python"}))
    card = ModelCard(record, start_worker=False, admin=True)
    assert not card.deploy_button.disabled and card.deploy_note.value == ""
    card.close()


def test_a_model_others_depend_on_is_refused_before_the_question(workspace, tmp_path):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    customized_model(job, "tiny_train1_20261123_abcd", tmp_path)
    models.add_model("tiny_train1_20261123_abcd_s_ef01", tmp_path / "merged", kind="complete",
                     parent="tiny_train1_20261123_abcd", method="SFT-Demo")
    view = ModelsView(start_worker=False, admin=True)
    view.open_model("tiny_train1_20261123_abcd")
    card = view.card
    card.delete.click()
    assert card.confirm.layout.display == "none"  # never asked "for good?"
    assert "is the base of tiny_train1_20261123_abcd_s_ef01" in card.status.value
    assert "deepe-error" in card.status.value and "--force" not in card.status.value
    models.delete_model("tiny_train1_20261123_abcd_s_ef01")
    card.delete.click()  # nothing depends on it now: asked first
    assert card.confirm.layout.display is None and "for good?" in card.confirm.children[0].value
    assert card.status.value == ""
    view.close()


def test_records_read_at_once_are_each_shown(tmp_path):
    """Try it's answer arrives as its record is opened: two renders at once, each whole (bleach's
    shared cleaner used to break under them, and "The record cannot be shown yet" stayed)."""
    import threading

    import nbformat

    from deepe_widgets.ui.record import render_notebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Inference <b>record</b>")] + [nbformat.v4.new_code_cell(
        f"answer = ask('France', {n})", outputs=[nbformat.v4.new_output("display_data", data={
            "text/html": "<table><tr><td style='color:red'>Paris</td></tr></table>"}),
            nbformat.v4.new_output("stream", text="> France\nParis\n" * 20)]) for n in range(40)]
    path = tmp_path / "inference.ipynb"
    nbformat.write(nb, path)
    failures, bodies = [], []

    def render_a_few():
        for _ in range(4):
            try:
                bodies.append(render_notebook(path))
            except Exception as exc:  # noqa: BLE001 - any failure is the defect
                failures.append(repr(exc))

    threads = [threading.Thread(target=render_a_few) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(bodies) == 12 and all("Paris" in body for body in bodies)


def _tree(widget) -> list:
    """Every widget shown inside `widget`."""
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += _tree(child)
    return found


def test_a_reward_model_is_tried_with_an_answer_and_offers_no_deploy_or_suite(workspace, tmp_path):
    """A reward model's card (its type's `scores_answers`): an Answer box beside the prompt, no base
    column (its base has no score head), the score in words; Deploy and Evaluate say why not."""
    from deepe_widgets import evaluations
    from deepe_widgets.errors import DeepeError

    job = jobs.submit_training("Reward-Demo", "tiny", "demo-dpo")
    record = customized_model(job, "tiny_train1_20261207_beef", tmp_path, method="Reward-Demo")
    card = ModelCard(record, start_worker=False, admin=True)
    assert card.answer_given in _tree(card) and card.answer_given.layout.display is None
    assert card.base_column.layout.display == "none"
    assert card.max_new_tokens.layout.display == "none"  # it generates nothing: no answer length
    card.prompt.value = "Give the capital card for this country: France"
    assert card.try_it() is None and "Write the answer to score too" in card.try_status.value
    shown = card._answer_of({"responses": [{"prompt": "p", "answer": "a", "score": 0.4412,
                                            "response": "score +0.4412 for the answer: a"}]})
    assert "score 0.44: higher means the reward model prefers this answer" in shown
    assert card.deploy_button is None and "generates none, and vLLM serves generation" in card.deploy_note.value
    evaluate_words = card.evaluate_box.children[0].value
    assert "evaluated on its held-out pairs while it trains" in evaluate_words and "eval_margin" in evaluate_words
    card.close()
    with pytest.raises(DeepeError, match="has no evaluation suite: a reward model is evaluated on its held-out pairs"):
        evaluations.evaluate(record.name)
    assert [j.kind for j in jobs.list_jobs()] == ["train"]  # nothing queued
    # a chat model's card is as it was: no Answer box, its base beside it
    chat = ModelCard(customized_model(jobs.submit_training("SFT-Demo", "tiny", "demo-sft"),
                                      "tiny_train2_20261207_cafe", tmp_path), start_worker=False, admin=True)
    assert chat.answer_given not in _tree(chat) and chat.base_column.layout.display is None
    chat.close()
