"""DPO-Demo: the stage notebook run as the platform runs it (papermill in the `python3` kernel, a real
job id, metrics read back from the database) on the tiny model; bad preference data refused at
submit; and train → save → infer through the CLI, compared with an SFT run of the same base."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import pytest

from deepe_widgets import compare, jobs, metrics
from deepe_widgets.errors import DeepeError

from helpers import deepe_json, metric_steps, run_stage, running_job, write_jsonl

REPO = Path(__file__).resolve().parent.parent
DPO = REPO / "method_templates" / "dpo_demo" / "training.ipynb"
PREFERENCE_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                      "logps/chosen", "logps/rejected", "loss")
# Few, large steps: the tiny model's margins then rise clearly within seconds.
STEPS = 12
FAST = {"MAX_STEPS": STEPS, "BATCH_SIZE": 4, "LEARNING_RATE": 5e-3, "MAX_SEQ_LENGTH": 96, "SAVE_STEPS": 0}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_dpo_notebook_follows_the_stage_contract():
    from deepe_widgets.scriptmode import load_stage_notebook
    from deepe_widgets.stagefiles import notebook_parameters

    nb = nbformat.read(DPO, as_version=4)
    assert nb.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    tags = [cell.metadata.get("tags", []) for cell in nb.cells if cell.cell_type == "code"]
    assert tags[0] == ["parameters"] and tags[1] == ["deepe-setup"] and tags[-1] == ["deepe-train"]
    assert nb.cells[-1].source.splitlines()[-1] == "train_and_save(trainer, model, tokenizer, OUTPUT_DIR)"
    user_code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code"
                          and not cell.metadata.get("tags"))
    assert ".train(" not in user_code and "save_pretrained" not in user_code
    assert "callbacks=[callback]" in user_code and "peft_config=lora_config" in user_code
    assert "ref_model=" not in user_code  # no second model: the adapter's base is the reference
    sft = notebook_parameters(load_stage_notebook(REPO / "method_templates" / "sft_demo" / "training.ipynb"))
    params = notebook_parameters(load_stage_notebook(DPO))
    assert set(sft) <= set(params), set(sft) - set(params)  # every standard name, so forms and copies work
    assert {"BETA", "LOSS_TYPE", "PromptRejectedColumn"} <= set(params)


def test_preference_metrics_have_a_better_direction():
    assert metrics.direction("rewards/margins") == "max"
    assert metrics.direction("rewards/accuracies") == "max"
    assert metrics.direction("rewards/chosen") == "max"


def test_demo_dpo_prefers_the_card_over_the_plain_answer():
    from deepe_widgets.demo_data import demo_dpo_rows

    rows = demo_dpo_rows()
    assert len(rows) == 60 and all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    assert all(r["chosen"].startswith("CAPITAL CARD |") and r["chosen"] != r["rejected"] for r in rows)
    assert "The capital of Australia is Sydney." in {r["rejected"] for r in rows}


def test_dpo_demo_streams_rising_margins_and_saves_an_adapter(home, tiny_model_dir, tmp_path):
    from deepe_widgets.demo_data import demo_dpo_rows

    run_dir = tmp_path / "run"
    job_id = running_job("DPO-Demo", run_dir)
    output = run_dir / "output"
    log = run_stage(DPO, run_dir, {**FAST, "MODEL_PATH": str(tiny_model_dir), "OUTPUT_DIR": str(output),
                               "DATASET_PATH": str(write_jsonl(tmp_path / "dpo.jsonl", demo_dpo_rows())),
                               "JOB_ID": job_id})

    assert f"training succeeded: {STEPS} steps" in log
    assert "reference model: the base model with the adapter disabled" in log
    assert not re.search(r"^\[deepe\] \S+ \S+ WARNING", log, re.MULTILINE), log
    series = metric_steps(job_id)
    for name in PREFERENCE_METRICS:
        assert set(series.get(name, {})) == set(range(1, STEPS + 1)), (name, sorted(series))
    assert all(math.isfinite(v) for values in series.values() for v in values.values())
    assert jobs.get_job(job_id).progress_step == STEPS

    # The adapter starts at zero, so the policy equals the reference: no margin, no pair won.
    margins = [series["rewards/margins"][s] for s in range(1, STEPS + 1)]
    accuracies = [series["rewards/accuracies"][s] for s in range(1, STEPS + 1)]
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and accuracies[0] == 0.0
    # then the margin grows (~0.05-0.09 over the first 3 steps, ~0.35-0.45 over the last 3 on 2 CPU
    # cores, whatever the tiny model's seed) and nearly every pair is won
    assert _mean(margins[-3:]) > 2 * _mean(margins[:3]) and _mean(margins[-3:]) > _mean(margins[:3]) + 0.1, margins
    assert _mean(accuracies[-3:]) > _mean(accuracies[:3]) and _mean(accuracies[-3:]) >= 0.9, accuracies
    chosen, rejected = series["rewards/chosen"], series["rewards/rejected"]
    assert chosen[STEPS] > rejected[STEPS]
    assert series["loss"][STEPS] < series["loss"][1]  # below log(2), where it starts

    # the trained adapter alone (no reference copy), loadable by PEFT on the base model
    assert (output / "adapter_model.safetensors").is_file() and not (output / "ref").exists()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(output))
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) for p in lora_b)  # trained, not the zero init
    record = nbformat.read(run_dir / "training.ipynb", as_version=4)
    assert record.metadata["deepe"]["status"] == "succeeded"


def test_dpo_demo_reads_named_columns_and_chat_messages(home, tiny_model_dir, tmp_path):
    def turn(role, text):
        return [{"role": role, "content": text}]

    rows = [{"question": turn("user", f"Capital of {c}?"), "good": turn("assistant", f"CAPITAL CARD | {c}"),
             "bad": f"I think it is {c}."} for c in ("France", "Japan", "Peru", "Chile")]
    run_dir = tmp_path / "run"
    job_id = running_job("DPO-Demo", run_dir)
    log = run_stage(DPO, run_dir, {**FAST, "MAX_STEPS": 2, "BATCH_SIZE": 2, "MODEL_PATH": str(tiny_model_dir),
                               "OUTPUT_DIR": str(run_dir / "output"), "JOB_ID": job_id, "LOSS_TYPE": "ipo",
                               "DATASET_PATH": str(write_jsonl(tmp_path / "named.jsonl", rows)),
                               "PromptInputColumn": "question", "PromptOutputColumn": "good",
                               "PromptRejectedColumn": "bad", "SYSTEM_PROMPT": "Answer with a card."})
    assert "training succeeded: 2 steps" in log
    assert set(metric_steps(job_id)["rewards/margins"]) == {1, 2}


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error at submit, by the field, nothing queued


def _dataset(workspace: Path, name: str, rows: list[dict]) -> str:
    from deepe_widgets import datasets

    datasets.add_dataset(name, write_jsonl(workspace / "datasets" / f"{name}.jsonl", rows))
    return name


PAIR = {"prompt": "Capital of Peru?", "chosen": "CAPITAL CARD | Peru | Lima", "rejected": "Lima."}


@pytest.mark.parametrize("rows,params,field,message", [
    ([{"prompt": "Capital of Peru?", "chosen": "CAPITAL CARD | Peru | Lima"}], {}, "PromptRejectedColumn",
     "is not a preference dataset: it has no rejected column"),
    ([{"prompt": "Capital of Peru?", "rejected": "Lima."}], {}, "PromptOutputColumn",
     "is not a preference dataset: it has no chosen column"),
    ([{"question": "Capital of Peru?", "chosen": "CAPITAL CARD", "rejected": "Lima."}], {}, "PromptInputColumn",
     "it has no prompt column"),
    ([PAIR], {"prompt_rejected_column": "worse"}, "PromptRejectedColumn",
     "has no column 'worse' (the rejected column)"),
    ([PAIR, {**PAIR, "rejected": PAIR["chosen"]}, {**PAIR, "rejected": PAIR["chosen"]}], {}, "dataset",
     "row 2 (and 1 more) has the same chosen and rejected response"),
    ([PAIR, {**PAIR, "rejected": ""}], {}, "PromptRejectedColumn", "row 2 has no rejected"),
    ([PAIR], {"beta": "0"}, "BETA", "BETA must be above 0, not 0.0"),
    ([PAIR], {"beta": "-0.5"}, "BETA", "BETA must be above 0"),
    ([PAIR], {"loss_type": "ppo"}, "LOSS_TYPE", "LOSS_TYPE 'ppo' is not a DPO loss; choose from sigmoid"),
    ([PAIR], {"loss_type": "exo_pair"}, "LABEL_SMOOTHING", "exo_pair needs LABEL_SMOOTHING above 0"),
])
def test_bad_preference_input_is_refused_at_submit(workspace, rows, params, field, message):
    name = _dataset(workspace, "prefs", rows)
    with pytest.raises(DeepeError, match=None) as caught:
        jobs.submit_training("DPO-Demo", "tiny", name, params=params)
    assert message in caught.value.message and caught.value.field == field, (caught.value.field,
                                                                            caught.value.message)
    assert jobs.list_jobs() == []


def test_sft_data_is_refused_for_dpo_and_preference_data_accepted(workspace):
    with pytest.raises(DeepeError, match="is not a preference dataset.*or choose demo-dpo"):
        jobs.submit_training("DPO-Demo", "tiny", "demo-sft")
    messages = [{"chosen": [{"role": "user", "content": "Peru?"}, {"role": "assistant", "content": "Lima"}],
                 "rejected": [{"role": "user", "content": "Peru?"}, {"role": "assistant", "content": "Cusco"}]}]
    implicit = _dataset(workspace, "implicit", messages)  # TRL takes the shared first turn as the prompt
    assert jobs.submit_training("DPO-Demo", "tiny", implicit).status == "queued"
    assert jobs.submit_training("DPO-Demo", "tiny", "demo-dpo", params={"beta": "0.5"}).params == {"BETA": 0.5}


# ---------------------------------------------------------------------------------------------
# Train, save, infer through the CLI; compare with an SFT run of the same base


@pytest.mark.training
def test_dpo_demo_trains_saves_infers_and_compares_with_sft(workspace):
    fast = {"max_steps": "3", "batch_size": "4", "learning_rate": "5e-3", "max_seq_length": "96", "save_steps": "0"}
    # The SFT run to compare with waits in the queue: the worker the CLI starts runs it first.
    sft = jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params=fast)
    trained = deepe_json("train", "--method", "DPO-Demo", "--base-model", "tiny", "--dataset", "demo-dpo",
                         *[arg for key, value in fast.items() for arg in ("--param", f"{key}={value}")],
                         "--wait", "--json", timeout=300)
    assert trained["status"] == "succeeded", trained["error"]
    [customized] = trained["artifacts"]
    card = json.loads((Path(customized["path"]) / "model_card.json").read_text())
    assert card["method"] == "DPO-Demo" and card["dataset"] == "demo-dpo"
    assert card["metrics"]["rewards/margins"]["best"] > 0
    saved = deepe_json("save", customized["name"], "--wait", "--json", timeout=300)
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
    answer = deepe_json("infer", complete["name"], "--prompt", "What is the capital of Peru?",
                        "--param", "max_new_tokens=6", "--json", timeout=300)
    assert answer["error"] is None, answer["error"]
    assert isinstance(answer["responses"][0]["response"], str)

    assert jobs.get_job(sft.id).status == "succeeded"
    report = compare.compare_jobs([trained["id"], sft.id])  # what the Compare view shows
    dpo_id, sft_id = str(trained["id"]), str(sft.id)
    assert report["differences"]["method"] == {dpo_id: "DPO-Demo", sft_id: "SFT-Demo"}
    margins = report["metrics"]["rewards/margins"][dpo_id]
    assert margins["direction"] == "max" and margins["best"] > margins["first"]
    assert sft_id not in report["metrics"]["rewards/margins"]
    assert set(report["metrics"]["loss"]) == {dpo_id, sft_id}  # one chart, both runs
