"""What an MLX stage kernel imports: LoRA fine-tuning with `mlx-lm`, shaped like a Hugging Face
trainer so the platform's last cell stays `train_and_save(trainer, model, tokenizer, OUTPUT_DIR)`.

- `load_model(path, …)` loads a local Hugging Face safetensors folder with `mlx_lm.load` and
  turns its linear layers into LoRA layers (`mlx_lm.tuner.linear_to_lora_layers`); it returns an
  `MLXLoRAModel` whose `save_pretrained(dir)` writes `adapters.safetensors` + `adapter_config.json`
  (the layout `mlx_lm.load(base, adapter_path=dir)` reads) and the tokenizer.
- `MLXLoRATrainer` runs `mlx_lm.tuner.train` and streams train loss, validation loss, learning
  rate, grad norm and tokens/s through the same `callback` an HF trainer gets (its `MetricSink`),
  writes `checkpoint-N/` folders every `save_steps` and resumes from one.

mlx and mlx-lm are imported only inside functions, so this module imports anywhere.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import namedtuple
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import MetricSink, log_event

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
STATE_FILE = "trainer_state.json"

TrainOutput = namedtuple("TrainOutput", ["global_step", "training_loss", "metrics"])

INSTALL_HINT = ("this kernel needs mlx-lm: run `pip install mlx-lm` in the kernel's environment "
                "(on Linux also `pip install 'mlx[cpu]'`, or 'mlx[cuda]' for an NVIDIA GPU; "
                "on Apple silicon mlx-lm brings Metal support with it)")


def require_mlx() -> str:
    """Import mlx and mlx-lm or raise an ImportError that says how to install them; return versions."""
    try:
        import mlx.core as mx
        import mlx_lm
    except ImportError as exc:
        raise ImportError(f"MLX-Demo: {INSTALL_HINT} ({exc})") from exc
    return f"mlx-lm {mlx_lm.__version__}, device {mx.default_device()}"


# ---------------------------------------------------------------------------------------------
# Model


class MLXLoRAModel:
    """An mlx-lm model with LoRA layers, as the platform sees a trained model."""

    def __init__(self, module, model_path: str, lora_config: dict):
        self.module = module
        self.model_path = str(model_path)
        self.lora_config = lora_config  # fine_tune_type, num_layers, lora_parameters (mlx-lm's names)

    def trainable_parameters(self) -> dict:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(self.module.trainable_parameters()))

    def print_trainable_parameters(self) -> None:
        from mlx.utils import tree_flatten

        trainable = sum(v.size for v in self.trainable_parameters().values())
        total = sum(v.size for _, v in tree_flatten(self.module.parameters()))
        print(f"trainable params: {trainable:,} || all params: {total:,} || "
              f"trainable%: {100 * trainable / max(total, 1):.4f}", flush=True)

    def adapter_config(self) -> dict:
        import mlx_lm

        return {**self.lora_config, "model": self.model_path, "base_model_name_or_path": self.model_path,
                "library": "mlx-lm", "mlx_lm_version": mlx_lm.__version__}

    def save_pretrained(self, save_directory: str | os.PathLike, extra_config: dict | None = None) -> None:
        """Write the adapter in mlx-lm's layout: `mlx_lm.load(base, adapter_path=save_directory)`."""
        import mlx.core as mx

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(folder / ADAPTER_FILE), self.trainable_parameters())
        config = {**self.adapter_config(), **(extra_config or {})}
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")

    def load_adapter_weights(self, folder: str | os.PathLike) -> None:
        """Load a saved adapter (a checkpoint) into this model's LoRA layers; they must match."""
        import mlx.core as mx

        weights = mx.load(str(Path(folder) / ADAPTER_FILE))
        expected = self.trainable_parameters()
        if set(weights) != set(expected) or any(weights[k].shape != expected[k].shape for k in weights):
            raise ValueError(f"the adapter in {str(folder)!r} does not fit this model's LoRA layers "
                             "(different LORA_RANK or LORA_TARGET_MODULES?)")
        self.module.load_weights(list(weights.items()), strict=False)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def _lora_keys(module, target_modules: str) -> list[str] | None:
    """mlx-lm's per-layer module paths for a comma-separated list of names (None: every linear)."""
    if not target_modules or target_modules.strip() in ("all-linear", "all"):
        return None
    import mlx.nn as nn

    wanted = {name.strip() for name in target_modules.split(",") if name.strip()}
    keys = sorted({path for path, sub in module.layers[0].named_modules()
                   if isinstance(sub, (nn.Linear, nn.QuantizedLinear)) and path.rsplit(".", 1)[-1] in wanted})
    if not keys:
        names = sorted({path.rsplit(".", 1)[-1] for path, sub in module.layers[0].named_modules()
                        if isinstance(sub, (nn.Linear, nn.QuantizedLinear))})
        raise ValueError(f"LORA_TARGET_MODULES {target_modules!r} names no linear layer of the model; "
                         f"its layers have {names}")
    return keys


