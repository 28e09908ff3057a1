"""Preference: prompt / chosen / rejected pairs (DPO-Demo, a chat method trained with TRL's DPOTrainer)."""

from __future__ import annotations

from .. import datasets, store
from ..config import TrainingTypeName
from ..demo_data import DPO_DEMO_DATASET
from ..errors import DeepeError
from .registry import TrainingType, register

# The losses TRL 1.16's DPOConfig accepts.
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def check_preference_training(dataset_row: store.DatasetRecord, values: dict) -> None:
    """DPO-Demo's checks: a beta above 0, losses TRL knows (with the label smoothing they need), and
    a dataset of prompt / chosen / rejected pairs whose two responses differ."""
    beta = values.get("BETA", 0.1)
    if not isinstance(beta, (int, float)) or beta <= 0:
        raise DeepeError(f"BETA must be above 0, not {beta!r}: it scales how far the adapter may move from "
                         f"the base model (0.1 is usual)", field="BETA")
    losses = [name.strip() for name in str(values.get("LOSS_TYPE", "sigmoid")).split(",") if name.strip()]
    unknown = [name for name in losses if name not in DPO_LOSS_TYPES]
    if not losses or unknown:
        raise DeepeError(f"LOSS_TYPE {values.get('LOSS_TYPE')!r} is not a DPO loss; choose from "
                         f"{', '.join(DPO_LOSS_TYPES)} (several joined by commas)", field="LOSS_TYPE")
    smoothing = values.get("LABEL_SMOOTHING", 0.0)
    if not 0 <= smoothing < 0.5:
        raise DeepeError(f"LABEL_SMOOTHING must be at least 0 and below 0.5, not {smoothing!r}",
                         field="LABEL_SMOOTHING")
    if "exo_pair" in losses and smoothing == 0:
        raise DeepeError("LOSS_TYPE exo_pair needs LABEL_SMOOTHING above 0 (the EXO paper uses 1e-3)",
                         field="LABEL_SMOOTHING")
    datasets.check_preference_pairs(dataset_row, values.get("PromptInputColumn", ""),
                                    values.get("PromptOutputColumn", ""), values.get("PromptRejectedColumn", ""),
                                    values.get("MAX_SAMPLES", 0))


class Preference(TrainingType):
    name = "preference"
    training_type = TrainingTypeName.CHAT
    order = 40
    methods = ("DPO-Demo",)
    demo_dataset = DPO_DEMO_DATASET
    standard_columns = "prompt/chosen/rejected"
    # TRL's DPO log: the chosen answer's lead over the rejected one widens as the preference is learnt
    metric_directions = {"rewards/margins": "max"}
    config_classes = {"DPO-Demo": "trl.DPOConfig"}

    def check_dataset(self, method_row, model_row, dataset_row, values) -> None:
        check_preference_training(dataset_row, values)


PREFERENCE = register(Preference())
