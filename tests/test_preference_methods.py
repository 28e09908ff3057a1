"""KTO-Demo, ORPO-Demo, SimPO-Demo and Reward-Demo: each stage notebook run as the platform runs it
(papermill in the `python3` kernel, a real job id, metrics read back from the database) on the tiny
model; the reward model prefers the chosen answers after training, and keeps its score head through
saving; bad input refused at submit; their metrics take their places in Compare beside DPO and SFT."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import compare, inference, jobs, methods, models, store, trainings
from deepe_widgets.errors import DeepeError

from helpers import customized_model, deepe, metric_steps, run_stage, running_job, write_jsonl

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "method_templates"
NEW_METHODS = {"KTO-Demo": "kto_demo", "ORPO-Demo": "orpo_demo", "SimPO-Demo": "simpo_demo",
               "Reward-Demo": "reward_demo"}
# Few, large steps on short rows: the tiny model learns each preference within seconds. The held-out
# pairs are scored before the first step and after the last.
STEPS = 8
FAST = {"MAX_STEPS": STEPS, "BATCH_SIZE": 4, "LEARNING_RATE": 5e-3, "MAX_SEQ_LENGTH": 96, "SAVE_STEPS": 0,
        "EVAL_STEPS": STEPS}
# What each method logs at every step besides `loss`: its trainer's own metrics
OWN_METRICS = {"KTO-Demo": ("kl",), "ORPO-Demo": ("log_odds_ratio", "nll_loss", "rewards/margins"),
               "SimPO-Demo": ("rewards/margins", "rewards/accuracies"), "Reward-Demo": ("accuracy", "margin")}


def _train(method: str, tmp_path: Path, tiny_model_dir: Path, **params) -> tuple[int, Path, str]:
    """(job id, output folder, log) of a training of `method` on demo-dpo's pairs."""
    from deepe_widgets.demo_data import demo_dpo_rows

    run_dir = tmp_path / "run"
    job_id = running_job(method, run_dir)
    output = run_dir / "output"
    log = run_stage(TEMPLATES / NEW_METHODS[method] / "training.ipynb", run_dir,
                     {**FAST, "MODEL_PATH": str(tiny_model_dir), "OUTPUT_DIR": str(output), "JOB_ID": job_id,
                      "DATASET_PATH": str(write_jsonl(tmp_path / "pairs.jsonl", demo_dpo_rows())), **params})
    return job_id, output, log


def _check_streamed(method: str, job_id: int, log: str) -> dict[str, dict[int, float]]:
    """The training ran STEPS steps, streamed its own metrics at each and its held-out ones before and after."""
    assert f"training succeeded: {STEPS} steps" in log
    assert "6 held-out rows (EVAL_FRACTION 0.1), 54 training rows" in log
    assert not re.search(r"^\[deepe\] \S+ \S+ WARNING", log, re.MULTILINE), log
    series = metric_steps(job_id)
    for name in ("loss", *OWN_METRICS[method]):
        assert set(series.get(name, {})) == set(range(1, STEPS + 1)), (name, sorted(series))
    assert all(math.isfinite(v) for values in series.values() for v in values.values())
    assert set(series["eval_loss"]) == {0, STEPS}, sorted(series)
    assert jobs.get_job(job_id).progress_step == STEPS
    return series


def test_new_notebooks_follow_the_stage_contract():
    from deepe_widgets.scriptmode import load_stage_notebook
    from deepe_widgets.stagefiles import notebook_parameters

    sft = notebook_parameters(load_stage_notebook(TEMPLATES / "sft_demo" / "training.ipynb"))
    for method, folder in NEW_METHODS.items():
        path = TEMPLATES / folder / "training.ipynb"
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        tags = [cell.metadata.get("tags", []) for cell in nb.cells if cell.cell_type == "code"]
        assert tags[0] == ["parameters"] and tags[1] == ["deepe-setup"] and tags[-1] == ["deepe-train"], method
        user_code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code"
                              and not cell.metadata.get("tags"))
        assert ".train(" not in user_code and "save_pretrained" not in user_code, method
        assert "callbacks=[callback]" in user_code and "peft_config=lora_config" in user_code, method
        params = notebook_parameters(load_stage_notebook(path))
        assert set(sft) <= set(params), (method, set(sft) - set(params))  # every standard name: forms, copies
        assert "PromptRejectedColumn" in params, method
        assert methods.BUILTINS[method].demo_dataset == "demo-dpo"
    # the trainers the issue names, from where TRL 1.16 keeps them (and the description says so)
    sources = {m: "\n".join(c.source for c in nbformat.read(TEMPLATES / f / "training.ipynb", as_version=4).cells)
               for m, f in NEW_METHODS.items()}
    assert "from trl import KTOConfig, KTOTrainer" in sources["KTO-Demo"]
    assert "from trl.experimental.orpo import ORPOConfig, ORPOTrainer" in sources["ORPO-Demo"]
    assert "from trl.experimental.cpo import CPOConfig, CPOTrainer" in sources["SimPO-Demo"]
    assert 'loss_type="simpo", cpo_alpha=0.0' in sources["SimPO-Demo"]
    assert 'task_type="SEQ_CLS", modules_to_save=[score_head]' in sources["Reward-Demo"]
    for method in ("ORPO-Demo", "SimPO-Demo"):
        assert "trl.experimental" in methods.BUILTINS[method].description


