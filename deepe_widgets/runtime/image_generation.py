"""Text-to-image LoRA training in a stage kernel: diffusers' recipe (`train_text_to_image_lora.py`)
behind the interface the platform drives (`trainer.train(resume_from_checkpoint=…)`, `trainer.args
.output_dir`, `trainer.state`, callbacks), so `train_and_save`, the metrics callback, checkpoints,
resume and a stopping worker's hand-back work as they do for the chat methods.

Every `validation_steps` steps (and before the first step) the pipeline renders fixed prompts
with a fixed seed into `<run folder>/validation/step-NNNNNN/`, listed in `validation/index.json`.
Before the first step, every `eval_steps` steps and after the last, the held-out images are scored
(`held_out_losses`: the denoising loss at fixed noise and timesteps) and logged as `eval_loss`; the
evaluation stage scores them the same way, so its number for the trained LoRA is the training's last.

Imports torch, diffusers and peft only when used; needs no torchvision.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import log_event

IMAGE_COLUMNS = ("file_name", "image", "image_path", "path")
CAPTION_COLUMNS = ("text", "caption", "prompt")
VALIDATION_INDEX = "index.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass
class DiffusionTrainingArguments:
    """What the training loop reads; names follow transformers' `TrainingArguments` where they exist."""

    output_dir: str = "output"
    max_steps: int = -1  # -1: num_train_epochs over the data
    num_train_epochs: float = 1
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int = 0  # 0: no checkpoints
    logging_steps: int = 1
    resolution: int = 512
    center_crop: bool = True
    random_flip: bool = False
    prediction_type: str = ""  # "", "epsilon" or "v_prediction": empty keeps the scheduler's
    snr_gamma: float = 0.0  # 0: plain MSE; 5.0 is the Min-SNR paper's value
    noise_offset: float = 0.0
    validation_prompts: list[str] = field(default_factory=list)
    validation_steps: int = 0  # 0: render before and after training only
    validation_seed: int = 0
    validation_inference_steps: int = 20
    validation_dir: str = "validation"
    guidance_scale: float = 7.5
    eval_steps: int = 0  # score the held-out images every N steps (0: about ten times a run)
    bf16: bool = False  # the UNet's forward under bf16 autocast, on a CUDA card with native bf16 only


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "prompt"


def read_image_rows(dataset_path: str, max_samples: int = 0) -> list[dict]:
    """(image path, caption) rows of an imagefolder `metadata.jsonl` (or a folder holding one) or of
    a jsonl with image paths; relative paths are read from the jsonl's folder."""
    path = Path(dataset_path)
    if path.is_dir():
        path = path / "metadata.jsonl"
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        image = next((row[c] for c in IMAGE_COLUMNS if row.get(c)), None)
        caption = next((row[c] for c in CAPTION_COLUMNS if isinstance(row.get(c), str) and row[c].strip()), None)
        if image is None or caption is None:
            raise ValueError(f"{path}: line {number} needs an image path ({'/'.join(IMAGE_COLUMNS)}) and a "
                             f"caption ({'/'.join(CAPTION_COLUMNS)})")
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        rows.append({"image": str(image_path), "text": caption,
                     **({"split": str(row["split"])} if row.get("split") is not None else {})})
    if max_samples and max_samples > 0:
        rows = rows[:max_samples]
    return rows


class _Rows:
    """A list of row dicts read as columns (what `held_out_rows` reads of a dataset)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> list:
        return [row.get(column) for row in self.rows]


def split_image_rows(rows: list[dict], eval_fraction: float = 0.1, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): rows whose `split` names a held-out split, else `eval_fraction`
    of them drawn with `seed`, by the function the chat notebooks split with (`runtime.held_out_rows`)."""
    from . import held_out_rows

    columns = ["split"] if any("split" in row for row in rows) else []
    train, held = held_out_rows(_Rows(rows), columns, eval_fraction, seed)
    return [rows[i] for i in train], [rows[i] for i in held]


# the timesteps (shares of the scheduler's) at which every held-out image is scored: the loss is an
# average over the whole denoising range, with the same noise for every model
HELD_OUT_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)


