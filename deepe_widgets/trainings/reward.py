"""Reward modelling: a chat model read as a sequence classifier with one output, trained on preference
pairs (Reward-Demo, TRL's RewardTrainer). Its models score a prompt with its answer; they generate
nothing, so the chat evaluation suites do not apply to them."""

from __future__ import annotations

from ..config import TrainingTypeName
from ..demo_data import DPO_DEMO_DATASET
from .preference import Preference
from .registry import register


class RewardModelling(Preference):
    name = "reward"
    training_type = TrainingTypeName.CHAT
    order = 40
    methods = ("Reward-Demo",)
    demo_dataset = DPO_DEMO_DATASET
    model_is = "a reward model (a chat model with a score head)"
    evaluation_file = None  # scored on held-out pairs while it trains (eval_accuracy, eval_margin)
    suites = ()
    scores_answers = True
    score_meaning = "higher means the reward model prefers this answer"
    evaluated_while_training = ("a reward model is evaluated on its held-out pairs while it trains: eval_accuracy "
                                "(how often it scores the chosen answer above the rejected one) and eval_margin "
                                "(by how much), in its training metrics")
    config_classes = {"Reward-Demo": "trl.RewardConfig"}
    # RewardTrainer's `margin` (chosen score minus rejected): wider is better; the name rule knows `margins` only
    metric_directions = {"margin": "max"}


REWARD = register(RewardModelling())
