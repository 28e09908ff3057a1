"""Re-running a record: provenance in the record and on the job, the same losses step by step on
CPU, and a refusal that names what changed (dataset file, stage file, base model) unless forced."""

import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import compare, datasets, jobs, methods, metrics, models, provenance, reruns, runner, stagefiles
from deepe_widgets.errors import DeepeError
from deepe_widgets.runtime import MetricSink

from helpers import FAST_PARAMS, deepe, deepe_json


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _losses(job_id: int) -> dict[int, float]:
    return dict(zip(*metrics.metric_series([job_id])[job_id]["loss"]))


@pytest.mark.training
def test_a_rerun_gives_the_same_losses_and_is_refused_once_the_dataset_changed(workspace, tmp_path):
    data = tmp_path / "cards.jsonl"
    shutil.copy(datasets.get_dataset("demo-sft").path, data)
    deepe("datasets", "add", "cards", str(data))
    first = deepe_json("train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "cards",
                       *FAST_PARAMS, "--wait", "--json")
    assert first["status"] == "succeeded", first["error"]
    # peft reading transformers' deprecated attribute is not the user's to fix: not in their log
    assert "is_gradient_checkpointing" not in (Path(first["run_dir"]) / "training.log").read_text()
    # The record and the job hold what reproduces the run; the seed is recorded though defaulted.
    recorded = jobs.get_job(first["id"]).provenance
    assert recorded["seed"] == 42 and recorded["seed_given"] is False and recorded["parameters"]["SEED"] == 42
    assert recorded["dataset"]["sha256"] == _sha256(data)
    sft = methods.get_method("SFT-Demo")
    assert {s: i["sha256"] for s, i in recorded["stage_files"].items()} == {
        s: i["sha256"] for s, i in sft.stages.items()}
    assert recorded["base_model"]["sha256"] and "model.safetensors" in recorded["base_model"]["files"]
    assert recorded["device"]["type"] in ("cpu", "cuda", "mps") and recorded["device"]["how"]
    assert recorded["packages"]["torch"] == recorded["device"]["torch"]
    record = nbformat.read(Path(first["run_dir"]) / "training.ipynb", as_version=4)
    assert record.metadata["deepe"]["provenance"]["dataset"] == recorded["dataset"]
    assert record.metadata["deepe"]["provenance"]["device"] == recorded["device"]

    again = deepe_json("jobs", "rerun", str(first["id"]), "--wait", "--json")
    assert again["status"] == "succeeded", again["error"]
    assert again["copied_from"] == first["id"] and again["params"] == first["params"]
    assert jobs.get_job(again["id"]).provenance["rerun_of"] == first["id"]
    # The same loss at every step (the seed is set before the LoRA weights are made).
    before, after = _losses(first["id"]), _losses(again["id"])
    assert sorted(before) == sorted(after) == list(range(1, 7))
    assert max(abs(before[s] - after[s]) for s in before) <= 1e-4, (before, after)
    gap = compare.compare_jobs([first["id"], again["id"]])["max_abs_diff"]["loss"]
    assert gap["steps"] == 6 and gap["value"] <= 1e-4
    shown = deepe("compare", str(first["id"]), str(again["id"])).stdout
    assert "MAX |DIFF|" in shown and "STEPS COMPARED" in shown

    # The dataset file is rewritten (same rows, another order): refused, saying so in one line.
    rows = data.read_text().splitlines()
    data.write_text("\n".join(reversed(rows)) + "\n")
    refused = deepe("jobs", "rerun", str(first["id"]), check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    message = refused.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: job ")
    assert "the dataset file of cards changed" in message and _sha256(data)[:12] in message and "--force" in message
    forced = deepe_json("jobs", "rerun", str(first["id"]), "--force", "--json")
    assert forced["copied_from"] == first["id"] and forced["status"] in ("queued", "running")
    jobs.cancel_job(forced["id"])  # it was queued; its training is not what this test measures


def test_fingerprint_of_a_model_folder_names_what_changed(tmp_path):
    folder = tmp_path / "model"
    (folder / ".cache").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "tokenizer.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(bytes(3 * provenance.SAMPLE_BYTES))
    before = provenance.model_fingerprint(folder)
    assert set(before["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}
    assert before["files"]["config.json"] == [18, _sha256(folder / "config.json")]
    (folder / ".cache" / "download.lock").write_text("bookkeeping, not the model")
    assert provenance.model_fingerprint(folder)["sha256"] == before["sha256"]
    with open(weights, "r+b") as handle:  # the last byte of the weights
        handle.seek(-1, 2)
        handle.write(b"\x01")
    (folder / "config.json").write_text('{"hidden_size": 9}')
    after = provenance.model_fingerprint(folder)
    assert after["sha256"] != before["sha256"]
    assert provenance.changed_files(before, after) == ["config.json", "model.safetensors"]
    (folder / "model-00002.safetensors").write_bytes(b"x")
    assert provenance.changed_files(after, provenance.model_fingerprint(folder)) == ["model-00002.safetensors added"]


def test_the_device_is_read_from_the_torch_build_and_the_visible_gpus(monkeypatch):
    cpu_build = provenance.probe_device("2.13.0+cpu")
    assert cpu_build["type"] == "cpu" and "CPU build" in cpu_build["how"] and cpu_build["cpus"] >= 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert provenance.probe_device("2.13.0")["how"] == "CUDA_VISIBLE_DEVICES hides every GPU"
    assert provenance.probe_device(None)["type"] == "cpu"
    assert provenance.describe_device(cpu_build).startswith("cpu: ")


def _started_job(method: str, base_model: str = "tiny", dataset: str = "demo-sft"):
    """A queued job given the provenance a worker records when its stage starts."""
    job = jobs.submit_training(method, base_model, dataset, params={"max_steps": "2"})
    runner._store_provenance(job.id, runner.job_provenance(job))
    return jobs.get_job(job.id)


def test_rerun_is_refused_when_a_stage_file_or_the_base_model_changed(workspace, tiny_model_dir, tmp_path):
    notebook = tmp_path / "my_method.ipynb"
    shutil.copy(stagefiles.template_notebook_path(), notebook)
    methods.register_method("mine", {"training": (str(notebook), "python3")})
    model_copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model_dir, model_copy)
    models.add_model("tiny-copy", model_copy)
    job = _started_job("mine", "tiny-copy")
    assert reruns.changes_since(job) == []
    assert job.provenance["seed"] == 42  # the template's SEED, recorded though not given

    nb = nbformat.read(notebook, as_version=4)
    nb.cells[3].source = nb.cells[3].source.replace("LoRA fine-tuning", "LoRA fine tuning")
    nbformat.write(nb, notebook)
    methods.register_method("mine", {"training": (str(notebook), "python3")}, replace=True)
    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    with pytest.raises(DeepeError) as refused:
        reruns.rerun_job(job.id)
    message = refused.value.message
    assert f"job {job.id} cannot be re-run as it ran" in message
    assert "the training stage file my_method.ipynb of method mine changed" in message
    assert "the base model tiny-copy changed (config.json)" in message and "--force" in message
    forced, notes = reruns.rerun_job(job.id, force=True)
    assert forced.copied_from == job.id and forced.provenance == {"rerun_of": job.id}
    assert any("the base model tiny-copy changed" in note for note in notes)


def test_rerun_keeps_the_seed_the_first_run_had(workspace):
    job = _started_job("SFT-Demo")
    same, _notes = reruns.rerun_job(job.id)
    assert "SEED" not in same.params  # the default it ran with is still the default
    runner._store_provenance(job.id, {"seed": 7})  # as if it ran when the default seed was 7
    pinned, _notes = reruns.rerun_job(job.id)
    assert pinned.params["SEED"] == 7 and pinned.params["MAX_STEPS"] == 2


def test_a_job_without_provenance_is_rerun_only_when_forced(workspace):
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    with pytest.raises(DeepeError, match="has no provenance.*it has not started yet"):
        reruns.rerun_job(job.id)
    forced, notes = reruns.rerun_job(job.id, force=True)
    assert forced.copied_from == job.id and "not checked" in notes[0]


def test_compare_of_two_jobs_reports_the_largest_difference_at_common_steps(workspace):
    ids = []
    for index, values in enumerate(({1: 3.0, 2: 2.0, 3: 1.0}, {1: 3.0, 2: 2.5, 4: 9.0})):
        job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
        sink = MetricSink(job.id)
        for step, loss in values.items():
            sink.add(step, {"loss": loss, **({"reward": 1.0} if index == 0 else {})}, None)
        sink.close()
        ids.append(job.id)
    report = compare.compare_jobs(ids)
    # steps 3 and 4 were logged by one job only; so was the reward
    assert report["max_abs_diff"] == {"loss": {"value": 0.5, "step": 2, "steps": 2}}
    third = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")
    assert "max_abs_diff" not in compare.compare_jobs([*ids, third.id])