def load_model(model_path: str, *, lora_rank: int = 8, lora_alpha: float = 16, lora_dropout: float = 0.0,
               target_modules: str = "all-linear", num_layers: int = -1, quantize_4bit: bool = False,
               seed: int = 42):
    """(MLXLoRAModel, tokenizer) from a local model folder, with fresh LoRA layers.

    LoRA scale is `lora_alpha / lora_rank`, as in PEFT. `num_layers` -1 adapts every block.
    """
    require_mlx()
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    if not model_path or not Path(model_path).is_dir():
        raise FileNotFoundError(f"MODEL_PATH {model_path!r} is not a local model folder "
                                "(nothing is downloaded at run time)")
    mx.random.seed(seed)
    module, tokenizer = load(str(model_path))
    if quantize_4bit:
        group = 64

        def quantizable(_path, layer):
            return isinstance(layer, nn.Linear) and layer.weight.shape[-1] % group == 0

        nn.quantize(module, group_size=group, bits=4, class_predicate=quantizable)
        count = sum(isinstance(m, nn.QuantizedLinear) for _, m in module.named_modules())
        if count:
            log_event(f"base model quantised to 4 bits by MLX: {count} linear layers (QLoRA)")
        else:
            log_event(f"LOAD_IN_4BIT: no linear layer has inputs divisible by {group}; "
                      "the base model stays unquantised", "WARNING")
    layers = len(module.layers)
    if num_layers is None or num_layers <= 0 or num_layers > layers:
        num_layers = layers
    lora_parameters: dict[str, Any] = {"rank": int(lora_rank), "scale": float(lora_alpha) / float(lora_rank),
                                       "dropout": float(lora_dropout)}
    keys = _lora_keys(module, target_modules)
    if keys is not None:
        lora_parameters["keys"] = keys
    module.freeze()
    linear_to_lora_layers(module, num_layers, lora_parameters)
    config = {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": lora_parameters,
              "lora_alpha": float(lora_alpha), "quantized_base": bool(quantize_4bit)}
    return MLXLoRAModel(module, model_path, config), tokenizer


# ---------------------------------------------------------------------------------------------
# Data


def build_dataset(rows, tokenizer, mask_prompt: bool = True):
    """An mlx-lm dataset from rows of `messages` (chat), `prompt`/`completion` or `text`."""
    from mlx_lm.tuner.datasets import ChatDataset, CompletionsDataset, TextDataset

    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("the dataset has no rows")
    first = rows[0]
    if "messages" in first:
        return ChatDataset(rows, tokenizer, chat_key="messages", mask_prompt=mask_prompt)
    if "prompt" in first and "completion" in first:
        return CompletionsDataset(rows, tokenizer, "prompt", "completion", mask_prompt=mask_prompt)
    if "text" in first:
        return TextDataset(rows, tokenizer, text_key="text")
    raise ValueError(f"rows need `messages`, `prompt`+`completion` or `text`; got {sorted(first)}")


