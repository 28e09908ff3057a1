"""Deleting models: only folders the workspace made go, and never a model in use (CLI and core)."""

import json
import shutil
from pathlib import Path

import pytest

from deepe_widgets import deployments, jobs, models
from deepe_widgets.errors import DeepeError
from deepe_widgets.store import ModelKind

from helpers import BOTH_BACKENDS, deepe


def user_folder(where: Path, tiny_model_dir: Path) -> Path:
    """A model folder of the user's own (a copy of the tiny model), wherever they keep it."""
    shutil.copytree(tiny_model_dir, where)
    return where


def test_a_folder_registered_by_hand_under_deepe_home_survives_delete(workspace, tiny_model_dir):
    mine = user_folder(workspace / "my-models" / "llama-mine", tiny_model_dir)
    deepe("models", "add", "llama-mine", str(mine))
    shown = json.loads(deepe("models", "show", "llama-mine", "--json").stdout)
    assert shown["meta"]["owned"] is False
    done = deepe("models", "delete", "llama-mine")
    assert "unregistered model llama-mine" in done.stdout and "was kept" in done.stdout and str(mine) in done.stdout
    assert (mine / "config.json").is_file()  # the user's folder, untouched
    assert "llama-mine" not in [m.name for m in models.list_models()]


def test_a_row_from_before_ownership_keeps_a_users_folder(workspace, tiny_model_dir):
    """A model registered before ownership was recorded (no meta["owned"]) under DEEPE_HOME: kept."""
    from deepe_widgets import store

    mine = user_folder(workspace / "models" / "older", tiny_model_dir)
    with store.session() as s:
        s.add(store.ModelRecord(name="older", path=str(mine), kind=ModelKind.BASE, meta={}))
    assert models.delete_model("older") == mine and mine.is_dir()


def test_a_jobs_output_is_owned_and_goes_with_its_model(workspace, tmp_path):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    output = Path(job.run_dir) / "output"
    output.mkdir()
    (output / "adapter_config.json").write_text("{}")
    models.add_model("tiny_t_20261207_abcd", output, kind=ModelKind.CUSTOMIZED, job_id=job.id, parent="tiny")
    jobs.cancel_job(job.id)  # the job that made it is no longer queued
    done = deepe("models", "delete", "tiny_t_20261207_abcd")
    assert done.stdout.strip() == "deleted model tiny_t_20261207_abcd" and not output.exists()


@BOTH_BACKENDS
def test_a_model_a_queued_job_uses_cannot_be_deleted(workspace, tiny_model_dir):
    mine = user_folder(workspace / "my-models" / "base2", tiny_model_dir)
    models.add_model("base2", mine)
    job = jobs.submit_training("SFT-Demo", "base2", "demo-sft")
    refused = deepe("models", "delete", "base2", check=False)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert f"is used by job {job.id} (train, queued)" in lines[0] and f"deepe jobs cancel {job.id}" in lines[0]
    assert "base2" in [m.name for m in models.list_models()]
    jobs.cancel_job(job.id)
    assert models.delete_model("base2") == mine and mine.is_dir()


def test_a_live_model_and_the_model_it_serves_cannot_be_deleted(workspace, tmp_path):
    served = tmp_path / "adapter"
    served.mkdir()
    models.add_model("served", served, kind=ModelKind.CUSTOMIZED, parent="tiny", owned=True)
    models.add_model("served_l_ab12", tmp_path / "live", kind=ModelKind.LIVE, parent="served", owned=True,
                     meta={"status": "live"})
    refused = deepe("models", "delete", "served_l_ab12", check=False)
    assert refused.returncode == 2 and "is live; stop it first" in refused.stderr
    refused = deepe("models", "delete", "served", "--force", check=False)
    assert refused.returncode == 2 and "is served by live model served_l_ab12" in refused.stderr
    assert served.is_dir()


def test_a_live_models_stored_state_keeps_its_shape(workspace, tmp_path):
    """A Live Model's meta, as a database holds it, reads into `LiveState` and writes back key for
    key; a stop through it changes only what it sets, and `deepe deployments show --json` reads it."""
    stored = {"status": "starting", "engine": "vllm", "host": "127.0.0.1", "port": 8011,
              "url": "http://127.0.0.1:8011", "served_name": "tiny_l_ab12", "deployed_model": "tiny",
              "deployed_kind": "complete", "base_path": "/models/tiny", "adapter_path": "", "lora": False,
              "shared_with": None, "server_host": None, "api_key_file": None, "job_id": None, "pid": None,
              "error": None, "submitted_at": 1.5}
    state = deployments.LiveState.from_meta({**stored, "owned": True, "from_a_newer_version": [1]})
    assert state.status is deployments.LiveStatus.STARTING and state.port == 8011 and state.serving
    assert json.dumps(state.to_meta()) == json.dumps({**stored, "owned": True, "from_a_newer_version": [1]})

    models.add_model("tiny_l_ab12", tmp_path / "live", kind=ModelKind.LIVE, parent="tiny", owned=True, meta=stored)
    deployments._update("tiny_l_ab12", expect=deployments.LiveStatus.STARTING,
                        status=deployments.LiveStatus.STOPPED, stopped_at=2.5, error="cancelled")
    assert models.get_model("tiny_l_ab12").meta == {**stored, "owned": True, "status": "stopped",
                                                    "stopped_at": 2.5, "error": "cancelled"}
    shown = json.loads(deepe("deployments", "show", "tiny_l_ab12", "--json").stdout)
    assert (shown["status"], shown["url"], shown["served_name"], shown["stopped_at"], shown["command"]) == \
        ("stopped", "http://127.0.0.1:8011", "tiny_l_ab12", 2.5, None)
    assert not deployments.LiveState.from_meta(models.get_model("tiny_l_ab12").meta).serving
    models.delete_model("tiny_l_ab12")  # stopped: it may go


def test_the_model_card_and_inference_walk_one_lineage(workspace, tmp_path, tiny_model_dir):
    """A Complete Model's card and its inference both find the base and the dataset through the
    Customized Model it merged; with that one deleted, the card still shows and inference says why not."""
    from sqlmodel import select

    from deepe_widgets import datasets, inference, store
    from deepe_widgets.ui.models_view import model_card

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "merged").mkdir()
    models.add_model("tiny_t_20261207_abcd", tmp_path / "adapter", kind=ModelKind.CUSTOMIZED, job_id=job.id,
                     parent="tiny", method="SFT-Demo", meta={"dataset": "demo-sft", "metrics": {}})
    complete = models.add_model("tiny_t_20261207_abcd_s_ef01", tmp_path / "merged", kind=ModelKind.COMPLETE,
                                parent="tiny_t_20261207_abcd", method="SFT-Demo")
    assert [m.name for m in models.lineage(complete)] == ["tiny_t_20261207_abcd_s_ef01", "tiny_t_20261207_abcd",
                                                          "tiny"]
    assert (model_card(complete)["base_model"], model_card(complete)["dataset"]) == ("tiny", "demo-sft")
    assert inference._root_and_dataset(complete) == (str(tiny_model_dir), datasets.get_dataset("demo-sft").path)
    with store.session() as s:
        s.delete(s.exec(select(store.ModelRecord).where(store.ModelRecord.name == "tiny_t_20261207_abcd")).one())
    assert [m.name for m in models.lineage(complete)] == ["tiny_t_20261207_abcd_s_ef01"]
    assert model_card(complete)["base_model"] == "tiny_t_20261207_abcd"  # what it was merged from, by name
    with pytest.raises(DeepeError, match="which is no longer registered"):
        inference._root_and_dataset(complete)
