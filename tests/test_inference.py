"""inference: trying a model right away; what is refused before any kernel starts, and one real answer."""

from __future__ import annotations

import json

import pytest

from deepe_widgets import deployments, inference, store
from deepe_widgets.errors import DeepeError, NotFound


@pytest.mark.parametrize("prompts", [[], [""], ["   "], ["fine", ""]])
def test_an_empty_prompt_is_refused(home, prompts):
    with pytest.raises(DeepeError, match="give at least one non-empty prompt") as raised:
        inference.infer("tiny", prompts)
    assert raised.value.field == "prompt"


def test_an_unknown_model_is_refused(home):
    with pytest.raises(NotFound, match="no-such-model"):
        inference.infer("no-such-model", ["hello"])


def test_a_live_model_that_is_not_live_names_the_deploy_command(home, tmp_path):
    with store.session() as s:
        s.add(store.ModelRecord(name="tiny-live", kind=store.ModelKind.LIVE, path=str(tmp_path), parent="tiny",
                                meta={"status": deployments.LiveStatus.FAILED}))
    with pytest.raises(DeepeError, match="live model 'tiny-live' is failed, not live; deploy tiny again with: "
                                         "deepe deploy tiny") as raised:
        inference.infer("tiny-live", ["hello"])
    assert raised.value.field == "model"


def test_a_saved_model_whose_method_has_no_inference_stage_is_refused(home, tmp_path):
    with store.session() as s:
        s.add(store.Method(name="train-only", stages={"training": {"file": str(tmp_path / "t.ipynb"),
                                                                   "kernel": "python3"}}))
        s.add(store.ModelRecord(name="tuned", kind=store.ModelKind.CUSTOMIZED, path=str(tmp_path), parent="tiny",
                                method="train-only"))
    with pytest.raises(DeepeError, match="has no inference-customized function"):
        inference.infer("tuned", ["hello"])


def test_an_image_given_to_a_text_model_is_refused(workspace, tmp_path):
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert inference.takes_image("tiny") is False
    with pytest.raises(DeepeError, match="model 'tiny' does not take an image") as raised:
        inference.infer("tiny", ["what is this?"], image=str(picture))
    assert raised.value.field == "image"


def test_the_tiny_base_model_answers_and_its_record_is_kept(workspace):
    answered = inference.infer("tiny", ["hello", "what is 2+2?"], overrides={"max_new_tokens": 4})
    assert answered["error"] is None, answered
    assert (answered["model"], answered["kind"], answered["stage"]) == ("tiny", "base", "inference-complete")
    # one answer per prompt, in order (a random tiny model may well answer with nothing)
    assert [r["prompt"] for r in answered["responses"]] == ["hello", "what is 2+2?"]
    assert all(isinstance(r["response"], str) for r in answered["responses"])
    with open(answered["record"]) as handle:
        record = json.load(handle)
    assert record["metadata"]["deepe"]["status"] == "succeeded"
    assert record["metadata"]["deepe"]["parameters"]["PROMPTS"] == ["hello", "what is 2+2?"]
    assert record["metadata"]["deepe"]["parameters"]["MAX_NEW_TOKENS"] == 4  # the override reached the notebook