def held_out_losses(pipeline, rows: list[dict], resolution: int, seed: int = 0,
                    prediction_type: str = "") -> list[float]:
    """The denoising loss of each held-out image: its latents (the VAE's mean, no sampling), noised
    with noise drawn from `seed` and the row's number at each of HELD_OUT_TIMESTEPS, and the UNet's
    prediction of the noise (or the velocity) scored by mean squared error. Deterministic: two models
    scored on the same rows see the same noise, so their losses compare; the torch random stream is
    not touched."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    if prediction_type:
        scheduler.register_to_config(prediction_type=prediction_type)
    unet, device = pipeline.unet, pipeline.unet.device
    count = scheduler.config.num_train_timesteps
    timesteps = torch.tensor([min(count - 1, int(share * count)) for share in HELD_OUT_TIMESTEPS], device=device)
    tokenizer = pipeline.tokenizer
    was_training = unet.training
    unet.eval()
    losses = []
    with torch.no_grad():
        for number, row in enumerate(rows):
            pixels = image_tensor(row["image"], resolution).unsqueeze(0).to(device, dtype=pipeline.vae.dtype)
            latents = pipeline.vae.encode(pixels).latent_dist.mean * pipeline.vae.config.scaling_factor
            latents = latents.repeat(len(timesteps), 1, 1, 1)
            generator = torch.Generator().manual_seed(seed * 100_003 + number)
            noise = torch.randn(latents.shape, generator=generator).to(device, dtype=latents.dtype)
            ids = tokenizer([row["text"]], max_length=tokenizer.model_max_length, padding="max_length",
                            truncation=True, return_tensors="pt").input_ids.to(device)
            states = pipeline.text_encoder(ids, return_dict=False)[0].repeat(len(timesteps), 1, 1)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            target = noise if scheduler.config.prediction_type == "epsilon" else \
                scheduler.get_velocity(latents, noise, timesteps)
            prediction = unet(noisy, timesteps, states, return_dict=False)[0]
            losses.append(float(F.mse_loss(prediction.float(), target.float())))
    if was_training:
        unet.train()
    return losses


def image_tensor(image_path: str, resolution: int, center_crop: bool = True, flip: bool = False,
                 rng: random.Random | None = None):
    """The script's torchvision transforms with PIL: resize the short side, crop, flip, scale to [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    image = image.resize((max(resolution, round(width * scale)), max(resolution, round(height * scale))),
                         Image.Resampling.BILINEAR)
    width, height = image.size
    if center_crop:
        left, top = (width - resolution) // 2, (height - resolution) // 2
    else:
        rng = rng or random.Random(0)
        left, top = rng.randint(0, width - resolution), rng.randint(0, height - resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip and (rng or random).random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


class DiffusionLoRA:
    """The trained LoRA of a pipeline's UNet; `save_pretrained` writes diffusers' LoRA file, which
    `pipeline.load_lora_weights(folder)` reads."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def state_dict(self) -> dict:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        return convert_state_dict_to_diffusers(get_peft_model_state_dict(self.pipeline.unet))

    def save_pretrained(self, output_dir: str) -> None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        type(self.pipeline).save_lora_weights(output_dir, unet_lora_layers=self.state_dict(),
                                              safe_serialization=True)
        (Path(output_dir) / "deepe_lora.json").write_text(json.dumps(
            {"pipeline_class": type(self.pipeline).__name__, "weights": LORA_WEIGHTS}, indent=2))


class _TokenizerSaver:
    """What `train_and_save` hands `tokenizer`: a LoRA folder needs no tokenizer of its own."""

    def save_pretrained(self, output_dir: str) -> None:
        return None


def add_unet_lora(pipeline, rank: int, alpha: float, dropout: float = 0.0,
                  target_modules: str = "to_k,to_q,to_v,to_out.0") -> DiffusionLoRA:
    """Freeze the pipeline and add a LoRA adapter to its UNet's attention (the script's defaults)."""
    from peft import LoraConfig

    for part in ("vae", "text_encoder", "unet"):
        getattr(pipeline, part).requires_grad_(False)
    targets = [name.strip() for name in target_modules.split(",") if name.strip()]
    pipeline.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                         init_lora_weights="gaussian", target_modules=targets))
    return DiffusionLoRA(pipeline)


class DiffusionLoRATrainer:
    """diffusers' text-to-image LoRA loop, driven like a transformers `Trainer`."""

    def __init__(self, pipeline, train_dataset: list[dict], args: DiffusionTrainingArguments,
                 callbacks: list | None = None, eval_dataset: list[dict] | None = None):
        from transformers import TrainerControl, TrainerState

        if getattr(pipeline, "text_encoder_2", None) is not None:
            raise ValueError(f"{type(pipeline).__name__} has two text encoders (SDXL): SD-Demo trains "
                             f"SD 1.x / 2.x pipelines (one text encoder and a UNet)")
        if not train_dataset:
            raise ValueError("the dataset has no images")
        if args.prediction_type not in ("", "epsilon", "v_prediction"):
            raise ValueError(f"PREDICTION_TYPE must be empty, 'epsilon' or 'v_prediction', "
                             f"not {args.prediction_type!r}")
        self.pipeline = pipeline
        self.train_dataset = train_dataset
        self.eval_dataset = list(eval_dataset or [])
        self.args = args
        self.model = DiffusionLoRA(pipeline)
        self.state = TrainerState()
        self.control = TrainerControl()
        self.callback_handler = _Callbacks(list(callbacks or []))
        self.validation_dir = Path(args.validation_dir)

    # --- the loop ---------------------------------------------------------------------------------

    def _optimizer_and_schedule(self):
        import torch
        from diffusers.optimization import get_scheduler

        params = [p for p in self.pipeline.unet.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the UNet has no trainable LoRA parameters: call add_unet_lora first")
        optimizer = torch.optim.AdamW(params, lr=self.args.learning_rate)
        schedule = get_scheduler("constant_with_warmup" if self.args.warmup_steps else "constant", optimizer,
                                 num_warmup_steps=self.args.warmup_steps)
        return params, optimizer, schedule

    def _total_steps(self) -> int:
        if self.args.max_steps and self.args.max_steps > 0:
            return int(self.args.max_steps)
        per_epoch = math.ceil(len(self.train_dataset) / self.args.per_device_train_batch_size
                              / self.args.gradient_accumulation_steps)
        return max(1, math.ceil(per_epoch * self.args.num_train_epochs))

    def _batches(self, epoch: int):
        order = list(range(len(self.train_dataset)))
        random.Random(self.args.seed + epoch).shuffle(order)
        size = self.args.per_device_train_batch_size
        for start in range(0, len(order), size):
            yield [self.train_dataset[i] for i in order[start:start + size]]

    def _batch_tensors(self, rows: list[dict], rng: random.Random):
        import torch

        pixels = torch.stack([image_tensor(r["image"], self.args.resolution, self.args.center_crop,
                                           self.args.random_flip, rng) for r in rows])
        tokenizer = self.pipeline.tokenizer
        ids = tokenizer([r["text"] for r in rows], max_length=tokenizer.model_max_length, padding="max_length",
                        truncation=True, return_tensors="pt").input_ids
        device = self.pipeline.unet.device
        return pixels.to(device, dtype=self.pipeline.vae.dtype), ids.to(device)

    def _loss(self, pixels, input_ids, scheduler):
        import torch
        import torch.nn.functional as F
        from diffusers.training_utils import compute_snr

        pipe = self.pipeline
        with torch.no_grad():
            latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
            encoder_hidden_states = pipe.text_encoder(input_ids, return_dict=False)[0]
        noise = torch.randn_like(latents)
        if self.args.noise_offset:
            noise += self.args.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1),
                                                          device=latents.device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device).long()
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if scheduler.config.prediction_type == "epsilon":
            target = noise
        elif scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"unknown prediction type {scheduler.config.prediction_type}")
        # the LoRA weights stay float32 (autocast casts per op, bf16 needs no loss scaling); the loss is float32
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.args.bf16 and latents.device.type == "cuda"):
            prediction = pipe.unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
        if not self.args.snr_gamma:
            return F.mse_loss(prediction.float(), target.float(), reduction="mean")
        # Min-SNR weighting (Hang et al. 2023), as the diffusers script computes it
        snr = compute_snr(scheduler, timesteps)
        weights = torch.stack([snr, self.args.snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
        weights = weights / snr if scheduler.config.prediction_type == "epsilon" else weights / (snr + 1)
        loss = F.mse_loss(prediction.float(), target.float(), reduction="none")
        return (loss.mean(dim=list(range(1, len(loss.shape)))) * weights).mean()

    def train(self, resume_from_checkpoint: str | None = None):
        import torch
        from diffusers import DDPMScheduler

        torch.manual_seed(self.args.seed)
        rng = random.Random(self.args.seed)
        scheduler = DDPMScheduler.from_config(self.pipeline.scheduler.config)
        if self.args.prediction_type:
            scheduler.register_to_config(prediction_type=self.args.prediction_type)
        params, optimizer, schedule = self._optimizer_and_schedule()
        total = self._total_steps()
        self.state.max_steps = total
        self.state.global_step = 0
        if resume_from_checkpoint:
            self._load_checkpoint(Path(resume_from_checkpoint), optimizer, schedule)
            rng = random.Random(self.args.seed + self.state.global_step)
        self.callback_handler.call("on_train_begin", self.args, self.state, self.control)
        if self.state.global_step == 0:
            self.render_validation(0)
            self.evaluate()
        unet = self.pipeline.unet
        unet.train()
        # a resumed run skips the batches its first attempt consumed, so it sees the same data in order
        per_epoch = math.ceil(len(self.train_dataset) / self.args.per_device_train_batch_size)
        epoch, skip = divmod(self.state.global_step * self.args.gradient_accumulation_steps, per_epoch)
        losses = []
        while self.state.global_step < total and not self.control.should_training_stop:
            accumulated = 0
            for rows in list(self._batches(epoch))[skip:]:
                pixels, ids = self._batch_tensors(rows, rng)
                loss = self._loss(pixels, ids, scheduler) / self.args.gradient_accumulation_steps
                loss.backward()
                losses.append(loss.item() * self.args.gradient_accumulation_steps)
                accumulated += 1
                if accumulated < self.args.gradient_accumulation_steps:
                    continue
                accumulated = 0
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                self.state.global_step += 1
                self.state.epoch = self.state.global_step * self.args.gradient_accumulation_steps / per_epoch
                self._step_done(sum(losses) / len(losses), float(grad_norm), schedule.get_last_lr()[0],
                                optimizer, schedule)
                losses = []
                if self.state.global_step >= total or self.control.should_training_stop:
                    break
            epoch, skip = epoch + 1, 0
        unet.eval()
        if self.state.global_step >= total:  # not when stopped early for a hand-back
            self.render_validation(self.state.global_step)
            if self.state.global_step % self._eval_every():
                self.evaluate()
        self.callback_handler.call("on_train_end", self.args, self.state, self.control)
        return _TrainOutput(self.state.global_step, self.state.log_history)

    def _step_done(self, loss: float, grad_norm: float, lr: float, optimizer, schedule) -> None:
        step = self.state.global_step
        self.callback_handler.call("on_step_end", self.args, self.state, self.control)
        if self.args.logging_steps and step % self.args.logging_steps == 0 or self.control.should_log:
            logs = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr}
            self.state.log_history.append({**logs, "step": step})
            self.callback_handler.call("on_log", self.args, self.state, self.control, logs=logs)
            self.control.should_log = False
        if self.args.validation_steps and step % self.args.validation_steps == 0 and step < self.state.max_steps:
            self.render_validation(step)
        if step % self._eval_every() == 0:
            self.evaluate()
        if self.args.save_steps and step % self.args.save_steps == 0 or self.control.should_save:
            self._save_checkpoint(optimizer, schedule)
            self.control.should_save = False

    def _eval_every(self) -> int:
        """Steps between two scorings of the held-out images: `eval_steps`, or about a tenth of the run."""
        if self.args.eval_steps and self.args.eval_steps > 0:
            return int(self.args.eval_steps)
        return max(1, round(self._total_steps() / 10))

    def evaluate(self) -> dict:
        """Score the held-out images (`held_out_losses`) and log their mean as `eval_loss`."""
        if not self.eval_dataset:
            return {}
        losses = held_out_losses(self.pipeline, self.eval_dataset, self.args.resolution, self.args.seed,
                                 self.args.prediction_type)
        logs = {"eval_loss": sum(losses) / len(losses)}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.callback_handler.call("on_log", self.args, self.state, self.control, logs=logs)
        return logs

    # --- checkpoints ------------------------------------------------------------------------------

    def _save_checkpoint(self, optimizer, schedule) -> None:
        import torch

        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        partial = folder.with_name(folder.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(partial))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                   partial / "training_state.pt")
        self.state.save_to_json(str(partial / "trainer_state.json"))
        partial.rename(folder)  # trainer_state.json appears complete or not at all
        log_event(f"checkpoint saved: {folder}")

    def _load_checkpoint(self, folder: Path, optimizer, schedule) -> None:
        import torch
        from peft.utils import set_peft_model_state_dict
        from transformers import TrainerState

        weights, _ = type(self.pipeline).lora_state_dict(str(folder))
        unet_weights = {k.removeprefix("unet."): v for k, v in weights.items() if k.startswith("unet.")}
        from diffusers.utils import convert_unet_state_dict_to_peft

        set_peft_model_state_dict(self.pipeline.unet, convert_unet_state_dict_to_peft(unet_weights))
        saved = torch.load(folder / "training_state.pt", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = TrainerState.load_from_json(str(folder / "trainer_state.json"))
        self.state.global_step, self.state.log_history = state.global_step, state.log_history

    # --- validation images --------------------------------------------------------------------------

    def render_validation(self, step: int) -> list[dict]:
        """Render every validation prompt with the fixed seed; list the images in `index.json`."""
        import torch

        if not self.args.validation_prompts:
            return []
        pipe = self.pipeline
        pipe.set_progress_bar_config(disable=True)
        folder = self.validation_dir / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        was_training = pipe.unet.training
        pipe.unet.eval()
        # rendering must not change the training's random stream
        rng_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        made = []
        for number, prompt in enumerate(self.args.validation_prompts):
            generator = torch.Generator().manual_seed(self.args.validation_seed)
            with torch.no_grad():
                image = pipe(prompt, num_inference_steps=self.args.validation_inference_steps,
                             guidance_scale=self.args.guidance_scale, generator=generator,
                             height=self.args.resolution, width=self.args.resolution).images[0]
            path = folder / f"{number:02d}-{_slug(prompt)}.png"
            image.save(path)
            made.append({"step": step, "prompt": prompt, "seed": self.args.validation_seed,
                         "path": str(path.relative_to(self.validation_dir))})
        torch.set_rng_state(rng_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        if was_training:
            pipe.unet.train()
        index_file = self.validation_dir / VALIDATION_INDEX
        entries = json.loads(index_file.read_text()) if index_file.exists() else []
        entries = [e for e in entries if e["step"] != step] + made
        index_file.write_text(json.dumps(sorted(entries, key=lambda e: (e["step"], e["path"])), indent=1))
        log_event(f"validation images for step {step}: {folder}")
        return made


@dataclass
class _TrainOutput:
    global_step: int
    log_history: list

    @property
    def training_loss(self) -> float:
        losses = [e["loss"] for e in self.log_history if "loss" in e]  # not the held-out eval_loss
        return sum(losses) / len(losses) if losses else float("nan")


class _Callbacks:
    """The part of transformers' callback handler the platform reads (`.callbacks`)."""

    def __init__(self, callbacks: list):
        self.callbacks = callbacks

    def call(self, event: str, args, state, control, **kwargs) -> None:
        for callback in self.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                result = handler(args, state, control, **kwargs)
                if result is not None:
                    control = result


def tokenizer_saver() -> _TokenizerSaver:
    """The `tokenizer` a diffusion training notebook defines: nothing to save beside the LoRA."""
    return _TokenizerSaver()


def validation_images(validation_dir: str | Path) -> list[dict]:
    """The rendered validation images: [{step, prompt, seed, path (absolute)}], by step."""
    folder = Path(validation_dir)
    index_file = folder / VALIDATION_INDEX
    if not index_file.exists():
        return []
    entries = json.loads(index_file.read_text())
    return [{**e, "path": str(folder / e["path"])} for e in entries if (folder / e["path"]).exists()]


def show_validation_images(validation_dir: str | Path) -> None:
    """Display the validation images in the notebook, a row per step (the record keeps them)."""
    import base64

    from IPython.display import HTML, display

    entries = validation_images(validation_dir)
    if not entries:
        print("no validation images were rendered (VALIDATION_PROMPTS is empty)")
        return
    prompts = list(dict.fromkeys(e["prompt"] for e in entries))
    head = "".join(f"<th>{p}</th>" for p in prompts)
    rows = []
    for step in sorted({e["step"] for e in entries}):
        cells = []
        for prompt in prompts:
            found = [e for e in entries if e["step"] == step and e["prompt"] == prompt]
            data = base64.b64encode(Path(found[0]["path"]).read_bytes()).decode() if found else ""
            cells.append(f'<td><img src="data:image/png;base64,{data}" width="128"></td>' if data else "<td></td>")
        rows.append(f"<tr><th>step {step}</th>{''.join(cells)}</tr>")
    display(HTML(f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"))
