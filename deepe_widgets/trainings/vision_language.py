"""Vision-language: an image beside a question / answer (VL-Demo). The data helpers (`demo-vl`, the
model and dataset checks) live in `deepe_widgets.vision_language`."""

from __future__ import annotations

from .. import vision_language as vl
from ..config import TrainingTypeName
from .registry import TrainingType, register


class VisionLanguage(TrainingType):
    name = "vision-language"
    training_type = TrainingTypeName.VISION_LANGUAGE
    order = 20
    demo_dataset = vl.VL_DEMO_DATASET
    config_classes = {"VL-Demo": "trl.SFTConfig"}
    no_four_bit = "its vision-language model loads unquantised"
    needs_model = "an image + text model (vision-language, such as SmolVLM or Qwen2.5-VL)"
    model_is = "an image + text model"
    default_base_model = None
    standard_columns = "messages, or question/answer beside image"
    inference_folder = "vl_demo"
    evaluation_file = "evaluation/vision_language.ipynb"
    suites = ("generation",)
    takes_image = True

    def recognizes(self, model_row) -> bool:
        return vl.is_vision_language_model(model_row.path)

    def check_dataset(self, method_row, model_row, dataset_row, values) -> None:
        vl.check_vl_dataset(dataset_row, values)


VISION_LANGUAGE = register(VisionLanguage())