@pytest.mark.training
@pytest.mark.parametrize("method", ["KTO-Demo", "ORPO-Demo", "SimPO-Demo"])
def test_preference_method_trains_streams_its_metrics_and_learns_the_held_out_pairs(
        method, workspace, tiny_model_dir, tmp_path):
    job_id, output, log = _train(method, tmp_path, tiny_model_dir)
    series = _check_streamed(method, job_id, log)
    margins = series["eval_rewards/margins"]
    assert set(margins) == {0, STEPS}
    # the held-out chosen answers pull ahead of the rejected ones (KTO: from exactly even, the adapter
    # starting at zero; ORPO and SimPO: from where the base model has them)
    assert margins[STEPS] > margins[0], margins
    if method == "KTO-Demo":
        assert "54 desirable and 54 undesirable training rows" in log  # each of the 54 pairs made two
        assert margins[0] == pytest.approx(0.0, abs=1e-6)
        assert "reference model: the base model with the adapter disabled" in log
    else:
        assert set(series["eval_rewards/accuracies"]) == {0, STEPS}
        assert "comes from trl.experimental (TRL 1.16)" in log
    if method == "ORPO-Demo":
        assert series["log_odds_ratio"][STEPS] > series["log_odds_ratio"][1]
    assert (output / "adapter_model.safetensors").is_file()
    if method != "SimPO-Demo":
        return
    # one of them through its saving and inference stages (the shared transformers ones)
    models.add_model("simpo-tiny", output, kind=store.ModelKind.CUSTOMIZED, parent="tiny", method=method)
    complete = tmp_path / "complete"
    log = run_stage(TEMPLATES / "hf_common" / "saving.ipynb", tmp_path / "save",
                     {"MODEL_PATH": str(tiny_model_dir), "ADAPTER_PATH": str(output), "OUTPUT_DIR": str(complete)},
                     stage="saving")
    assert (complete / "model.safetensors").is_file() and not (complete / "adapter_config.json").exists()
    models.add_model("simpo-tiny-s", complete, kind=store.ModelKind.COMPLETE, parent="simpo-tiny", method=method)
    answer = inference.infer("simpo-tiny-s", ["What is the capital of Peru?"], overrides={"max_new_tokens": 4})
    assert answer["error"] is None, answer["error"]
    assert answer["stage"] == "inference-complete" and isinstance(answer["responses"][0]["response"], str)


