"""The device a stage runs on, and the choices that follow from it: precision, activation
checkpointing, 4-bit loading. One place for them, so every built-in, script mode and
SimpleTuner decide alike.

`current_device()` reads torch in the stage kernel; the decisions take its `Device` (a plain
description), so they are tested on the CPU with any card described, not with torch mocked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..provenance import STAGE_DEVICE_FILE

# Activation checkpointing costs a third more compute; below this size the activations of a
# batch fit beside the weights on any card that trains at all, so it is off by default there.
CHECKPOINTING_ABOVE_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Device:
    """What torch will train on: `type` cuda, mps or cpu; `bf16` only where the card computes in
    bf16 natively (CUDA compute capability 8.0 and newer), never emulated."""

    type: str = "cpu"
    name: str | None = None
    memory_gb: float | None = None
    count: int = 0
    capability: tuple[int, int] | None = None
    bf16: bool = False

    def __str__(self) -> str:
        if self.type == "cpu":
            return "cpu"
        memory = f", {self.memory_gb:.1f} GB" if self.memory_gb else ""
        more = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.type}: {self.name or 'unknown'}{more}{memory}"


def current_device() -> Device:
    """The device torch in this process trains on (the first visible GPU, else MPS, else CPU)."""
    import torch

    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        return Device(type="cuda", name=properties.name, memory_gb=properties.total_memory / 2**30,
                      count=torch.cuda.device_count(), capability=(properties.major, properties.minor),
                      bf16=torch.cuda.is_bf16_supported(including_emulation=False))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Device(type="mps", name="Apple silicon GPU", count=1, bf16=False)
    return Device()


def precision(device: Device) -> str:
    """"bf16" where the card has it natively, "fp16" on other CUDA cards (T4, V100), "fp32" on
    the CPU and MPS (mixed precision there is slower or unsupported by the Trainer)."""
    if device.type == "cuda":
        return "bf16" if device.bf16 else "fp16"
    return "fp32"


def trainer_precision(device: Device) -> dict[str, bool]:
    """`bf16`/`fp16` for a transformers/TRL config, from `precision`."""
    chosen = precision(device)
    return {"bf16": chosen == "bf16", "fp16": chosen == "fp16"}


def compute_dtype_name(device: Device) -> str:
    """The torch dtype name a model computes in on `device`: bfloat16, float16 or float32."""
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision(device)]


def activation_checkpointing(setting, device: Device, parameters: int) -> bool:
    """A method's ACTIVATION_CHECKPOINTING ("auto", True or False) for a model of `parameters`:
    auto is on with CUDA for models over 1B parameters, off otherwise."""
    if isinstance(setting, str):
        lowered = setting.strip().lower()
        if lowered in ("auto", ""):
            return device.type == "cuda" and parameters > CHECKPOINTING_ABOVE_PARAMETERS
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"ACTIVATION_CHECKPOINTING must be auto, True or False, not {setting!r}")
    return bool(setting)


def four_bit_problem(device: Device, has_bitsandbytes: bool) -> str | None:
    """Why LOAD_IN_4BIT cannot work here, in one sentence, or None when it can."""
    if device.type != "cuda":
        return ("LOAD_IN_4BIT needs a CUDA GPU (bitsandbytes quantises on the GPU); "
                f"this kernel trains on {device.type}")
    if not has_bitsandbytes:
        return "LOAD_IN_4BIT needs bitsandbytes in the method's kernel: pip install 'deepe-widgets[qlora]'"
    return None


def vllm_problem(device: Device, has_vllm: bool) -> str | None:
    """Why USE_VLLM (TRL's colocated vLLM generation) cannot work here, in one sentence, or None."""
    if device.type != "cuda":
        return f"USE_VLLM needs a CUDA GPU (vLLM generates on the GPU); this kernel trains on {device.type}"
    if not has_vllm:
        return "USE_VLLM needs vllm in the method's kernel: pip install vllm there, or leave USE_VLLM off"
    return None


def nvidia_smi_gpus() -> list[str] | None:
    """The "GPU n: name (UUID: …)" lines `nvidia-smi -L` prints, or None without a working nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line for line in done.stdout.splitlines() if line.startswith("GPU ")] if done.returncode == 0 else None


def nvidia_smi_sees_gpu() -> bool:
    """Whether nvidia-smi lists a GPU on this host (whatever torch makes of it)."""
    return bool(nvidia_smi_gpus())


def unusable_gpu_warning(device: Device, smi_sees_gpu: bool, torch_version: str) -> str | None:
    """A warning when the host has an NVIDIA GPU that torch cannot use (a CUDA wheel newer than
    the driver, or a CPU build): the stage would train on the CPU without saying so."""
    if device.type == "cuda" or not smi_sees_gpu:
        return None
    if torch_version.partition("+")[2] == "cpu":
        return (f"nvidia-smi sees a GPU, but torch {torch_version} is a CPU build: this stage runs on the CPU. "
                "Install a CUDA build of torch in the method's kernel to use the GPU")
    return (f"nvidia-smi sees a GPU, but torch {torch_version} cannot use it (is the NVIDIA driver older "
            "than this CUDA build?): this stage runs on the CPU")


def report_device(log=None) -> Device:
    """Log the device this stage will run on (name, memory, precision), and a warning when the
    host has a GPU torch cannot use. Every built-in stage calls it in its setup cell."""
    import torch

    if log is None:
        from deepe_widgets.runtime import log_event as log
    device = current_device()
    log(f"device: {device}, {precision(device)}")
    warning = unusable_gpu_warning(device, device.type != "cuda" and nvidia_smi_sees_gpu(), torch.__version__)
    if warning:
        log(warning, "WARNING")
    record_stage_device(device, warning)
    return device


def record_stage_device(device: Device, warning: str | None, folder: str | Path = ".") -> None:
    """Leave the device for the run's provenance in the stage's folder (the run folder, its working
    directory): the workbench's own probe reads nvidia-smi, which lists GPUs torch may not use."""
    seen = {"type": device.type, "name": device.name, "count": device.count, "warning": warning}
    try:
        Path(folder, STAGE_DEVICE_FILE).write_text(json.dumps(seen), encoding="utf-8")
    except OSError:  # a read-only folder: the provenance keeps the probe's answer
        pass


def accelerate_mixed_precision(device: Device) -> str:
    """`mixed_precision` for accelerate-driven trainers (SimpleTuner): bf16 where the CUDA card has
    it natively, fp16 on other CUDA cards, bf16 on MPS (what SimpleTuner ran with there before),
    "no" on the CPU."""
    if device.type == "mps":
        return "bf16"
    return {"bf16": "bf16", "fp16": "fp16"}.get(precision(device), "no")


def has_package(name: str) -> bool:
    """Whether `name` is importable in this kernel (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _billions(parameters: int) -> str:
    return f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"


def choose_activation_checkpointing(setting, device: Device, parameters: int, log=None) -> bool:
    """`activation_checkpointing(...)`, logged once with why ("activation checkpointing: on (auto:
    cuda, 7.2B parameters)"); a training config's `activation_checkpointing=` takes the result."""
    if log is None:
        from deepe_widgets.runtime import log_event as log
    chosen = activation_checkpointing(setting, device, parameters)
    automatic = isinstance(setting, str) and setting.strip().lower() in ("auto", "")
    why = f"auto: {device.type}, {_billions(parameters)} parameters" if automatic else "ACTIVATION_CHECKPOINTING"
    log(f"activation checkpointing: {'on' if chosen else 'off'} ({why})")
    return chosen


def load_causal_lm(path: str, *, load_in_4bit: bool = False, device: Device | None = None,
                   model_class=None, **model_kwargs):
    """(model, tokenizer) for training a LoRA adapter on the model folder `path`: the tokenizer pads
    with its end token where it has no pad token; on CUDA the weights load in the compute dtype
    (bf16 natively, else fp16), elsewhere in the checkpoint's own; with `load_in_4bit` in NF4 (the
    QLoRA recipe) and prepared for k-bit training. `model_class` defaults to
    AutoModelForCausalLM (Reward-Demo passes AutoModelForSequenceClassification). Raises
    RuntimeError with `four_bit_problem`'s sentence where 4-bit cannot load."""
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"MODEL_PATH {path!r} is not a local model folder (nothing is downloaded at run time)")
    device = device or current_device()
    model_class = model_class or AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    compute_dtype = getattr(torch, compute_dtype_name(device))
    if device.type == "cuda":
        # the frozen base in the compute dtype: half the memory of float32, and what autocast computes in
        model_kwargs.setdefault("dtype", compute_dtype)
    if load_in_4bit:
        problem = four_bit_problem(device, has_package("bitsandbytes"))
        if problem:
            raise RuntimeError(problem)
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True)
        # one GPU: the quantised weights go straight onto it (the stage sees only its leased GPUs)
        model_kwargs.setdefault("device_map", {"": torch.cuda.current_device()})
    model = model_class.from_pretrained(path, **model_kwargs)
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # checkpointing is the training config's choice (ACTIVATION_CHECKPOINTING), not turned on here
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tokenizer
