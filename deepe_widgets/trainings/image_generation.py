"""Image generation: captioned images for a diffusers text-to-image pipeline (SD-Demo). The image
folder helpers (metadata, checks, thumbnails, the demo pictures) live in `deepe_widgets.image_data`."""

from __future__ import annotations

from pathlib import Path

from .. import image_data
from ..config import TrainingTypeName
from ..demo_data import SD_DEMO_DATASET
from .registry import TrainingType, register


class ImageGeneration(TrainingType):
    name = "image-generation"
    training_type = TrainingTypeName.IMAGE_GENERATION
    order = 30
    methods = ("SD-Demo",)  # trained on images with captions
    config_classes = {"SD-Demo": "deepe_widgets.runtime.image_generation.DiffusionTrainingArguments"}
    demo_dataset = SD_DEMO_DATASET
    needs_model = "a text-to-image pipeline (Stable Diffusion, a diffusers folder)"
    model_is = "a text-to-image pipeline (Stable Diffusion)"
    default_base_model = None
    standard_columns = "file_name/text (metadata.jsonl)"
    inference_folder = "sd_demo"
    evaluation_file = "evaluation/image_generation.ipynb"
    suites = ("images",)
    default_suite = "images"
    evaluation_parameters = ("RESOLUTION", "PREDICTION_TYPE", "VALIDATION_SEED", "VALIDATION_INFERENCE_STEPS",
                             "GUIDANCE_SCALE")

    def recognizes(self, model_row) -> bool:
        return Path(model_row.path, "model_index.json").is_file()  # a diffusers pipeline

    def check_dataset(self, method_row, model_row, dataset_row, values) -> None:
        image_data.check_image_dataset(dataset_row)


IMAGE_GENERATION = register(ImageGeneration())
