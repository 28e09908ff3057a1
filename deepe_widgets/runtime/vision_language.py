"""Kernel side of vision-language methods: the processor without torchvision, rows turned into chat
conversations with their image, answers by greedy decoding, and held-out exact match as a metric.

Imports nothing of the workbench but the runtime; transformers, datasets and PIL only when called."""

from __future__ import annotations

import re
import string
from pathlib import Path

from . import held_out_rows, log_event

IMAGE_COLUMNS = ("image", "images")  # the picture column, first found (images.IMAGE_COLUMNS: the same)


def load_processor(path: str):
    """The model's processor; an image processor that needs torchvision (not installable everywhere)
    is loaded with its PIL backend instead, and a processor that always builds a video processor
    needing torchvision (Qwen2-VL, Qwen2.5-VL) is loaded without it: pictures work, videos do not."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError, OSError) as exc:  # OSError: a saved processor without its video part
        if "torchvision" not in str(exc).lower() and "video processor" not in str(exc).lower():
            raise
        said = (str(exc).strip().splitlines() or [""])[0]
        log_event(f"{type(exc).__name__}: {said}; loading the processor with its PIL image backend", "WARNING")
    try:
        return _own_tokenizer(AutoProcessor.from_pretrained(path, backend="pil"), path)
    except (ImportError, ValueError, OSError) as exc:
        if "video processor" not in str(exc).lower():
            raise
    processor_class = _processor_class(path)
    log_event(f"{processor_class.__name__}'s video processor needs torchvision: loading it for images only",
              "WARNING")
    return _own_tokenizer(_images_only(processor_class).from_pretrained(path, backend="pil"), path)


def _processor_class(path: str):
    """The processor class a folder names (a saved processor or adapter says it; a model's config
    implies it)."""
    import json

    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING, processor_class_from_name

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = Path(path, name)
        named = json.loads(file.read_text()).get("processor_class") if file.is_file() else None
        if named and processor_class_from_name(named) is not None:
            return processor_class_from_name(named)
    return PROCESSOR_MAPPING[type(AutoConfig.from_pretrained(path))]


def _own_tokenizer(processor, path: str):
    """`backend="pil"` reaches the tokenizer too, which then passes for a slow one (no assistant-token
    mask for TRL's `assistant_only_loss`): the tokenizer is loaded again on its own."""
    from transformers import AutoTokenizer

    processor.tokenizer = AutoTokenizer.from_pretrained(path)
    return processor


def _images_only(processor_class):
    """`processor_class` without its video processor. transformers reads a processor's parts from its
    `__init__` signature, so a subclass whose `__init__` takes none is loaded from the image processor
    and the tokenizer alone (the parent's `__init__` is still what sets the processor up)."""
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(processor_class.__name__, (processor_class,), {"__init__": __init__,
                                                               "__module__": processor_class.__module__})


def _image_path(dataset_path: str, value) -> str:
    if isinstance(value, list):
        value = value[0]
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else Path(dataset_path).parent / path)


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def vl_conversations(raw, dataset_path: str, input_column: str = "", output_column: str = "",
                     system_prompt: str = "", eval_fraction: float = 0.1, seed: int = 42):
    """(train, held_out) datasets of `image` (a PIL image) and `messages` (system, user, assistant).

    Rows come as chat `messages`, or as two columns (`input_column` / `output_column`, by default
    `question` / `answer`). Rows whose `split` is a held-out name are held out; without a `split`
    column, `eval_fraction` of the rows is (chosen by `seed`)."""
    from datasets import Image

    columns = raw.column_names
    image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
    if image_column is None:
        raise ValueError(f"the dataset has no `image` column (columns: {columns})")
    use_messages = not (input_column or output_column) and "messages" in columns
    question, answer = input_column or "question", output_column or "answer"
    if not use_messages and not {question, answer} <= set(columns):
        raise ValueError(f"the dataset has no `messages` column and no {question!r} / {answer!r} columns; "
                         f"name them with PromptInputColumn and PromptOutputColumn (columns: {columns})")

    def to_conversation(row):
        if use_messages:
            messages = [dict(m) for m in row["messages"]]
        else:
            messages = [{"role": "user", "content": str(row[question])},
                        {"role": "assistant", "content": str(row[answer])}]
        messages = [{"role": m["role"], "content": _text(m["content"])} for m in messages]
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        return {"image": _image_path(dataset_path, row[image_column]), "messages": messages}

    train_rows, held = held_out_rows(raw, columns, eval_fraction, seed)
    converted = raw.map(to_conversation, remove_columns=columns, load_from_cache_file=False)
    converted = converted.cast_column("image", Image())
    return converted.select(train_rows), converted.select(held)