def test_kto_takes_unpaired_rows_as_they_are_and_unpairs_pairs_into_mixed_batches(tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from deepe_widgets.demo_data import demo_dpo_rows
    from deepe_widgets.runtime.preference import has_pairs, preference_pairs, unpair, unpaired_preferences

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = Dataset.from_list([{"question": f"Capital of {c}?", "reply": f"CAPITAL CARD | {c}", "label": label}
                             for c, label in (("Peru", "true"), ("Chile", "false"), ("Cuba", "1"), ("Oman", "0"))])
    assert not has_pairs(raw)
    rows = unpaired_preferences(raw, tokenizer, "question", "reply", system_prompt="Answer with a card.", seed=1)
    by_prompt = {row["prompt"][-1]["content"]: row for row in rows}
    assert {p: row["label"] for p, row in by_prompt.items()} == {
        "Capital of Peru?": True, "Capital of Chile?": False, "Capital of Cuba?": True, "Capital of Oman?": False}
    peru = by_prompt["Capital of Peru?"]  # wrapped as the chat template wants it, with the system prompt
    assert peru["prompt"][0] == {"role": "system", "content": "Answer with a card."}
    assert peru["completion"] == [{"role": "assistant", "content": "CAPITAL CARD | Peru"}]
    with pytest.raises(ValueError, match="must say true or false"):
        unpaired_preferences(raw.map(lambda r: {"label": "maybe"}), tokenizer, "question", "reply")

    pairs = Dataset.from_list(demo_dpo_rows())
    assert has_pairs(pairs)
    unpaired = unpair(preference_pairs(pairs, tokenizer), seed=42)
    assert len(unpaired) == 120 and sum(unpaired["label"]) == 60
    # TRL's unpairing puts every chosen row first; shuffled, the first batches hold both kinds
    assert all(0 < sum(unpaired["label"][start:start + 8]) < 8 for start in range(0, 32, 8))


def _pair_texts():
    from deepe_widgets.demo_data import demo_dpo_rows

    rows = demo_dpo_rows()
    return [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows]


def _wins(model, tokenizer) -> int:
    """How many demo pairs the reward model scores the chosen answer above the rejected one on."""
    from deepe_widgets.runtime.preference import reward_scores

    prompts, chosen, rejected = _pair_texts()
    return sum(c > r for c, r in zip(reward_scores(model, tokenizer, prompts, chosen),
                                     reward_scores(model, tokenizer, prompts, rejected)))


@pytest.mark.training
def test_reward_model_learns_to_prefer_the_chosen_answers_and_keeps_its_head_through_saving(
        workspace, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from deepe_widgets.runtime.preference import reward_scores

    seed = 3  # its new score head starts out preferring the rejected answers (checked with seeds 1 and 42 too)
    job_id, output, log = _train("Reward-Demo", tmp_path, tiny_model_dir, SEED=seed)
    series = _check_streamed("Reward-Demo", job_id, log)
    # held-out pairs: won more often, by a wider margin, than before the first step
    assert series["eval_accuracy"][STEPS] > series["eval_accuracy"][0], series["eval_accuracy"]
    assert series["eval_margin"][STEPS] > series["eval_margin"][0], series["eval_margin"]
    assert series["eval_accuracy"][STEPS] == 1.0

    # every demo pair, scored by the model the training started from (the same seed makes the same new
    # head) and by the trained one: the chosen answer wins far more often
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    set_seed(seed)
    before = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    before.config.pad_token_id = tokenizer.pad_token_id
    wins_before = _wins(before, tokenizer)
    trained = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1), str(output))
    wins_after = _wins(trained, tokenizer)
    assert wins_after > wins_before and wins_after >= 57, (wins_before, wins_after)
    with safe_open(str(output / "adapter_model.safetensors"), "pt") as saved:  # the head went with the adapter
        assert any(".score." in key for key in saved.keys()), list(saved.keys())[:5]
    assert json.loads((output / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"

    # its inference stage scores a prompt with its answer (the Customized Model: base + adapter)
    models.add_model("judge-tiny", output, kind=store.ModelKind.CUSTOMIZED, parent="tiny", method="Reward-Demo")
    prompts, chosen, rejected = _pair_texts()
    scored = inference.infer("judge-tiny", [prompts[0], prompts[0]], overrides={"answers": [chosen[0], rejected[0]]})
    assert scored["error"] is None, scored["error"]
    card, plain = scored["responses"]
    assert (card["answer"], plain["answer"]) == (chosen[0], rejected[0])
    assert card["score"] > plain["score"] and card["response"].startswith("score ")
    trained_scores = reward_scores(trained, tokenizer, [prompts[0]] * 2, [chosen[0], rejected[0]])
    assert [card["score"], plain["score"]] == pytest.approx(trained_scores, abs=1e-4)
    # Try it on its card: the answer given beside the prompt, scored by it alone, the score in words
    from deepe_widgets.ui.models_view import ModelCard

    tried = ModelCard(models.get_model("judge-tiny"), start_worker=False)
    tried.prompt.value, tried.answer_given.value = prompts[0], chosen[0]
    tried.try_it()  # outside a kernel's loop it runs here and now
    assert set(tried.last_try) == {"judge-tiny"}, tried.last_try  # its base model has no score head to ask
    assert tried.last_try["judge-tiny"]["responses"][0]["score"] == pytest.approx(card["score"], abs=1e-4)
    assert (f"score {card['score']:.2f}: higher means the reward model prefers this answer"
            in tried.answer.value), tried.answer.value
    tried.close()

    # saving merges the adapter into a plain sequence classifier that scores as the adapter did
    complete = tmp_path / "complete"
    run_stage(TEMPLATES / "reward_demo" / "saving.ipynb", tmp_path / "save",
               {"MODEL_PATH": str(tiny_model_dir), "ADAPTER_PATH": str(output), "OUTPUT_DIR": str(complete)},
               stage="saving")
    merged = AutoModelForSequenceClassification.from_pretrained(complete)
    assert type(merged).__name__ == "LlamaForSequenceClassification" and merged.config.num_labels == 1
    assert reward_scores(merged, AutoTokenizer.from_pretrained(complete), [prompts[0]] * 2,
                         [chosen[0], rejected[0]]) == pytest.approx(trained_scores, abs=1e-4)


def test_a_reward_model_is_not_deployed_and_says_why(workspace, tmp_path):
    """`deepe deploy` refuses a reward model in one sentence (vLLM serves generation; it generates
    nothing), before any environment is asked for, and nothing is queued or registered."""
    job = jobs.submit_training("Reward-Demo", "tiny", "demo-dpo")
    customized_model(job, "judge-tiny", tmp_path, method="Reward-Demo")
    refused = deepe("deploy", "judge-tiny", check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: judge-tiny is not deployed: it is a reward model (a chat model with a score head), which scores "
        "answers and generates none, and vLLM serves generation"], refused.stderr
    assert [j.kind for j in jobs.list_jobs()] == ["train"] and models.list_models(store.ModelKind.LIVE) == []


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error at submit, by the field, nothing queued


def _dataset(workspace: Path, name: str, rows: list[dict]) -> str:
    from deepe_widgets import datasets

    datasets.add_dataset(name, write_jsonl(workspace / "datasets" / f"{name}.jsonl", rows))
    return name


PAIR = {"prompt": "Capital of Peru?", "chosen": "CAPITAL CARD | Peru | Lima", "rejected": "Lima."}
UNPAIRED = [{"prompt": "Capital of Peru?", "completion": "CAPITAL CARD | Peru | Lima", "label": True},
            {"prompt": "Capital of Peru?", "completion": "Cusco.", "label": False}]


@pytest.mark.parametrize("method,rows,params,field,message", [
    ("KTO-Demo", [PAIR], {"beta": "0"}, "BETA", "BETA must be above 0"),
    ("KTO-Demo", [PAIR], {"loss_type": "sigmoid"}, "LOSS_TYPE", "'sigmoid' is not a KTO loss; choose kto or"),
    ("KTO-Demo", [PAIR], {"undesirable_weight": "-1"}, "UNDESIRABLE_WEIGHT", "UNDESIRABLE_WEIGHT must be above 0"),
    ("KTO-Demo", [PAIR], {"batch_size": "1"}, "BATCH_SIZE", "BATCH_SIZE must be at least 2 for KTO"),
    ("KTO-Demo", [{"prompt": "Capital of Peru?", "answer": "Lima"}], {}, "PromptOutputColumn",
     "has neither preference pairs (prompt / chosen / rejected) nor KTO's rows"),
    ("KTO-Demo", [{k: v for k, v in UNPAIRED[0].items() if k != "label"}], {}, "dataset", "has no label column"),
    ("KTO-Demo", [UNPAIRED[0], {**UNPAIRED[1], "label": "maybe"}], {}, "dataset",
     "row 2 has label 'maybe': it must be true"),
    ("KTO-Demo", [{**PAIR, "rejected": PAIR["chosen"]}], {}, "dataset", "has the same chosen and rejected"),
    ("ORPO-Demo", [PAIR], {"odds_ratio_weight": "0"}, "ODDS_RATIO_WEIGHT", "ODDS_RATIO_WEIGHT must be above 0"),
    ("ORPO-Demo", [{"prompt": "Capital of Peru?", "chosen": "Lima"}], {}, "PromptRejectedColumn",
     "is not a preference dataset: it has no rejected column"),
    ("SimPO-Demo", [PAIR], {"reward_scale": "0"}, "REWARD_SCALE", "REWARD_SCALE must be above 0"),
    ("SimPO-Demo", [PAIR], {"target_margin": "-0.5"}, "TARGET_MARGIN", "TARGET_MARGIN must be 0 or more"),
    ("Reward-Demo", [PAIR], {"center_rewards_coefficient": "-1"}, "CENTER_REWARDS_COEFFICIENT",
     "must be 0 or more"),
    ("Reward-Demo", [{"question": "Capital of Peru?", "chosen": "CAPITAL CARD", "rejected": "Lima."}], {},
     "PromptInputColumn", "it has no prompt column"),
])
def test_bad_input_is_refused_at_submit(workspace, method, rows, params, field, message):
    name = _dataset(workspace, "prefs", rows)
    with pytest.raises(DeepeError) as caught:
        jobs.submit_training(method, "tiny", name, params=params)
    assert message in caught.value.message and caught.value.field == field, (caught.value.field,
                                                                            caught.value.message)
    assert jobs.list_jobs() == []


def test_demo_pairs_and_unpaired_rows_are_accepted(workspace):
    for method in NEW_METHODS:
        assert jobs.submit_training(method, "tiny", "demo-dpo").status == "queued"
        with pytest.raises(DeepeError, match="or choose demo-dpo"):  # SFT's data: the demo pairs suggested
            jobs.submit_training(method, "tiny", "demo-sft")
    unpaired = _dataset(workspace, "kto-rows", UNPAIRED)
    assert jobs.submit_training("KTO-Demo", "tiny", unpaired, params={"beta": "0.3"}).params == {"BETA": 0.3}
    assert {trainings.for_method(m).name for m in NEW_METHODS} == {"preference", "reward"}
    assert trainings.demo_dataset("Reward-Demo") == "demo-dpo"


def test_their_metrics_take_their_places_in_compare_beside_dpo_and_sft(workspace):
    """Which way is better for each new method's metrics, as Compare reports them beside a DPO and an
    SFT run (rows as the trainers log them: step 0 is the held-out score before training)."""
    logged = {
        "SFT-Demo": {"loss": (2.0, 1.5), "eval_loss": (2.1, 1.6)},
        "DPO-Demo": {"loss": (0.69, 0.4), "rewards/margins": (0.0, 0.5), "eval_rewards/margins": (0.0, 0.4)},
        "KTO-Demo": {"loss": (0.5, 0.45), "kl": (0.0, 0.3), "eval_rewards/margins": (0.0, 0.3)},
        "ORPO-Demo": {"loss": (6.0, 5.9), "log_odds_ratio": (-0.69, -0.6), "eval_log_odds_ratio": (-0.7, -0.62),
                      "eval_log_odds_chosen": (0.0, 0.2), "eval_nll_loss": (5.9, 5.8)},
        "SimPO-Demo": {"loss": (0.96, 0.8), "eval_rewards/accuracies": (0.5, 1.0)},
        "Reward-Demo": {"loss": (0.7, 0.1), "margin": (0.0, 2.0), "eval_margin": (-0.01, 1.5),
                        "eval_accuracy": (0.2, 1.0)},
    }
    ids = {}
    with store.session() as s:
        for method, series in logged.items():
            job = store.Job(kind="train", method=method, base_model="tiny", dataset="demo-dpo",
                            status=store.JobStatus.SUCCEEDED)
            s.add(job)
            s.flush()
            ids[method] = str(job.id)
            for name, (first, last) in series.items():
                for step, value in ((0 if name.startswith("eval_") else 1, first), (8, last)):
                    s.add(store.Metric(job_id=job.id, step=step, name=name, value=value))
    report = compare.compare_jobs([int(i) for i in ids.values()])
    assert report["differences"]["method"] == {ids[m]: m for m in logged}
    found = report["metrics"]
    expected = {("Reward-Demo", "margin"): ("max", 2.0), ("Reward-Demo", "eval_margin"): ("max", 1.5),
                ("Reward-Demo", "eval_accuracy"): ("max", 1.0), ("ORPO-Demo", "log_odds_ratio"): ("max", -0.6),
                ("ORPO-Demo", "eval_log_odds_ratio"): ("max", -0.62),
                ("ORPO-Demo", "eval_log_odds_chosen"): ("max", 0.2), ("ORPO-Demo", "eval_nll_loss"): ("min", 5.8),
                ("KTO-Demo", "eval_rewards/margins"): ("max", 0.3), ("KTO-Demo", "kl"): (None, 0.3),
                ("SimPO-Demo", "eval_rewards/accuracies"): ("max", 1.0), ("SFT-Demo", "eval_loss"): ("min", 1.6)}
    for (method, name), (direction, best) in expected.items():
        stats = found[name][ids[method]]
        assert (stats["direction"], stats["best"]) == (direction, best), (method, name, stats)
    assert set(found["loss"]) == set(ids.values())  # one chart, every run
