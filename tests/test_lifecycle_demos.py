"""GRPO-Demo and MLX-Demo through the CLI alone: train, list, save to a Complete Model, infer both."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepe_widgets import jobs, methods

from helpers import deepe, deepe_json

pytestmark = pytest.mark.training

GRPO_PARAMS = ["--param", "max_steps=2", "--param", "batch_size=4", "--param", "num_generations=2",
               "--param", "max_content_length=8", "--param", "max_input_length=64", "--param", "save_steps=0",
               "--param", "max_samples=8"]
MLX_PARAMS = ["--param", "max_steps=3", "--param", "batch_size=4", "--param", "max_seq_length=64",
              "--param", "save_steps=0", "--param", "learning_rate=5e-3"]


@pytest.mark.parametrize("method,dataset,params,expected", [
    ("GRPO-Demo", "demo-gsm", GRPO_PARAMS, {"reward", "reward_std", "kl"}),
    ("MLX-Demo", "demo-sft", MLX_PARAMS, {"loss", "tokens_per_second"}),
])
def test_train_save_infer(workspace, default_model, method, dataset, params, expected):
    if method == "MLX-Demo":
        pytest.importorskip("mlx_lm")
    trained = deepe_json("train", "--method", method, "--base-model", "tiny", "--dataset", dataset, *params,
                         "--wait", "--json", timeout=600)
    assert trained["status"] == "succeeded", trained["error"]
    names = set(deepe_json("jobs", "metrics", str(trained["id"]), "--json"))  # one entry per metric
    assert expected <= names, names
    [customized] = trained["artifacts"]
    listed = deepe_json("models", "list", "--kind", "customized", "--json")
    assert customized["name"] in {m["name"] for m in listed}
    card = json.loads((Path(customized["path"]) / "model_card.json").read_text())
    assert card["method"] == method and card["parameters"]["MAX_STEPS"] in (2, 3)
    saved = deepe_json("save", customized["name"], "--wait", "--json", timeout=600)
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
    assert complete["name"] == f"{customized['name']}_s_{saved['uuid'][:4]}"
    for name in (customized["name"], complete["name"]):
        answer = deepe_json("infer", name, "--prompt", "Sam has 2 apples and finds 3 more. How many?",
                            "--param", "max_new_tokens=6", "--json", timeout=600)
        assert answer["error"] is None, answer["error"]
        assert len(answer["responses"]) == 1 and isinstance(answer["responses"][0]["response"], str)
    if method == "MLX-Demo":  # its adapter is mlx-lm's: its own evaluation stage answers with mlx-lm
        _mlx_adapter_is_evaluated_beside_its_base(customized["name"])


def _mlx_adapter_is_evaluated_beside_its_base(model: str) -> None:
    from deepe_widgets import datasets, evaluations

    done = deepe_json("evaluate", model, "--param", "max_new_tokens=6", "--wait", "--json", timeout=600)
    assert done["status"] == "succeeded", done["error"]
    tuned, base = evaluations.latest(model), evaluations.latest("tiny")
    assert base is not None and base["row_key"] == tuned["row_key"]  # its base, on the same held-out rows
    for result in (tuned, base):
        assert 0 <= result["metrics"]["eval_rougeL"] <= 1 and Path(result["record"]).is_file()
    side = evaluations.side_by_side(model)
    assert len(side["rows"]) == round(datasets.get_dataset("demo-sft").rows * 0.1)  # the training's held-out rows
    assert all(r["tuned_score"] is not None and r["base_score"] is not None for r in side["rows"])
    refused = deepe("evaluate", model, "--suite", "benchmark", "--param", "benchmark_file=x.jsonl", check=False)
    assert refused.returncode == 2 and "MLX-Demo's evaluation stage runs the generation and judge suites" in \
        refused.stderr, refused.stderr  # refused before anything is queued


def test_mlx_demo_refuses_a_kernel_without_mlx(workspace, tmp_path, monkeypatch):
    env = tmp_path / "bare-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    spec = tmp_path / "jupyter" / "kernels" / "bare"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [str(env / "bin" / "python"), "-m", "ipykernel_launcher",
                                                           "-f", "{connection_file}"],
                                                  "display_name": "bare", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    mlx_notebook = Path(methods.get_method("MLX-Demo").stages["training"]["file"])
    methods.register_method("my-mlx", {"training": (mlx_notebook, "bare")})
    done = deepe("train", "--method", "my-mlx", "--base-model", "tiny", "--dataset", "demo-sft", check=False)
    assert done.returncode == 2
    assert "needs mlx-lm in kernel 'bare'" in done.stderr and "pip install mlx-lm" in done.stderr
    assert jobs.list_jobs() == []
