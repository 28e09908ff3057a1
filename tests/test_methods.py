import shutil
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import methods, stagefiles
from deepe_widgets.errors import DeepeError
from deepe_widgets.scriptmode import load_stage_notebook

TEMPLATE = stagefiles.template_notebook_path()


def test_builtins_exist_and_are_protected(home):
    methods.ensure_builtins()
    names = [m.name for m in methods.list_methods()]
    assert {"SFT-Demo", "Custom01", "Custom02"} <= set(names)
    sft = methods.get_method("SFT-Demo")
    assert sft.builtin and sft.lifecycle == "complete" and sft.stages["training"]["kernel"] == "python3"
    assert sft.default_params["MAX_STEPS"] == "-1" and "PromptInputColumn" in sft.default_params
    with pytest.raises(DeepeError, match="built in and cannot be deleted"):
        methods.delete_method("SFT-Demo")
    with pytest.raises(DeepeError, match="built in and cannot be overwritten"):
        methods.register_method("Custom01", {"training": (TEMPLATE, "python3")}, replace=True)


def test_template_has_every_seed_parameter_and_both_markers():
    nb = nbformat.read(TEMPLATE, as_version=4)
    names = set(stagefiles.notebook_parameters(nb))
    seed = {"MODEL_PATH", "MAX_SEQ_LENGTH", "LORA_RANK", "LOAD_IN_4BIT", "DATASET_PATH", "MAX_INPUT_LENGTH",
            "MAX_CONTENT_LENGTH", "MAX_SAMPLES", "NUM_GENERATIONS", "MAX_GRAD_NORM", "OUTPUT_DIR", "MAX_STEPS",
            "BATCH_SIZE", "GRAD_ACCUM_STEPS", "LEARNING_RATE", "WARMUP_STEPS", "PromptInputColumn",
            "PromptOutputColumn", "EPOCHS", "LORA_ALPHA", "LORA_DROPOUT", "SYSTEM_PROMPT", "SAVE_STEPS", "JOB_ID"}
    assert seed <= names
    source = "\n".join(c.source for c in nb.cells)
    assert stagefiles.BEGIN_MARKER in source and stagefiles.END_MARKER in source


@pytest.mark.parametrize("lifecycle,stages,message", [
    ("customized", {}, "needs its training code file"),
    ("complete", {"training": "T"}, "needs its saving code file"),
    ("live", {"training": "T", "saving": "T"}, "needs its deployment environment code file"),
    ("customized", {"training": "T", "saving": "T"}, "does not belong to the 'customized' lifecycle"),
    ("customized", {"training": "T", "inference-customized": ("T", None)}, "needs both a file and a kernel"),
    ("customized", {"training": "T", "inference-customized": (None, "python3")}, "its file is missing"),
    ("eternal", {"training": "T"}, "lifecycle must be one of"),
])
def test_lifecycle_table_is_enforced(home, lifecycle, stages, message):
    spec = {s: ((TEMPLATE, "python3") if v == "T" else v) for s, v in stages.items()}
    with pytest.raises(DeepeError, match=message):
        methods.register_method("m1", spec, lifecycle=lifecycle)
    assert methods.list_methods() == []


def test_each_lifecycle_registers_with_its_stages(home):
    t = (TEMPLATE, "python3")
    methods.register_method("c1", {"training": t, "inference-customized": t})
    methods.register_method("c2", {"training": t, "saving": t, "inference-complete": t}, lifecycle="complete")
    methods.register_method("c3", {"training": t, "saving": t, "deployment": t}, lifecycle="live")
    assert {m.name: sorted(m.stages) for m in methods.list_methods()} == {
        "c1": ["inference-customized", "training"], "c2": ["inference-complete", "saving", "training"],
        "c3": ["deployment", "saving", "training"]}


def test_stage_file_is_copied_with_its_hash(home, tmp_path):
    source = tmp_path / "mine.ipynb"
    shutil.copy(TEMPLATE, source)
    method = methods.register_method("mine", {"training": (source, "python3")})
    stage = method.stages["training"]
    copy = Path(stage["file"])
    assert copy.is_file() and copy.is_relative_to(home) and stage["sha256"] == stagefiles.sha256_file(source)
    before = copy.read_bytes()
    source.write_text(source.read_text().replace("LORA_RANK = 8", "LORA_RANK = 64"))
    assert copy.read_bytes() == before  # editing the source never changes what the method runs
    with pytest.raises(DeepeError, match="already exists"):
        methods.register_method("mine", {"training": (source, "python3")})
    methods.delete_method("mine")
    assert not copy.exists() and [m.name for m in methods.list_methods()] == []