def normalise_answer(text: str) -> str:
    """Lower case, without surrounding punctuation and spaces: 'Red.' matches 'red'."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip(string.punctuation + " ")


def answer(model, processor, image, prompt_messages: list[dict], max_new_tokens: int = 32,
           temperature: float = 0.0) -> str:
    """The model's reply to `prompt_messages` (text contents) about `image`."""
    import torch

    inputs = processor(images=[image], text=[_prompt_text(processor, image, prompt_messages)],
                       return_tensors="pt").to(model.device, dtype=model.dtype)
    tokenizer = getattr(processor, "tokenizer", processor)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _prompt_text(processor, image, prompt_messages: list[dict]) -> str:
    from trl.data_utils import prepare_multimodal_messages

    messages = prepare_multimodal_messages([dict(m) for m in prompt_messages], images=[image])
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def answers(model, processor, images: list, prompts: list[list[dict]], max_new_tokens: int = 32,
            batch_size: int = 8) -> list[str]:
    """Greedy replies to many questions, each about its own image, `batch_size` at a time: the
    prompts are padded on the LEFT, so every reply starts right after its prompt (the replies
    `answer` gives one at a time, in a fraction of the time on a GPU)."""
    import torch

    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    replies: list[str] = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in range(0, len(prompts), max(1, int(batch_size))):
            batch_images = list(images[start:start + batch_size])
            texts = [_prompt_text(processor, image, messages)
                     for image, messages in zip(batch_images, prompts[start:start + batch_size])]
            inputs = processor(images=batch_images, text=texts, return_tensors="pt",
                               padding=True).to(model.device, dtype=model.dtype)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            prompt_length = inputs["input_ids"].shape[1]
            replies += [tokenizer.decode(row[prompt_length:], skip_special_tokens=True).strip() for row in out]
    finally:
        tokenizer.padding_side = side
    return replies


def exact_match(model, processor, held_out, max_new_tokens: int = 16, batch_size: int = 8) -> float:
    """The share of held-out questions the model answers exactly (after `normalise_answer`), asked
    `batch_size` at a time."""
    if len(held_out) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    try:
        rows = list(held_out)
        replies = answers(model, processor, [row["image"] for row in rows],
                          [row["messages"][:-1] for row in rows], max_new_tokens, batch_size)
    finally:
        model.train(was_training)
    right = sum(normalise_answer(reply) == normalise_answer(row["messages"][-1]["content"])
                for reply, row in zip(replies, rows))
    return right / len(rows)


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class ExactMatchCallback(_callback_base()):
    """Every `every` steps, and once before training, logs `eval_exact_match` on the held-out
    questions through the trainer (set `.trainer` after building it), so it streams like the loss."""

    def __init__(self, processor, held_out, every: int = 10, max_new_tokens: int = 16, batch_size: int = 8):
        self.processor, self.held_out = processor, held_out
        self.every, self.max_new_tokens, self.batch_size = int(every or 0), max_new_tokens, batch_size
        self.trainer = None
        self._last_step = -1

    def _measure(self, state, control) -> None:
        if self.trainer is None or not self.every or len(self.held_out) == 0 or state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        score = exact_match(self.trainer.model, self.processor, self.held_out, self.max_new_tokens,
                            self.batch_size)
        due = control.should_log  # logging clears it: the step's loss must still be logged after this
        self.trainer.log({"eval_exact_match": score})
        control.should_log = self.trainer.control.should_log = due

    def on_train_begin(self, args, state, control, **kwargs):
        self._measure(state, control)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and (state.global_step % self.every == 0 or state.global_step >= state.max_steps):
            self._measure(state, control)
