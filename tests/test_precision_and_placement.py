"""Issue 34, the stages after training: saving keeps the base model's dtype, the provenance records
the device the stage's torch really used (not what nvidia-smi lists), and VL's exact match answers
in left-padded batches what it answered one at a time. No GPU here: the CUDA decisions are tested
on the functions that make them, given what a stage saw."""

import json
import shutil
import struct
from pathlib import Path

import pytest

from helpers import deepe_json


def safetensors_dtypes(folder: Path) -> set[str]:
    """The dtypes of every tensor in a folder's safetensors files, read from their headers."""
    found = set()
    for weights in Path(folder).rglob("*.safetensors"):
        with open(weights, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        found |= {t["dtype"] for name, t in header.items() if name != "__metadata__"}
    return found


@pytest.mark.training
def test_saving_a_bf16_base_gives_a_bf16_complete_model_by_default(workspace, trained_tiny, tiny_model_dir,
                                                                   tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepe_widgets import models
    from deepe_widgets.store import ModelKind

    base = tmp_path / "tiny-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base)
    models.add_model("tiny-bf16", base)
    adapter = shutil.copytree(trained_tiny.customized["path"], tmp_path / "adapter")
    models.add_model("tiny-bf16-cards", adapter, kind=ModelKind.CUSTOMIZED, parent="tiny-bf16", method="SFT-Demo")

    saved = deepe_json("save", "tiny-bf16-cards", "--wait", "--json")  # no --dtype: auto
    assert saved["status"] == "succeeded", saved["error"]
    assert saved["params"]["DTYPE"] == "bfloat16"  # auto, resolved at submit: a method's own notebook knows it
    complete = saved["artifacts"][0]
    assert safetensors_dtypes(complete["path"]) == {"BF16"}
    assert models.get_model(complete["name"]).meta["dtype"] == "bfloat16"  # what the model card shows
    # the adapter was merged in bf16: the merged weights are the base's plus the LoRA's
    merged = AutoModelForCausalLM.from_pretrained(complete["path"])
    assert merged.dtype == torch.bfloat16
    before = AutoModelForCausalLM.from_pretrained(base).model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, before)
    # the stage said what it ran on, and that is what its provenance records
    log = (Path(saved["run_dir"]) / "saving.log").read_text()
    assert "loading base model" in log and "(bfloat16)" in log and "device: cpu, fp32" in log
    from deepe_widgets import jobs

    assert jobs.get_job(saved["id"]).provenance["device"]["type"] == "cpu"


def test_auto_is_the_dtype_a_model_folder_is_kept_in(tmp_path):
    import torch
    from safetensors.torch import save_file

    from deepe_widgets.errors import DeepeError
    from deepe_widgets.provenance import model_dtype, saving_dtype

    named = tmp_path / "named"
    named.mkdir()
    (named / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))  # before transformers 4.56
    assert saving_dtype("auto", named) == "float16" and saving_dtype("bfloat16", named) == "bfloat16"
    (named / "config.json").write_text(json.dumps({"dtype": "bfloat16", "torch_dtype": "float16"}))
    assert model_dtype(named) == "bfloat16"
    pipeline = tmp_path / "pipeline" / "unet"  # a diffusers pipeline: no dtype in its configs
    pipeline.mkdir(parents=True)
    (pipeline / "config.json").write_text("{}")
    save_file({"a": torch.zeros(2, dtype=torch.bfloat16), "b": torch.zeros(2, dtype=torch.bfloat16),
               "steps": torch.zeros(1, dtype=torch.int64)}, pipeline / "diffusion_pytorch_model.safetensors")
    assert model_dtype(tmp_path / "pipeline") == "bfloat16"
    assert model_dtype(tmp_path / "nothing-here") == "float32"
    with pytest.raises(ValueError, match="DTYPE must be one of auto"):
        saving_dtype("float8", named)

    from deepe_widgets import jobs

    with pytest.raises(DeepeError, match="dtype must be auto, float32, float16 or bfloat16") as refused:
        jobs.submit_save("anything", dtype="int8")
    assert refused.value.field == "dtype"


