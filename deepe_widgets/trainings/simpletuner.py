"""SimpleTuner: text-to-image LoRA with SimpleTuner's own entry point, registered only where a
kernel can run it (`deepe_widgets.simpletuner`). Its stage reads its own config: no dataset check."""

from __future__ import annotations

from .. import simpletuner
from ..config import TrainingTypeName
from ..demo_data import SD_DEMO_DATASET
from .registry import TrainingType, register


class SimpleTuner(TrainingType):
    name = "simpletuner"
    training_type = TrainingTypeName.IMAGE_GENERATION
    order = 40
    methods = (simpletuner.METHOD,)
    demo_dataset = SD_DEMO_DATASET
    needs_model = "a text-to-image pipeline (a diffusers folder)"
    model_is = "a text-to-image pipeline"
    default_base_model = None
    standard_columns = "file_name/text (metadata.jsonl)"
    inference_folder = "sd_demo"
    evaluation_file = None  # SimpleTuner validates with its own settings; no evaluation stage yet
    suites = ()

    def check_available(self, method: str) -> None:
        simpletuner.check_available(method)

    def checks_data(self, method_row) -> bool:
        return False


SIMPLETUNER = register(SimpleTuner())
