"""Image datasets for text-to-image methods: a folder of images with captions (`metadata.jsonl` with
`file_name` + `text`, the Hugging Face imagefolder convention) or a jsonl with image paths.

Registration reads every image once, so an unreadable image or a missing caption is refused
then, naming the file and line, not an hour into a training.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

from . import images
from .errors import DeepeError
from .images import resolve_image, thumbnail_png, unreadable
from .paths import check_allowed, is_allowed
from .runtime.image_generation import CAPTION_COLUMNS, IMAGE_COLUMNS  # what the kernel reads, the workbench checks

METADATA = "metadata.jsonl"
DEMO_CONCEPT = "a zqx badge"  # a made-up word: no base model has seen it


def dataset_file(path: Path) -> Path:
    """The file a dataset is registered by: a folder's `metadata.jsonl`, or the file itself."""
    if path.is_dir():
        metadata = path / METADATA
        if not metadata.is_file():
            raise DeepeError(f"folder {str(path)!r} has no {METADATA}: an image folder needs one line per image "
                             f'like {{"file_name": "0001.png", "text": "a caption"}}', field="path")
        return metadata
    return path


def image_column(columns) -> str | None:
    """The column naming image files, when the dataset is a text-to-image dataset (`images.image_column`
    with the columns the kernel reads)."""
    return images.image_column(columns, IMAGE_COLUMNS)


def check_image_rows(metadata: Path, rows: list[dict]) -> None:
    """Refuse a row without a caption or whose image is missing or unreadable, naming the file."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DeepeError("reading image datasets needs pillow: pip install 'deepe-widgets[image]'",
                         field="dataset") from None

    columns = {key for row in rows for key in row}
    column = image_column(sorted(columns))
    if column is None:
        raise DeepeError(f"{metadata} names no images: each line needs one of {', '.join(IMAGE_COLUMNS)}",
                         field="dataset")
    for number, row in enumerate(rows, 1):
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            raise DeepeError(f"{metadata}: line {number} has no image ({column!r} is empty)", field="dataset")
        image = resolve_image(metadata, value)
        check_allowed(image, "dataset", f"{metadata.name} line {number}: image")
        if not any(isinstance(row.get(c), str) and row[c].strip() for c in CAPTION_COLUMNS):
            raise DeepeError(f"{metadata}: line {number} ({value}) has no caption: give it a "
                             f"{' or '.join(repr(c) for c in CAPTION_COLUMNS)}", field="dataset")
        problem = unreadable(image)
        if isinstance(problem, FileNotFoundError):
            raise DeepeError(f"image {image} (line {number} of {metadata.name}) does not exist", field="dataset")
        if problem is not None:
            raise DeepeError(f"image {image} (line {number} of {metadata.name}) cannot be read: {problem}",
                             field="dataset")


def read_metadata(metadata: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DeepeError(f"{metadata}: line {number} is not valid JSON ({exc.msg})", field="dataset") from None
    return rows


def check_image_dataset(record) -> None:
    """A text-to-image training's check at submit: the registered dataset is an image dataset whose
    images are all still readable."""
    metadata = Path(record.path)
    if image_column(list(record.columns)) is None:
        raise DeepeError(f"dataset {record.name!r} is not an image dataset: a text-to-image training needs a "
                         f"picture and its caption in each row (a folder of images with a {METADATA} naming "
                         f"them: a {IMAGE_COLUMNS[0]} column, or {', '.join(IMAGE_COLUMNS[1:])}, and a "
                         f"{CAPTION_COLUMNS[0]} column, or {', '.join(CAPTION_COLUMNS[1:])}); its columns are "
                         f"{', '.join(record.columns)}", field="dataset")
    check_image_rows(metadata, read_metadata(metadata))


def thumbnails(metadata: Path, rows: list[dict], size: int = 96) -> list[str]:
    """PNG thumbnails (base64) of the rows' images, for a preview; '' for one that cannot be read."""
    column = image_column(sorted({key for row in rows for key in row}))
    images = [resolve_image(metadata, str(row.get(column, ""))) for row in rows]
    pngs = [thumbnail_png(image, size) if is_allowed(image) else None for image in images]
    return [base64.b64encode(png).decode() if png else "" for png in pngs]


def write_demo_images(folder: Path, count: int = 16, size: int = 512, seed: int = 0) -> Path:
    """The `demo-sd` image folder: a made-up concept (`a zqx badge`: a red disc with a yellow
    five-pointed star on a teal ground) at different places and sizes, with captions."""
    import math

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    grounds = [("teal", (0, 128, 128)), ("navy", (20, 30, 90)), ("white", (240, 240, 235))]
    lines = []
    for number in range(count):
        ground_name, ground = grounds[number % len(grounds)]
        image = Image.new("RGB", (size, size), ground)
        draw = ImageDraw.Draw(image)
        radius = rng.randint(size // 4, size // 3)
        cx, cy = rng.randint(radius, size - radius), rng.randint(radius, size - radius)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(210, 30, 40))
        points = []
        for k in range(10):
            r = radius * (0.8 if k % 2 == 0 else 0.35)
            angle = math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy - r * math.sin(angle)))
        draw.polygon(points, fill=(250, 215, 0))
        name = f"{number:04d}.png"
        image.save(folder / name)
        lines.append({"file_name": name, "text": f"{DEMO_CONCEPT} on a {ground_name} background"})
    (folder / METADATA).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return folder