def test_a_gpu_torch_cannot_use_is_recorded_as_cpu_with_a_warning(tmp_path):
    from deepe_widgets.provenance import read_stage_device, stage_device
    from deepe_widgets.publishing import job_warnings
    from deepe_widgets.runtime.devices import Device, record_stage_device, unusable_gpu_warning
    from deepe_widgets.store import Job, JobKind

    probed = {"type": "cuda", "name": "NVIDIA A10G", "count": 1, "cpu": "AMD EPYC", "cpus": 8,
              "torch": "2.9.0+cu130", "how": "nvidia-smi"}
    cpu = Device()
    # the driver is older than the wheel: nvidia-smi lists the card, torch finds no CUDA
    warning = unusable_gpu_warning(cpu, smi_sees_gpu=True, torch_version="2.9.0+cu130")
    assert "cannot use it" in warning and "runs on the CPU" in warning
    record_stage_device(cpu, warning, tmp_path)
    recorded = stage_device(probed, read_stage_device(tmp_path))
    assert recorded["type"] == "cpu" and recorded["name"] is None and recorded["count"] == 0
    assert recorded["unused_gpu"] == "NVIDIA A10G" and recorded["warning"] == warning
    assert recorded["cpu"] == "AMD EPYC"  # the rest of the probe stays
    # the job carries it as a warning (the stage log has it as a WARNING line already)
    assert job_warnings(Job(kind=JobKind.SAVE, run_dir=str(tmp_path), params={})) == [warning]

    # a card torch uses, a stage that said nothing, a CPU build on a GPU host
    a10g = Device(type="cuda", name="NVIDIA A10G", count=1, capability=(8, 6), bf16=True)
    assert unusable_gpu_warning(a10g, smi_sees_gpu=True, torch_version="2.9.0+cu130") is None
    record_stage_device(a10g, None, tmp_path)
    assert stage_device(probed, read_stage_device(tmp_path)) == probed
    assert stage_device(probed, read_stage_device(tmp_path / "elsewhere")) == probed
    assert "CPU build" in unusable_gpu_warning(cpu, smi_sees_gpu=True, torch_version="2.9.0+cpu")
    assert job_warnings(Job(kind=JobKind.SAVE, run_dir=str(tmp_path), params={})) == []


def test_vl_exact_match_answers_in_batches_what_it_answered_one_at_a_time(tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from deepe_widgets.runtime.vision_language import answer, answers, exact_match, load_processor
    from deepe_widgets.testing import make_tiny_vl_model

    path = make_tiny_vl_model(tmp_path / "tiny-vl")
    processor, model = load_processor(str(path)), AutoModelForImageTextToText.from_pretrained(path).eval()
    images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "teal", "navy", "white")]
    # prompts of different lengths, so the batch is padded
    questions = ["What colour is this?", "Red?", "Describe the picture in a few words, please.", "Is it round?"]
    prompts = [[{"role": "user", "content": q}] for q in questions]
    one_at_a_time = [answer(model, processor, image, messages, 8) for image, messages in zip(images, prompts)]
    assert len(set(one_at_a_time)) > 1  # different answers: a batch that mixed its rows up would show
    side = processor.tokenizer.padding_side
    assert answers(model, processor, images, prompts, 8, batch_size=3) == one_at_a_time
    assert processor.tokenizer.padding_side == side  # as it was: training pads as it did

    held_out = [{"image": image, "messages": messages + [{"role": "assistant", "content": reply}]}
                for image, messages, reply in zip(images, prompts, one_at_a_time)]
    held_out[1]["messages"][-1]["content"] = "not what it says"
    assert exact_match(model, processor, held_out, max_new_tokens=8, batch_size=3) == 0.75