# ---------------------------------------------------------------------------------------------
# Trainer


@dataclass
class MLXTrainingArguments:
    """The HF TrainingArguments names an MLX run honours (steps are optimizer updates)."""

    output_dir: str = "output"
    max_steps: int = -1  # -1: num_train_epochs passes over the data
    num_train_epochs: float = 1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    max_seq_length: int = 2048
    save_steps: int = 0  # 0: no checkpoints
    eval_steps: int = 0  # 0: about ten validations per run (plus the first and the last)
    val_batches: int = 25  # -1: the whole validation set
    mask_prompt: bool = True  # loss on the completion only
    lr_scheduler_type: str = "linear"  # "linear" (decay to 0, as HF) or "constant"
    seed: int = 42
    logging_steps: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class MLXLoRATrainer:
    """Trains an `MLXLoRAModel` with `mlx_lm.tuner.train`, reporting through HF-style callbacks."""

    def __init__(self, model: MLXLoRAModel, tokenizer, train_dataset, eval_dataset=None,
                 args: MLXTrainingArguments | None = None, callbacks: list | None = None, job_id: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.args = args or MLXTrainingArguments()
        self.train_rows = list(train_dataset)
        self.eval_rows = list(eval_dataset or [])
        self.callbacks = list(callbacks or [])
        if not any(isinstance(getattr(cb, "sink", None), MetricSink) for cb in self.callbacks):
            self.callbacks.append(SimpleNamespace(sink=MetricSink(job_id)))
        # train_and_save flushes the sinks it finds here, as for an HF trainer
        self.callback_handler = SimpleNamespace(callbacks=self.callbacks)
        self.state = None
        batch = self.args.per_device_train_batch_size
        if len(self.train_rows) < batch:
            raise ValueError(f"the training set has {len(self.train_rows)} rows, fewer than one batch "
                             f"({batch}); lower BATCH_SIZE")
        if self.eval_rows and len(self.eval_rows) < batch:
            log_event(f"validation set ({len(self.eval_rows)} rows) is smaller than a batch; no validation",
                      "WARNING")
            self.eval_rows = []

    # -- sizes --------------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_rows) // self.args.per_device_train_batch_size

    @property
    def total_steps(self) -> int:
        if self.args.max_steps and self.args.max_steps > 0:
            return int(self.args.max_steps)
        micro = self.batches_per_epoch * float(self.args.num_train_epochs)
        return max(1, math.ceil(micro / max(1, self.args.gradient_accumulation_steps)))

    # -- callbacks ----------------------------------------------------------------------------
    def _new_state(self, step: int, total: int):
        try:
            from transformers import TrainerControl, TrainerState

            return TrainerState(global_step=step, max_steps=total, epoch=0.0,
                                logging_steps=self.args.logging_steps, save_steps=self.args.save_steps or 500,
                                train_batch_size=self.args.per_device_train_batch_size,
                                num_train_epochs=self.args.num_train_epochs), TrainerControl()
        except ImportError:
            state = SimpleNamespace(global_step=step, max_steps=total, epoch=0.0, log_history=[])
            return state, SimpleNamespace()

    def _fire(self, event: str, **kwargs) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is not None:
                hook(self.args, self.state, self.control, **kwargs)
            elif event == "on_log" and isinstance(getattr(cb, "sink", None), MetricSink):
                logs = dict(kwargs.get("logs") or {})
                logs.pop("epoch", None)
                cb.sink.add(self.state.global_step, logs, self.state.epoch)
            if event in ("on_step_end", "on_train_begin", "on_train_end") and hook is None \
                    and isinstance(getattr(cb, "sink", None), MetricSink):
                cb.sink.set_progress(self.state.global_step, self.state.max_steps)

    def log(self, step: int, logs: dict, epoch: float) -> None:
        self.state.global_step = step
        self.state.epoch = round(epoch, 4)
        entry = {**logs, "epoch": self.state.epoch, "step": step}
        self.state.log_history.append(entry)
        self._fire("on_log", logs={**logs, "epoch": self.state.epoch})

    # -- checkpoints --------------------------------------------------------------------------
    def _save_checkpoint(self, step: int) -> None:
        folder = Path(self.args.output_dir) / f"checkpoint-{step}"
        self.model.save_pretrained(folder, extra_config={"training_args": self.args.to_dict()})
        # trainer_state.json last: its presence marks the checkpoint complete
        state = {"global_step": step, "max_steps": self.state.max_steps, "epoch": self.state.epoch,
                 "log_history": self.state.log_history}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        log_event(f"checkpoint saved: {folder}")

    # -- training -----------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | None = None) -> TrainOutput:
        require_mlx()
        import mlx.core as mx
        import numpy as np
        from mlx_lm.tuner import trainer as mlx_trainer
        from mlx_lm.tuner.callbacks import TrainingCallback
        from mlx_lm.tuner.datasets import CacheDataset
        from mlx_lm.tuner.trainer import TrainingArgs

        args = self.args
        ga = max(1, int(args.gradient_accumulation_steps))
        total = self.total_steps
        done = 0
        history: list = []
        if resume_from_checkpoint:
            ckpt = Path(resume_from_checkpoint)
            saved = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
            done = int(saved.get("global_step", 0))
            history = list(saved.get("log_history", []))
            self.model.load_adapter_weights(ckpt)
            log_event(f"resumed adapter weights from {ckpt} at step {done}/{total} "
                      "(optimizer state starts afresh)")
        self.state, self.control = self._new_state(done, total)
        self.state.log_history = history
        if done >= total:
            log_event(f"nothing to train: step {done} of {total} already done")
            return TrainOutput(done, float("nan"), {})

        mx.random.seed(args.seed + done)
        np.random.seed(args.seed + done)
        random.seed(args.seed + done)
        train_set = CacheDataset(build_dataset(self.train_rows, self.tokenizer, args.mask_prompt))
        val_set = CacheDataset(build_dataset(self.eval_rows, self.tokenizer, args.mask_prompt)) \
            if self.eval_rows else None

        remaining = total - done
        schedule = _lr_schedule(args, total, offset=done)
        optimizer = _ClippedAdamW(max_grad_norm=args.max_grad_norm, learning_rate=schedule,
                                  weight_decay=args.weight_decay)
        eval_every = args.eval_steps if args.eval_steps and args.eval_steps > 0 else max(1, total // 10)
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        training_args = TrainingArgs(
            batch_size=args.per_device_train_batch_size, iters=remaining * ga,
            val_batches=args.val_batches, steps_per_report=ga, steps_per_eval=eval_every * ga,
            steps_per_save=remaining * ga + 1,  # checkpoints are ours (checkpoint-N), not mlx-lm's
            max_seq_length=args.max_seq_length, adapter_file=str(output_dir / ADAPTER_FILE),
            grad_accumulation_steps=ga)
        rows_per_step = args.per_device_train_batch_size * ga
        trainer = self
        losses: list[float] = []

        class Report(TrainingCallback):
            def on_train_loss_report(self, info: dict):
                step = done + int(info["iteration"]) // ga
                losses.append(float(info["train_loss"]))
                logs = {"loss": info["train_loss"], "learning_rate": info["learning_rate"],
                        "grad_norm": optimizer.state["grad_norm"].item(),
                        "tokens_per_second": info["tokens_per_second"],
                        "iterations_per_second": info["iterations_per_second"],
                        "trained_tokens": info["trained_tokens"], "peak_memory_gb": info["peak_memory"]}
                trainer.log(step, logs, step * rows_per_step / len(trainer.train_rows))
                trainer._fire("on_step_end")
                if args.save_steps and args.save_steps > 0 and step % args.save_steps == 0 and step < total:
                    trainer._save_checkpoint(step)

            def on_val_loss_report(self, info: dict):
                step = done + int(info["iteration"]) // ga
                trainer.log(step, {"eval_loss": info["val_loss"], "eval_runtime": info["val_time"]},
                            step * rows_per_step / len(trainer.train_rows))

        log_event(f"training {remaining} steps of {total} (batch {args.per_device_train_batch_size} x "
                  f"{ga} accumulation, {len(self.train_rows)} training rows, "
                  f"{len(self.eval_rows)} validation rows)")
        self._fire("on_train_begin")
        started = time.perf_counter()
        with _quiet_train_ui(mlx_trainer):
            mlx_trainer.train(model=self.model.module, optimizer=optimizer, train_dataset=train_set,
                              val_dataset=val_set, args=training_args, training_callback=Report())
        runtime = time.perf_counter() - started
        training_loss = sum(losses) / len(losses) if losses else float("nan")
        self.log(total, {"train_loss": training_loss, "train_runtime": runtime,
                         "train_steps_per_second": remaining / runtime if runtime else 0.0},
                 total * rows_per_step / len(self.train_rows))
        self._fire("on_train_end")
        return TrainOutput(total, training_loss, {"train_loss": training_loss, "train_runtime": runtime})


def _lr_schedule(args: MLXTrainingArguments, total: int, offset: int = 0):
    """Linear warm-up to the learning rate, then linear decay to 0 (or constant); by optimizer step."""
    import mlx.core as mx

    peak = float(args.learning_rate)
    warmup = max(0, int(args.warmup_steps))
    decay = args.lr_scheduler_type != "constant"

    def schedule(step):
        step = step.astype(mx.float32) + offset
        if warmup:
            warm = peak * mx.minimum(step / warmup, 1.0)
        else:
            warm = mx.array(peak, mx.float32)
        if not decay:
            return warm
        remaining = mx.maximum(total - step, 0.0) / max(1, total - warmup)
        return mx.where(step < warmup, warm, peak * remaining)

    return schedule


def _ClippedAdamW(max_grad_norm: float, **kwargs):
    import mlx.core as mx
    import mlx.optimizers as optim

    class ClippedAdamW(optim.AdamW):
        """AdamW that clips the global gradient norm and keeps the norm in its state (for the logs)."""

        def __init__(self, max_grad_norm, **kw):
            super().__init__(**kw)
            self.max_grad_norm = float(max_grad_norm or 0)
            self._state["grad_norm"] = mx.array(0.0, mx.float32)

        def update(self, model, gradients):
            if self.max_grad_norm > 0:
                gradients, norm = optim.clip_grad_norm(gradients, self.max_grad_norm)
            else:
                from mlx.utils import tree_flatten

                norm = mx.sqrt(sum(mx.sum(g.astype(mx.float32) ** 2) for _, g in tree_flatten(gradients)))
            self._state["grad_norm"] = norm.astype(mx.float32)
            super().update(model, gradients)

    return ClippedAdamW(max_grad_norm, **kwargs)


class _QuietTrainUI:
    """mlx-lm's TrainUI draws a rich progress bar (widgets in a Jupyter kernel); the platform
    logs every report itself, so this one stays silent."""

    def __init__(self, total_iters: int, rank: int = 0):
        self.total = total_iters

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self):
        pass

    def report_train(self, *a, **k):
        pass

    @contextmanager
    def val_task(self, total: int):
        yield lambda: None

    def report_val(self, *a, **k):
        pass

    def report_save(self, *a, **k):
        pass


@contextmanager
def _quiet_train_ui(module):
    original = getattr(module, "TrainUI", None)
    if original is not None:
        module.TrainUI = _QuietTrainUI
    try:
        yield
    finally:
        if original is not None:
            module.TrainUI = original


def split_validation(rows: list, batch_size: int, fraction: float = 0.1, seed: int = 42) -> tuple[list, list]:
    """(train, validation): hold out about `fraction` (at least one batch) when there is room for both."""
    rows = list(rows)
    if len(rows) < 3 * batch_size:
        return rows, []
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    n_val = max(batch_size, int(len(rows) * fraction))
    return shuffled[n_val:], shuffled[:n_val]
