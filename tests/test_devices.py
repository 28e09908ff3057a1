"""The device a stage trains on and the choices that follow (`runtime.devices`): precision, activation
checkpointing, 4-bit loading, vLLM generation. The decisions are tested on device descriptions (no
GPU here, and torch is never mocked); what the CPU can show, a real SmolLM2 step shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepe_widgets import jobs, methods, params
from deepe_widgets.errors import DeepeError
from deepe_widgets.runtime import devices
from deepe_widgets.runtime.devices import Device

A100 = Device(type="cuda", name="NVIDIA A100-SXM4-80GB", memory_gb=79.2, count=1, capability=(8, 0), bf16=True)
T4 = Device(type="cuda", name="Tesla T4", memory_gb=14.6, count=1, capability=(7, 5), bf16=False)
CPU = Device()
MPS = Device(type="mps", name="Apple silicon GPU", count=1)
SEVEN_B, SMOLLM2 = 7_241_732_096, 134_515_008


# --- decisions on device descriptions ----------------------------------------------------------

@pytest.mark.parametrize("device, chosen, trainer, dtype, accelerate", [
    (A100, "bf16", {"bf16": True, "fp16": False}, "bfloat16", "bf16"),
    (T4, "fp16", {"bf16": False, "fp16": True}, "float16", "fp16"),  # bf16 there is emulated: fp16
    (CPU, "fp32", {"bf16": False, "fp16": False}, "float32", "no"),
    (MPS, "fp32", {"bf16": False, "fp16": False}, "float32", "bf16"),  # SimpleTuner's bf16 on MPS, as before
])
def test_precision_follows_native_bf16(device, chosen, trainer, dtype, accelerate):
    assert devices.precision(device) == chosen
    assert devices.trainer_precision(device) == trainer
    assert devices.compute_dtype_name(device) == dtype
    assert devices.accelerate_mixed_precision(device) == accelerate


def test_activation_checkpointing_auto_is_on_for_large_models_on_cuda_only():
    assert devices.activation_checkpointing("auto", A100, SEVEN_B) is True
    assert devices.activation_checkpointing("auto", T4, SEVEN_B) is True
    assert devices.activation_checkpointing("auto", A100, SMOLLM2) is False  # activations fit beside it
    assert devices.activation_checkpointing("auto", CPU, SEVEN_B) is False
    assert devices.activation_checkpointing("auto", MPS, SEVEN_B) is False
    for setting, expected in ((True, True), ("true", True), ("on", True), (False, False), ("False", False)):
        assert devices.activation_checkpointing(setting, CPU, SMOLLM2) is expected
        assert devices.activation_checkpointing(setting, A100, SEVEN_B) is expected
    with pytest.raises(ValueError, match="must be auto, True or False, not 'sometimes'"):
        devices.activation_checkpointing("sometimes", A100, SEVEN_B)


def test_the_checkpointing_choice_is_logged_once_with_its_reason():
    said = []
    assert devices.choose_activation_checkpointing("auto", A100, SEVEN_B, log=said.append) is True
    assert devices.choose_activation_checkpointing("auto", CPU, SMOLLM2, log=said.append) is False
    assert devices.choose_activation_checkpointing(True, CPU, SMOLLM2, log=said.append) is True
    assert said == ["activation checkpointing: on (auto: cuda, 7.2B parameters)",
                    "activation checkpointing: off (auto: cpu, 135M parameters)",
                    "activation checkpointing: on (ACTIVATION_CHECKPOINTING)"]


def test_four_bit_and_vllm_say_why_they_cannot_work():
    assert devices.four_bit_problem(A100, has_bitsandbytes=True) is None
    assert "needs a CUDA GPU" in devices.four_bit_problem(CPU, has_bitsandbytes=True)
    assert "trains on mps" in devices.four_bit_problem(MPS, has_bitsandbytes=True)
    assert "deepe-widgets[qlora]" in devices.four_bit_problem(T4, has_bitsandbytes=False)
    assert devices.vllm_problem(A100, has_vllm=True) is None
    assert "needs a CUDA GPU" in devices.vllm_problem(CPU, has_vllm=True)
    assert "needs vllm in the method's kernel" in devices.vllm_problem(A100, has_vllm=False)


def test_the_loader_refuses_four_bit_on_the_cpu_instead_of_loading_unquantised(tiny_model_dir):
    with pytest.raises(RuntimeError, match="LOAD_IN_4BIT needs a CUDA GPU"):
        devices.load_causal_lm(str(tiny_model_dir), load_in_4bit=True, device=CPU)
    model, tokenizer = devices.load_causal_lm(str(tiny_model_dir), device=CPU)
    assert tokenizer.pad_token is not None and model.num_parameters() > 0


def test_activation_checkpointing_values_are_checked_by_their_field():
    defaults = {"ACTIVATION_CHECKPOINTING": '"auto"', "LEARNING_RATE": "2e-4"}
    assert params.resolve({"activation_checkpointing": "true"}, defaults) == {"ACTIVATION_CHECKPOINTING": True}
    assert params.resolve({"gradient_checkpointing": "off"}, defaults) == {"ACTIVATION_CHECKPOINTING": False}
    assert params.resolve({"ACTIVATION_CHECKPOINTING": "Auto"}, defaults) == {"ACTIVATION_CHECKPOINTING": "auto"}
    with pytest.raises(DeepeError, match="must be auto, true or false, not .always.") as caught:
        params.resolve({"activation_checkpointing": "always"}, defaults)
    assert caught.value.field == "ACTIVATION_CHECKPOINTING"


# --- refused at submit on this (CPU-only) machine ------------------------------------------------

def _four_bit_builtins() -> list[str]:
    """The built-ins whose training declares LOAD_IN_4BIT (MLX-Demo quantises with MLX: not refused)."""
    import nbformat

    from deepe_widgets.stagefiles import notebook_parameters

    found = []
    for name, builtin in methods.BUILTINS.items():
        if builtin.template or name == "MLX-Demo":
            continue
        notebook = nbformat.read(Path(methods.__file__).parent.parent / "method_templates" /
                                 builtin.stages["training"], as_version=4)
        if "LOAD_IN_4BIT" in notebook_parameters(notebook):
            found.append(name)
    return found


FOUR_BIT_BUILTINS = _four_bit_builtins()


@pytest.fixture(scope="module")
def typed_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny model of each kind the 4-bit built-ins train that `tiny` is not (built once here)."""
    from deepe_widgets.testing import make_tiny_embedding_model, make_tiny_vl_model

    folder = tmp_path_factory.mktemp("typed-models")
    return {"VL-Demo": make_tiny_vl_model(folder / "tiny-vl"),
            "Embedding-Demo": make_tiny_embedding_model(folder / "tiny-embedding")}


