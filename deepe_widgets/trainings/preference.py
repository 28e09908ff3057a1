"""Preference: prompt / chosen / rejected pairs (a chat method trained with one of TRL's preference
trainers: DPO-Demo, KTO-Demo, ORPO-Demo, SimPO-Demo; Reward-Demo has a room of its own, `reward`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import datasets, store
from ..config import TrainingTypeName
from ..demo_data import DPO_DEMO_DATASET
from ..errors import DeepeError
from .registry import TrainingType, register

# The losses TRL 1.16's DPOConfig accepts.
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# The losses TRL 1.16's KTOConfig accepts.
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


def _above_zero(values: dict, name: str, default: float, what: str) -> None:
    value = values.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise DeepeError(f"{name} must be above 0, not {value!r}: {what}", field=name)


def _not_negative(values: dict, name: str, default: float, what: str) -> None:
    value = values.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise DeepeError(f"{name} must be 0 or more, not {value!r}: {what}", field=name)


def _check_pairs(dataset_row: store.DatasetRecord, values: dict) -> None:
    datasets.check_preference_pairs(dataset_row, values.get("PromptInputColumn", ""),
                                    values.get("PromptOutputColumn", ""), values.get("PromptRejectedColumn", ""),
                                    values.get("MAX_SAMPLES", 0))


def check_preference_training(dataset_row: store.DatasetRecord, values: dict) -> None:
    """DPO-Demo's checks: a beta above 0, losses TRL knows (with the label smoothing they need), and
    a dataset of prompt / chosen / rejected pairs whose two responses differ."""
    _above_zero(values, "BETA", 0.1, "it scales how far the adapter may move from the base model (0.1 is usual)")
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
    _check_pairs(dataset_row, values)


def check_kto_training(dataset_row: store.DatasetRecord, values: dict) -> None:
    """KTO-Demo's checks: a beta and weights above 0, a loss TRL's KTO knows, more than one row a batch
    (its KL estimate pairs each row with another of its batch), and either preference pairs or
    prompt / completion / label rows."""
    _above_zero(values, "BETA", 0.1, "it scales how far the adapter may move from the base model (0.1 is usual)")
    loss = str(values.get("LOSS_TYPE", "kto")).strip()
    if loss not in KTO_LOSS_TYPES:
        raise DeepeError(f"LOSS_TYPE {values.get('LOSS_TYPE')!r} is not a KTO loss; choose "
                         f"{' or '.join(KTO_LOSS_TYPES)}", field="LOSS_TYPE")
    for name in ("DESIRABLE_WEIGHT", "UNDESIRABLE_WEIGHT"):
        _above_zero(values, name, 1.0, "it weighs one kind of answer's loss (1.0: as the other)")
    if loss == "kto" and values.get("BATCH_SIZE", 4) < 2:
        raise DeepeError("BATCH_SIZE must be at least 2 for KTO: its KL estimate compares each row with "
                         "another of the same batch", field="BATCH_SIZE")
    columns, _rows, _count = datasets.read_rows(Path(dataset_row.path), dataset_row.format, limit=1)
    if values.get("PromptRejectedColumn") or "rejected" in columns:  # pairs, which KTO unpairs
        _check_pairs(dataset_row, values)
    else:
        datasets.check_unpaired_preferences(dataset_row, values.get("PromptInputColumn", ""),
                                            values.get("PromptOutputColumn", ""), values.get("MAX_SAMPLES", 0))


def check_orpo_training(dataset_row: store.DatasetRecord, values: dict) -> None:
    """ORPO-Demo's checks: an odds-ratio weight above 0 and preference pairs."""
    _above_zero(values, "ODDS_RATIO_WEIGHT", 0.1, "it weighs the odds-ratio term beside the chosen answer's "
                                                   "loss (0.1 is usual)")
    _check_pairs(dataset_row, values)


def check_simpo_training(dataset_row: store.DatasetRecord, values: dict) -> None:
    """SimPO-Demo's checks: a reward scale above 0, a target margin of 0 or more, preference pairs."""
    _above_zero(values, "REWARD_SCALE", 2.0, "it scales the length-normalised reward (2 to 2.5 is usual)")
    _not_negative(values, "TARGET_MARGIN", 0.5, "the reward margin the chosen answer should win by")
    _check_pairs(dataset_row, values)


def check_reward_training(dataset_row: store.DatasetRecord, values: dict) -> None:
    """Reward-Demo's checks: a centring coefficient of 0 or more and preference pairs."""
    _not_negative(values, "CENTER_REWARDS_COEFFICIENT", 0.0, "it keeps the rewards near zero (0: off, 0.01 usual)")
    _check_pairs(dataset_row, values)


# each preference built-in's checks, by method: its own parameters, then its dataset
METHOD_CHECKS: dict[str, Callable[[store.DatasetRecord, dict], None]] = {
    "DPO-Demo": check_preference_training, "KTO-Demo": check_kto_training, "ORPO-Demo": check_orpo_training,
    "SimPO-Demo": check_simpo_training, "Reward-Demo": check_reward_training,
}


class Preference(TrainingType):
    name = "preference"
    training_type = TrainingTypeName.CHAT
    order = 40
    methods = ("DPO-Demo", "KTO-Demo", "ORPO-Demo", "SimPO-Demo")
    demo_dataset = DPO_DEMO_DATASET
    standard_columns = "prompt/chosen/rejected"
    # TRL's preference logs: the chosen answer's lead over the rejected one widens as the preference is
    # learnt; ORPO's log odds of the chosen answer over the rejected one rise with it
    metric_directions = {"rewards/margins": "max", "log_odds_ratio": "max", "log_odds_chosen": "max"}
    # ORPO and SimPO live in trl.experimental in TRL 1.16 (their descriptions say so)
    config_classes = {"DPO-Demo": "trl.DPOConfig", "KTO-Demo": "trl.KTOConfig",
                      "ORPO-Demo": "trl.experimental.orpo.ORPOConfig", "SimPO-Demo": "trl.experimental.cpo.CPOConfig"}

    def check_dataset(self, method_row, model_row, dataset_row, values) -> None:
        METHOD_CHECKS.get(method_row.name, check_preference_training)(dataset_row, values)


PREFERENCE = register(Preference())
