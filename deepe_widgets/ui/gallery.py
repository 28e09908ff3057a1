"""The validation images of a text-to-image training, by step: a slider over the steps the training
rendered at and one picture per validation prompt (same seed at every step, so what changes is the
model). Shown in Evaluation Data beside the loss chart; hidden for a training that renders none."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w

from ..runtime.image_generation import VALIDATION_INDEX, validation_images


class ValidationGallery(w.VBox):
    """Pictures by step from `<run folder>/validation/index.json`; `refresh` picks up new steps."""

    def __init__(self, run_dir: str | Path | None = None, image_width: str = "160px"):
        self.run_dir = Path(run_dir) if run_dir else None
        self.image_width = image_width
        self.title = w.HTML("<b>Validation images</b> <i>(same prompts, same seed, at each step)</i>")
        self.step = w.SelectionSlider(options=[0], value=0, description="step", continuous_update=False,
                                      layout=w.Layout(width="420px"))
        self.step.observe(lambda _c: self._render(), "value")
        self.pictures = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.entries: list[dict] = []
        self._seen = None  # (mtime, size) of the index last read
        super().__init__([self.title, self.step, self.pictures])
        self.add_class("deepe-gallery")
        self.layout.display = "none"
        self.refresh()

    @property
    def steps(self) -> list[int]:
        return sorted({e["step"] for e in self.entries})

    def refresh(self, run_dir: str | Path | None = None) -> bool:
        """Re-read the index when it changed; True when new images were found. Follows the newest
        step unless the user moved the slider back."""
        if run_dir:
            self.run_dir = Path(run_dir)
        if self.run_dir is None:
            return False
        index = self.run_dir / "validation" / VALIDATION_INDEX
        try:
            stat = index.stat()
        except OSError:
            return False
        if self._seen == (stat.st_mtime_ns, stat.st_size):
            return False
        self._seen = (stat.st_mtime_ns, stat.st_size)
        try:
            self.entries = validation_images(self.run_dir / "validation")
        except ValueError:  # being written: the next refresh reads it whole
            self._seen = None
            return False
        steps = self.steps
        if not steps:
            return False
        following = self.step.value == self.step.options[-1]
        before = self.step.value
        self.step.options = steps  # keeps the value when it is still there
        self.step.value = steps[-1] if following or before not in steps else before
        self.layout.display = None
        self._render()
        return True

    def _render(self) -> None:
        shown = [e for e in self.entries if e["step"] == self.step.value]
        cards = []
        for entry in shown:
            try:
                data = Path(entry["path"]).read_bytes()
            except OSError:
                continue
            caption = w.HTML(f"<small>{html.escape(entry['prompt'])}<br>seed {entry.get('seed', '')}</small>",
                             layout=w.Layout(width=self.image_width))
            image = w.Image(value=data, format="png", layout=w.Layout(width=self.image_width))
            image.add_class("deepe-validation-image")
            cards.append(w.VBox([image, caption]))
        self.pictures.children = tuple(cards)