def test_a_stage_is_a_typed_view_of_the_stored_stage(home, tmp_path):
    """`methods.Stage` reads a method's stored stage and writes the same JSON back (users' databases
    keep their shape; a key a newer version adds survives)."""
    from deepe_widgets import store

    source = tmp_path / "mine.ipynb"
    shutil.copy(TEMPLATE, source)
    methods.register_method("mine", {"training": (source, "python3")})
    stored = store.get_one(store.Method, name="mine").stages["training"]
    assert list(stored) == ["file", "source", "sha256", "kernel"]
    stage = methods.stage_of(store.get_one(store.Method, name="mine"), "training")
    assert (stage.source, stage.kernel, stage.source_name) == (str(source), "python3", "mine.ipynb")
    assert stage.to_dict() == stored and list(stage.to_dict()) == list(stored)
    newer = {**stored, "args_template": "--lr {LEARNING_RATE}", "gpus": 2}
    assert methods.Stage.from_dict(newer).to_dict() == newer
    assert methods.Stage.from_dict(newer).args_template == "--lr {LEARNING_RATE}"


def test_unknown_kernel_is_refused_listing_installed_ones(home):
    with pytest.raises(DeepeError, match=r"kernel 'no-such-env' is not installed; installed kernels: .*python3"):
        methods.register_method("m", {"training": (TEMPLATE, "no-such-env")})


def test_a_deployment_kernel_is_refused_for_a_training_stage(home):
    from helpers import deepe

    done = deepe("methods", "add", "--name", "m", "--stage", f"training={TEMPLATE}@deepe-vllm", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "kernel deepe-vllm is the vllm deployment environment" in done.stderr
    assert "give the training stage a training kernel (python3" in done.stderr
    assert "m" not in [m.name for m in methods.list_methods()]


def test_bad_stage_files(home, tmp_path):
    cases = {
        "missing.ipynb": (None, "does not exist"),
        "broken.ipynb": ("{not json", "not a valid notebook"),
        "one_marker.py": (f"import os\n{stagefiles.BEGIN_MARKER}\nmodel = 1\n", "marker line"),
        "train.txt": ("hello", "must be a .ipynb notebook or a .py file"),
        "latin1.py": (b"# caf\xe9\n", "is not UTF-8"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(DeepeError, match=message):
            methods.register_method("m", {"training": (path, "python3")})
    assert methods.list_methods() == []


def test_a_notebook_without_parameters_is_a_script_for_training_only(home, tmp_path):
    path = tmp_path / "noparams.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), path)
    method = methods.register_method("script", {"training": (path, "python3")})
    assert methods.method_summary(method)["script_mode"]  # it trains and saves by itself
    with pytest.raises(DeepeError, match="no cell tagged 'parameters'"):  # other stages take parameters
        methods.register_method("m", {"training": (path, "python3"), "saving": (path, "python3")},
                                lifecycle="complete")


def test_deepextension_script_code_goes_between_the_template_markers(tmp_path):
    script = tmp_path / "custom01.py"
    script.write_text("import sys\nprint('preamble is dropped')\n"
                      f"{stagefiles.BEGIN_MARKER}\nmodel = 'MY MODEL'\n{stagefiles.END_MARKER}\n")
    nb = load_stage_notebook(script)
    user = [c for c in nb.cells if stagefiles.USER_TAG in c.metadata.get("tags", [])]
    assert len(user) == 1 and "model = 'MY MODEL'" in user[0].source
    assert "preamble" not in "".join(c.source for c in nb.cells)
    assert stagefiles.find_parameters_cell(nb) is not None


def test_plain_script_is_converted_with_jupytext(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text('# %% tags=["parameters"]\nMODEL_PATH = ""\nJOB_ID = 0\n\n# %%\nprint(MODEL_PATH)\n')
    nb = load_stage_notebook(script)
    assert [c.source for c in nb.cells] == ['MODEL_PATH = ""\nJOB_ID = 0', "print(MODEL_PATH)"]
    platform = stagefiles.with_platform_cells(nb, "training")
    tags = [c.metadata.get("tags", []) for c in platform.cells]
    assert tags[1] == [stagefiles.SETUP_TAG] and tags[-1] == [stagefiles.TRAIN_TAG]
    assert set(stagefiles.notebook_parameters(nb)) == {"MODEL_PATH", "JOB_ID"}
