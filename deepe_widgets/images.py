"""Images named by datasets: paths relative to the dataset file, each checked to be a readable image
(vision-language datasets are refused at registration when one is not), and thumbnails for previews.
`image_data` (text-to-image folders) builds on the same pieces."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from .errors import DeepeError
from .paths import check_allowed, is_allowed

# A vision-language dataset's picture column (runtime.vision_language.IMAGE_COLUMNS reads the same;
# a test keeps them equal).
IMAGE_COLUMNS = ("image", "images")


def image_column(columns, names: tuple[str, ...] = IMAGE_COLUMNS) -> str | None:
    """The column holding image paths: the first of `names` the dataset has (by default a
    vision-language dataset's; a text-to-image dataset's are `image_data.IMAGE_COLUMNS`)."""
    return next((c for c in names if c in columns), None)


def image_paths(value) -> list[str]:
    """The paths a row's image cell names: one path, or a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return []


def resolve_image(dataset_file: Path, value: str) -> Path:
    """An image path as a row writes it, relative to the dataset file's folder (or absolute)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else dataset_file.parent / path


def check_images(dataset_file: Path, rows: list[dict], column: str, name: str = "") -> int:
    """Open every image the rows name; refuse, naming the first bad row, a missing, unreadable or
    non-image file. Returns how many images were checked."""
    label = f"dataset {name!r}" if name else str(dataset_file)
    checked = 0
    for number, row in enumerate(rows, 1):
        values = image_paths(row.get(column))
        if not values:
            raise DeepeError(f"{label} row {number} has no image path in {column!r} (a path relative to "
                             f"{dataset_file.name}'s folder)", field="dataset")
        for value in values:
            path = resolve_image(dataset_file, value)
            check_allowed(path, "dataset", f"{label} row {number}: image")
            if not path.is_file():
                raise DeepeError(f"{label} row {number}: image {value!r} does not exist ({path})", field="dataset")
            if (problem := unreadable(path)) is not None:
                raise DeepeError(f"{label} row {number}: {value!r} is not a readable image "
                                 f"({type(problem).__name__})", field="dataset")
            checked += 1
    return checked


def unreadable(path: Path) -> Exception | None:
    """Why `path` is not a readable image (what PIL raised: FileNotFoundError for a missing file), or
    None when it is one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return exc
    return None


def thumbnail_png(path: Path, size: int) -> bytes | None:
    """A PNG of the image at most `size` pixels a side, or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    except (OSError, ValueError):
        return None
    return buffer.getvalue()


def thumbnail_html(dataset_file: Path, value, size: int = 48) -> str:
    """An <img> of a row's (first) image, at most `size` pixels a side, inlined as a PNG data URI
    (the Voila app serves no files); the path in words when it cannot be read."""
    paths = image_paths(value)
    if not paths:
        return html.escape(str(value))
    image = resolve_image(Path(dataset_file), paths[0])
    png = thumbnail_png(image, size) if is_allowed(image) else None  # never read outside the allowed folders
    if png is None:
        return html.escape(paths[0])
    data = base64.b64encode(png).decode("ascii")
    return (f"<img src='data:image/png;base64,{data}' alt='{html.escape(paths[0], quote=True)}' "
            f"title='{html.escape(paths[0], quote=True)}' style='max-width:{size}px;max-height:{size}px'>")