def test_every_transformers_builtin_declares_four_bit_and_checkpointing():
    assert {"SFT-Demo", "DPO-Demo", "GRPO-Demo", "KTO-Demo", "ORPO-Demo", "SimPO-Demo", "Reward-Demo"} <= \
        set(FOUR_BIT_BUILTINS)


@pytest.mark.parametrize("method", FOUR_BIT_BUILTINS)
def test_load_in_4bit_is_refused_at_submit_on_the_cpu(workspace, typed_models, method):
    from deepe_widgets import models

    base = "tiny"
    if method in typed_models:
        base = f"tiny-{method.lower()}"
        models.add_model(base, typed_models[method])
    dataset = methods.BUILTINS[method].demo_dataset
    with pytest.raises(DeepeError) as caught:
        jobs.submit_training(method, base, dataset, params={"load_in_4bit": "true", "max_steps": "1"})
    assert caught.value.field == "LOAD_IN_4BIT", caught.value.message
    assert caught.value.message.startswith(("LOAD_IN_4BIT needs a CUDA GPU", f"{method} does not load in 4-bit"))
    assert "\n" not in caught.value.message
    assert jobs.list_jobs() == []
    assert jobs.submit_training(method, base, dataset, params={"max_steps": "1"}).status == "queued"


def test_bad_checkpointing_and_vllm_on_the_cpu_are_refused_at_submit(workspace):
    with pytest.raises(DeepeError, match="ACTIVATION_CHECKPOINTING must be auto, true or false") as caught:
        jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"activation_checkpointing": "maybe"})
    assert caught.value.field == "ACTIVATION_CHECKPOINTING"
    with pytest.raises(DeepeError, match="USE_VLLM needs a CUDA GPU") as caught:
        jobs.submit_training("GRPO-Demo", "tiny", "demo-gsm", params={"use_vllm": "true"})
    assert caught.value.field == "USE_VLLM"
    with pytest.raises(DeepeError, match="VLLM_GPU_MEMORY_UTILIZATION must be above 0 and at most 1"):
        jobs.submit_training("GRPO-Demo", "tiny", "demo-gsm", params={"vllm_gpu_memory_utilization": "1.5"})
    assert jobs.list_jobs() == []
    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"activation_checkpointing": "on"})
    assert job.params == {"ACTIVATION_CHECKPOINTING": True}


