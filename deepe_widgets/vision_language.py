"""Vision-language training: the `demo-vl` dataset of shapes and colours drawn with PIL, and the
checks a VL training's dataset gets before it is queued (its images; the base model's kind is
the training type's check)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import config, store
from .datasets import add_dataset, read_rows
from .errors import DeepeError
from .images import check_images, image_column

VL_DEMO_DATASET = "demo-vl"
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 20)}
QUESTIONS = {"colour": "What colour is the shape?", "shape": "What shape is this?"}


def draw_shape(shape: str, colour: str, size: int = 64, seed: int = 0):
    """A `size`×`size` PIL image: one filled shape of that colour on a light background, placed and
    scaled by `seed` so no two images are the same."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randint(225, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    extent = rng.randint(size * 5 // 10, size * 8 // 10)
    left, top = rng.randint(0, size - extent), rng.randint(0, size - extent)
    box = (left, top, left + extent, top + extent)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(left + extent // 2, top), (left, top + extent), (left + extent, top + extent)], fill=fill)
    return image


def write_demo_vl(folder: Path, variants: int = 5) -> Path:
    """Draw every shape in every colour `variants` times under `folder/images/` and write
    `folder/demo-vl.jsonl`: per image a colour and a shape question (chat messages), the image path
    relative to the file, and a `split` (the last variant of each is held out)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for variant in range(variants):
        for shape in SHAPES:
            for colour in COLOURS:
                seed += 1
                name = f"{shape}-{colour}-{variant}.png"
                draw_shape(shape, colour, seed=seed).save(images / name)
                split = "test" if variant == variants - 1 else "train"
                for kind, answer in (("colour", colour), ("shape", shape)):
                    rows.append({"image": f"images/{name}", "split": split, "messages": [
                        {"role": "user", "content": QUESTIONS[kind]}, {"role": "assistant", "content": answer}]})
    path = folder / f"{VL_DEMO_DATASET}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ensure_demo_vl_dataset() -> None:
    """Draw and register `demo-vl` under the workspace (once)."""
    if store.get_one(store.DatasetRecord, name=VL_DEMO_DATASET) is not None:
        return
    add_dataset(VL_DEMO_DATASET, write_demo_vl(config.workspace_dir("datasets", VL_DEMO_DATASET)))


def is_vision_language_model(path: str | Path) -> bool:
    """A model folder whose config has a vision tower (LLaVA, Qwen2-VL, SmolVLM/Idefics3, …)."""
    try:
        cfg = json.loads(Path(path, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "vision_config" in cfg or any(
        a.endswith(("ForConditionalGeneration", "ForImageTextToText", "ForVision2Seq")) and "vision" in json.dumps(cfg)
        for a in cfg.get("architectures", []))


def check_vl_dataset(record: store.DatasetRecord, values: dict) -> None:
    """Refuse a VL dataset without an image column, without `messages` or prompt/response columns,
    or with a row whose image is missing or unreadable (naming the row)."""
    columns, rows, _count = read_rows(Path(record.path), record.format)
    column = image_column(columns)
    if column is None:
        raise DeepeError(f"dataset {record.name!r} has no image column: a vision-language training needs a "
                         f"picture in each row (an image column, its path relative to the file) beside chat "
                         f"messages or question and answer columns; its columns are {', '.join(columns)}",
                         field="dataset")
    prompt, response = values.get("PromptInputColumn", ""), values.get("PromptOutputColumn", "")
    if prompt or response:
        for field, name in (("PromptInputColumn", prompt), ("PromptOutputColumn", response)):
            if name not in columns:
                raise DeepeError(f"dataset {record.name!r} has no column {name!r} ({field}); "
                                 f"columns: {', '.join(columns)}", field=field)
    elif "messages" not in columns and not {"question", "answer"} <= set(columns):
        raise DeepeError(f"dataset {record.name!r} has no `messages` column; name the question and answer "
                         f"columns with PromptInputColumn and PromptOutputColumn (columns: {', '.join(columns)})",
                         field="PromptInputColumn")
    check_images(Path(record.path), rows, column, record.name)
