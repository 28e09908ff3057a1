"""Chat: instruction / response pairs for a text model (SFT-Demo, GRPO-Demo, MLX-Demo, the templates)."""

from __future__ import annotations

from .registry import TrainingType, register


class Chat(TrainingType):
    """The defaults of TrainingType are chat's: prompt / response columns, the shared inference notebook."""

    config_classes = {"SFT-Demo": "trl.SFTConfig", "GRPO-Demo": "trl.GRPOConfig",
                      "MLX-Demo": "deepe_widgets.runtime.mlx.MLXTrainingArguments"}


CHAT = register(Chat())