# --- what checkpointing buys, on a real model -------------------------------------------------

# One training step of SmolLM2 with a LoRA adapter (as the built-ins train) through transformers'
# Trainer, given `activation_checkpointing` as the built-ins give it; prints the loss, the gradient
# norm and the peak RSS of the step (ru_maxrss would be that of loading the weights). Without
# checkpointing each of its 30 layers keeps about 36 KB of activations a token: 140 MB for TOKENS
# (measured: 1.25 GB peak against 1.11 GB; with 512 tokens 650 MB saved), while two runs alike
# differ by under 1 MB. Few tokens keep the step short (a 512-token step takes 15 s of a core).
TOKENS = 128
STEP = textwrap.dedent(f"""
    import json, sys
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments
    from datasets import Dataset

    class PeakOfTheStep(TrainerCallback):
        # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM), so the peak read
        # after the step is the step's own, not that of loading the weights
        def on_step_begin(self, args, state, control, **kwargs):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same LoRA weights in both processes
    path, checkpointing, out = sys.argv[1], sys.argv[2] == "on", sys.argv[3]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    ids = torch.randint(0, model.config.vocab_size, ({TOKENS},), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_list([{{"input_ids": ids, "labels": ids}}])
    args = TrainingArguments(output_dir=out, max_steps=1, per_device_train_batch_size=1, logging_steps=1,
                             report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
                             activation_checkpointing=checkpointing, learning_rate=1e-4, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[PeakOfTheStep()])
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    print(json.dumps({{"loss": logged["loss"], "grad_norm": logged["grad_norm"],
                      "checkpointing": model.is_activation_checkpointing,
                      "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}}))
""")


@pytest.mark.training
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resetting the peak RSS needs Linux")
def test_activation_checkpointing_lowers_the_peak_memory_of_a_smollm2_step(default_model_dir, tmp_path):
    # Two child processes, one step each: a process's peak RSS is its own, so each setting is
    # measured alone; both run at once (one thread each) to keep the test short.
    # Large blocks straight from mmap, given back when freed: the RSS then follows the live tensors,
    # not what malloc keeps of the weights' loading for reuse.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    children = {setting: subprocess.Popen([sys.executable, "-c", STEP, str(default_model_dir), setting,
                                           str(tmp_path / setting)], stdout=subprocess.PIPE,
                                          stderr=open(tmp_path / f"{setting}.err", "w"), text=True,
                                          stdin=subprocess.DEVNULL, env=env)
                for setting in ("on", "off")}
    results = {}
    for setting, child in children.items():
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0, (tmp_path / f"{setting}.err").read_text()[-3000:]
        results[setting] = json.loads(out.strip().splitlines()[-1])
    on, off = results["on"], results["off"]
    assert on["checkpointing"] is True and off["checkpointing"] is False
    assert on["loss"] == pytest.approx(off["loss"], abs=1e-5)  # the same step, recomputed: the same loss
    assert on["grad_norm"] == pytest.approx(off["grad_norm"], rel=1e-4)
    # every layer's activations kept (off) against one layer's at a time (on): 140 MB measured
    saved = off["peak_rss_mb"] - on["peak_rss_mb"]
    assert saved > 70, results
