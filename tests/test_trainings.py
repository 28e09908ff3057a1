"""The training types' rooms (`deepe_widgets.trainings`): every built-in method has one, every
type's demo dataset is there, and a new type is one registry entry that the queue, inference and
Start a New Train pick up without any other module knowing of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import datasets, demo_data, inference, jobs, methods, models, stagefiles, trainings
from deepe_widgets.errors import DeepeError


def test_every_built_in_method_has_a_type_and_every_type_its_demo_dataset(home):
    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()
    types = trainings.all_types()
    for name in methods.BUILTINS:
        assert trainings.for_method(name) in types, name
        assert datasets.get_dataset(trainings.demo_dataset(name)).name == methods.BUILTINS[name].demo_dataset
    assert {name: trainings.for_method(name).name for name in ("SFT-Demo", "DPO-Demo", "Embedding-Demo",
                                                                 "VL-Demo", "SD-Demo", "SimpleTuner")} == {
        "SFT-Demo": "chat", "DPO-Demo": "preference", "Embedding-Demo": "embedding",
        "VL-Demo": "vision-language", "SD-Demo": "image-generation", "SimpleTuner": "simpletuner"}
    for training in types:  # each type's own demo data too (SimpleTuner's is SD-Demo's pictures)
        assert Path(datasets.get_dataset(training.demo_dataset).path).is_file(), training.name


def _toy_inference_notebook(path: Path) -> Path:
    """An inference stage that answers every prompt with its GREETING (no model is loaded)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('MODEL_PATH = ""\nADAPTER_PATH = ""\nPROMPTS = []\nSYSTEM_PROMPT = ""\n'
                                  'GREETING = "from the notebook"\nOUTPUT_DIR = "output"\nJOB_ID = 0',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import json\nfrom pathlib import Path\n"
                                  "Path(OUTPUT_DIR).mkdir(parents=True, exist_ok=True)\n"
                                  "Path(OUTPUT_DIR, 'responses.json').write_text("
                                  "json.dumps([f'{GREETING}: {p}' for p in PROMPTS]))"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def toy_type(tmp_path):
    """A toy training type, registered for the test only: it trains `toy-method` on demo-gsm alone,
    names its own standard columns, and answers with its own inference notebook and defaults for a
    base model folder that holds a `toy.marker`."""
    notebook = _toy_inference_notebook(tmp_path / "toy_inference.ipynb")

    class Toy(trainings.TrainingType):
        name = "toy"
        methods = ("toy-method",)
        demo_dataset = demo_data.GSM_DEMO_DATASET
        standard_columns = "riddle/reply"
        inference_defaults = {"GREETING": "from the toy type"}
        metric_directions = {"riddle_loss_share": "max"}  # the name rule would say lower ("loss")

        def recognizes(self, model_row) -> bool:
            return Path(model_row.path, "toy.marker").is_file()

        def check_dataset(self, method_row, model_row, dataset_row, values) -> None:
            if dataset_row.name != demo_data.GSM_DEMO_DATASET:
                raise DeepeError(f"the toy type trains on demo-gsm only, not {dataset_row.name!r}", field="dataset")

        def inference_notebook(self, model_row) -> Path:
            return notebook

    toy = trainings.register(Toy())
    yield toy
    trainings.unregister("toy")


def test_a_new_training_type_is_picked_up_by_submit_inference_and_the_launcher(workspace, toy_type, tmp_path,
                                                                               tiny_model_dir):
    from deepe_widgets.ui import TrainingLauncher

    shutil.copy(stagefiles.template_notebook_path(), tmp_path / "toy.ipynb")
    methods.register_method("toy-method", {"training": (tmp_path / "toy.ipynb", "python3")}, builtin=True)
    assert trainings.for_method("toy-method") is toy_type

    # the queue runs the toy's dataset check
    with pytest.raises(DeepeError, match="the toy type trains on demo-gsm only, not 'demo-sft'") as caught:
        jobs.submit_training("toy-method", "tiny", "demo-sft")
    assert caught.value.field == "dataset" and jobs.list_jobs() == []
    queued = jobs.submit_training("toy-method", "tiny", "demo-gsm")
    assert queued.status == "queued"

    # the type's metric directions are the CLI's "best" (metric_stats) and the widgets' alike
    from deepe_widgets import metrics, store

    with store.session() as s:
        for step, value in ((1, 0.2), (2, 0.6), (3, 0.4)):
            s.add(store.Metric(job_id=queued.id, step=step, name="riddle_loss_share", value=value))
    stats = metrics.metric_stats([queued.id])[queued.id]["riddle_loss_share"]
    assert (stats["direction"], stats["best"]) == ("max", 0.6)
    assert trainings.metric_directions(methods.get_method("toy-method"))["riddle_loss_share"] == "max"

    # Start a New Train brings the toy's demo dataset and names its standard columns
    launcher = TrainingLauncher(start_worker=False)
    assert launcher.dataset.value == "demo-sft"
    launcher.method.value = "toy-method"
    assert launcher.dataset.value == "demo-gsm"
    assert launcher.input_column.options[0][0] == "(standard: riddle)"
    launcher.close()

    # a base model of the toy type answers through the toy's notebook, with the toy's defaults
    folder = shutil.copytree(tiny_model_dir, tmp_path / "toy-base")
    (folder / "toy.marker").write_text("toy\n")
    models.add_model("toy-base", folder)
    answered = inference.infer("toy-base", ["hello"])
    assert answered["error"] is None and answered["responses"] == ["from the toy type: hello"], answered
    assert inference.infer("toy-base", ["hello"], overrides={"greeting": "mine"})["responses"] == ["mine: hello"]

    # gone from the registry, the toy's check is gone too: nothing else kept it
    trainings.unregister("toy")
    assert trainings.for_method("toy-method").name == "chat"
    assert jobs.submit_training("toy-method", "tiny", "demo-sft").status == "queued"


def test_a_preference_method_is_checked_as_preference_whatever_its_training_type_says(workspace):
    assert methods.get_method("DPO-Demo").training_type == "chat"
    with pytest.raises(DeepeError, match="is not a preference dataset"):
        jobs.submit_training("DPO-Demo", "tiny", "demo-sft")
