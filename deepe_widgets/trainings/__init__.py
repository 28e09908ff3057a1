"""Training types, one room each: chat, preference, reward (modelling), embedding, vision-language,
image-generation and SimpleTuner. Each type (a `TrainingType`) gives its base-model check, its dataset check, its demo
dataset, its standard columns, the notebook and defaults of its inference stage, and the directions
of the metrics it logs. The queue (`jobs.submit_training`), `inference` and the forms ask this
registry (`for_method`, `for_model`); nobody else keeps a per-type table.

A new training type is one module here that calls `register(...)`, plus its runtime half and its
notebooks."""

from __future__ import annotations

# the built-in types (each registers itself; `order` says which is asked first)
from . import chat, embedding, image_generation, preference, reward, simpletuner, vision_language  # noqa: F401
from .registry import (
                       TrainingType,
                       all_types,
                       config_class,
                       demo_dataset,
                       for_method,
                       for_model,
                       metric_directions,
                       register,
                       unregister,
)

__all__ = ["TrainingType", "all_types", "config_class", "demo_dataset", "for_method", "for_model", "metric_directions",
           "register", "unregister"]
