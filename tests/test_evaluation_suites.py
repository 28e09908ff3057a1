"""The evaluation stage's suites (`deepe_widgets.runtime.evaluation`) on real components: a tiny
model generating greedy answers, rouge-score and sacrebleu scoring them, lm-evaluation-harness on
local benchmark files (offline), and the pairwise judge over HTTP: a rule-following
OpenAI-compatible server here, and SmolLM2 as a real vLLM Live Model (with the deployments tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deepe_widgets.runtime import evaluation

from helpers import REPO, deepe, deepe_json

PROMPTS = ["What is 2+2?", "Tell me a long story about a dragon who lived in the mountains", "hi",
           "Explain gravity to a child", "Name a colour", "Why is the sky blue? Explain in detail, please.", "ok"]


@pytest.fixture(scope="session")
def talkative_model_dir(tmp_path_factory) -> Path:
    """The tiny model with larger random weights: at init it only ever says a newline (an empty
    answer), which would let answers in the wrong order or with the prompt left in go unnoticed."""
    from deepe_widgets.testing import make_talkative_model

    return make_talkative_model(tmp_path_factory.mktemp("models") / "talkative")


@pytest.fixture(scope="session")
def loaded(talkative_model_dir):
    return evaluation.load_model(str(talkative_model_dir))


# --- generation ---------------------------------------------------------------------------

def test_answers_come_one_per_prompt_in_order_and_batching_changes_nothing(loaded):
    import torch

    model, tokenizer = loaded
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None and not model.training
    batched = evaluation.generate_answers(model, tokenizer, PROMPTS, batch_size=3, max_new_tokens=10)
    one_by_one = evaluation.generate_answers(model, tokenizer, PROMPTS, batch_size=1, max_new_tokens=10)
    assert len(batched) == len(PROMPTS) and all(batched) and len(set(batched)) > 3  # real, different answers
    assert batched == one_by_one
    reversed_order = evaluation.generate_answers(model, tokenizer, PROMPTS[::-1], batch_size=4, max_new_tokens=10)
    assert reversed_order == batched[::-1]
    # the answer is only what the model added after the chat-templated prompt, greedy
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    by_hand = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert batched[1] == by_hand
    assert "<|im_start|>system\nBe brief.<|im_end|>" in evaluation.chat_texts(tokenizer, ["x"], "Be brief.")[0]
    with_system = evaluation.generate_answers(model, tokenizer, PROMPTS[:3], system_prompt="Be brief.",
                                              max_new_tokens=10)
    assert with_system != batched[:3]
    assert evaluation.generate_answers(model, tokenizer, []) == []


def test_an_adapter_is_applied_and_found_from_its_own_folder(talkative_model_dir, loaded, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(talkative_model_dir)
    # non-zero LoRA weights (the default starts at zero): the adapter changes the answers
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(talkative_model_dir).save_pretrained(adapter)
    tuned = evaluation.generate_answers(*evaluation.load_model(str(talkative_model_dir), str(adapter)), PROMPTS,
                                        max_new_tokens=10)
    assert tuned != evaluation.generate_answers(*loaded, PROMPTS, max_new_tokens=10)
    assert evaluation.generate_answers(*evaluation.load_model(str(adapter)), PROMPTS, max_new_tokens=10) == tuned


# --- scores -------------------------------------------------------------------------------

def test_scores_lie_in_zero_one_and_a_perfect_answer_scores_one():
    references = ["The capital of France is Paris.", "Water boils at one hundred degrees Celsius at sea level.",
                  "北京是中国的首都"]
    metrics, rows = evaluation.generation_scores(references, references)
    assert metrics == {"eval_exact_match": 1.0, "eval_rougeL": 1.0, "eval_chrf": 1.0, "eval_bleu": 1.0,
                       "eval_answer_length": pytest.approx((6 + 10 + 1) / 3)}
    assert rows == [{"exact_match": 1, "rougeL": 1.0, "chrf": 1.0}] * 3

    answers = ["the capital of france is PARIS", "Water freezes at zero degrees.", "上海是中国的城市"]
    metrics, rows = evaluation.generation_scores(answers, references)
    assert set(metrics) == {"eval_exact_match", "eval_rougeL", "eval_chrf", "eval_bleu", "eval_answer_length"}
    for name in ("eval_exact_match", "eval_rougeL", "eval_chrf", "eval_bleu"):
        assert 0 <= metrics[name] < 1, name
    assert [r["exact_match"] for r in rows] == [1, 0, 0]  # case and punctuation do not count
    assert rows[0]["rougeL"] == 1.0 and 0 < rows[1]["rougeL"] < 1
    assert 0 < rows[2]["rougeL"] < 1  # Chinese is scored by character, not dropped as rouge-score's default does
    assert all(0 <= r["chrf"] <= 1 for r in rows) and rows[1]["chrf"] < rows[0]["chrf"]
    assert metrics["eval_rougeL"] == pytest.approx(sum(r["rougeL"] for r in rows) / 3)
    assert evaluation.generation_scores([""], ["something"])[0]["eval_rougeL"] == 0
    with pytest.raises(ValueError, match="2 answers for 1 references"):
        evaluation.generation_scores(["a", "b"], ["a"])


def test_results_are_written_and_logged_at_step_zero(workspace, tmp_path, capsys):
    from deepe_widgets import jobs, metrics

    metrics_in = {"eval_rougeL": 0.5, "eval_bleu": float("nan")}
    rows = evaluation.prediction_rows(["q"], ["r"], ["a"], [{"exact_match": 0, "rougeL": 0.5, "chrf": 0.4}])
    result, predictions = evaluation.write_results(tmp_path / "output", "generation", metrics_in, rows,
                                                   model="tiny", dataset="demo-sft", dataset_sha256="abc")
    written = json.loads(result.read_text())
    assert written == {"suite": "generation", "metrics": {"eval_rougeL": 0.5, "eval_bleu": None}, "rows": 1,
                       "model": "tiny", "dataset": "demo-sft", "dataset_sha256": "abc"}
    assert [json.loads(line) for line in predictions.read_text().splitlines()] == [
        {"prompt": "q", "reference": "r", "answer": "a", "scores": {"exact_match": 0, "rougeL": 0.5, "chrf": 0.4}}]

    job = jobs.submit_training("SFT-Demo", "tiny", "demo-sft")  # queued only: its rows are what this test writes
    evaluation.log_results(job.id, {"eval_rougeL": 0.25, "eval_chrf": 0.5})
    assert sorted((m.step, m.name, m.value) for m in metrics.metrics_for(job.id)) == [
        (0, "eval_chrf", 0.5), (0, "eval_rougeL", 0.25)]
    evaluation.log_results(0, {"eval_rougeL": 0.75})
    assert "eval_rougeL = 0.75" in capsys.readouterr().out


# --- benchmark ----------------------------------------------------------------------------

def write_questions(path: Path, count: int = 10) -> Path:
    rows = []
    for i in range(count):
        choices = [f"{i + j} apples" for j in range(4)]
        answer = i % 4
        rows.append({"question": f"How many apples are {i} and {answer}?", "choices": choices,
                     "answer": answer if i % 2 else choices[answer]})  # an index or the choice's text
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def offline(monkeypatch):
    """No proxy to reach anything, as on an air-gapped machine."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")


def test_lm_eval_runs_on_a_local_file_of_ten_questions(offline, talkative_model_dir, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    file = write_questions(tmp_path / "Apple Counting-v1.jsonl")
    assert evaluation.check_benchmark_file(file) == 10
    scores = evaluation.run_benchmark(str(talkative_model_dir), "", file, batch_size=4)
    assert set(scores) == {"bench_apple_counting_v1_acc", "bench_apple_counting_v1_acc_stderr"}
    assert 0 <= scores["bench_apple_counting_v1_acc"] <= 1 and scores["bench_apple_counting_v1_acc_stderr"] >= 0
    assert "HF_HUB_OFFLINE" not in os.environ  # offline for the call only: the kernel's settings come back
    # an already loaded model gives the same accuracy
    model, tokenizer = evaluation.load_model(str(talkative_model_dir))
    again = evaluation.run_benchmark("", "", file, batch_size=4, model=model, tokenizer=tokenizer)
    assert again["bench_apple_counting_v1_acc"] == scores["bench_apple_counting_v1_acc"]


def test_an_lm_eval_task_yaml_with_local_files_runs(offline, talkative_model_dir, tmp_path):
    (tmp_path / "data").mkdir()
    rows = [{"q": f"{i} plus one is", "options": [str(i + 1), str(i + 2), str(i)], "gold": i % 3} for i in range(6)]
    (tmp_path / "data" / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    yaml = tmp_path / "arith.yaml"
    yaml.write_text("task: my_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/q.jsonl\n"
                    "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n"
                    "doc_to_choice: \"{{options}}\"\ndoc_to_target: gold\n"
                    "metric_list:\n  - metric: acc\n")
    assert evaluation.check_benchmark_file(yaml) == 6
    scores = evaluation.run_benchmark(str(talkative_model_dir), "", yaml, batch_size=4)
    assert 0 <= scores["bench_my_arith_acc"] <= 1 and "bench_my_arith_acc_stderr" in scores


def test_a_hub_task_is_refused_offline_naming_the_local_file_route(offline, tmp_path):
    yaml = tmp_path / "mmlu_hub.yaml"
    yaml.write_text("task: mmlu_hub\ndataset_path: cais/mmlu\ndataset_name: all\ntest_split: test\n"
                    "output_type: multiple_choice\ndoc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\n"
                    "doc_to_target: answer\n")
    for call in (lambda: evaluation.check_benchmark_file(yaml),
                 lambda: evaluation.run_benchmark("unused", "", yaml)):
        with pytest.raises(ValueError) as refused:
            call()
        message = str(refused.value)
        assert "'cais/mmlu' from a hub" in message and "local multiple-choice .jsonl" in message
        assert "data_files naming local files" in message and "\n" not in message
    missing = tmp_path / "missing.yaml"
    missing.write_text("task: gone\ndataset_path: json\ndataset_kwargs:\n  data_files: nowhere.jsonl\n")
    with pytest.raises(ValueError, match="data file 'nowhere.jsonl' not found"):
        evaluation.check_benchmark_file(missing)


@pytest.mark.parametrize("lines, message", [
    (['{"question": "a", "choices": ["x", "y"], "answer": 0}', '{"question": "b", "choices": ["x", "y"], "answer": 1}',
      '{"question": "c", "choices": ["x", "y"]}'], "line 3: no 'answer'"),
    (['{"choices": ["x", "y"], "answer": 0}'], "line 1: no 'question'"),
    (['{"question": "a", "choices": ["x"], "answer": 0}'], "line 1: 'choices' must be a list of at least 2"),
    (['{"question": "a", "choices": ["x", "y"], "answer": 0}', "{not json"], "line 2: not JSON"),
    (['{"question": "a", "choices": ["x", "y"], "answer": 5}'], "line 1: 'answer' 5 is neither an index"),
    (['{"question": "a", "choices": ["x", "y"], "answer": "z"}'], "line 1: 'answer' 'z' is neither"),
    ([], "has no rows: a benchmark needs at least one question"),
    (["", "  "], "has no rows"),
])
def test_a_bad_benchmark_file_is_refused_naming_the_line(tmp_path, lines, message):
    file = tmp_path / "bench.jsonl"
    file.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        evaluation.check_benchmark_file(file)


def test_benchmark_file_kinds():
    assert evaluation.task_name("/x/MMLU Mini (2024).jsonl") == "mmlu_mini_2024"
    assert evaluation.task_name("2024.jsonl") == "bench_2024"
    with pytest.raises(ValueError, match="not found"):
        evaluation.check_benchmark_file("/no/such/file.jsonl")


# --- judge ---------------------------------------------------------------------------------

class RuleJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose judge follows a rule: the answer that says the
    reference wins ("fair"), or always the first answer ("biased", pure position bias)."""

    rule = "fair"
    key = "judge-key"
    asked: list[dict] = []

    def log_message(self, *args):  # no lines on the test's stderr
        pass

    def do_POST(self):
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "bad key"}')
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RuleJudge.asked.append(body)
        text = body["messages"][-1]["content"]
        reference = text.split("Reference answer (what a good answer says):\n")[-1].split("\n\n")[0]
        answer_a = text.split("Answer A:\n")[-1].split("\n\nAnswer B:")[0]
        answer_b = text.split("Answer B:\n")[-1].split("\n\nWhich answer")[0]
        if self.rule == "biased":
            reply = "**A**\nIt comes first."
        elif (reference in answer_a) == (reference in answer_b):
            reply = "Verdict: TIE - both are as good."
        else:
            reply = "A\nA says the reference." if reference in answer_a else "B. B says the reference."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def rule_judge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RuleJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RuleJudge.asked = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_the_judge_asks_both_orders_and_cancels_position_bias(rule_judge, monkeypatch):
    prompts = ["Capital of France?", "Capital of Peru?", "Capital of Chile?", "Capital of Spain?"]
    references = ["Paris", "Lima", "Santiago", "Madrid"]
    base = ["Paris", "Cusco", "Santiago", "Barcelona"]
    tuned = ["Lyon", "Lima", "Santiago", "Seville"]
    metrics, rows = evaluation.judge(prompts, base, tuned, url=rule_judge, model="judge", api_key="judge-key",
                                     references=references)
    assert [r["verdict"] for r in rows] == ["base", "tuned", "tie", "tie"]
    assert metrics == {"judge_win_rate": 0.25, "judge_tie_rate": 0.5, "judge_loss_rate": 0.25}
    assert rows[1]["reason"] in ("A says the reference.", "B says the reference.") and rows[2]["reason"]
    judged = [b for b in RuleJudge.asked if b["max_tokens"] > 2]
    assert len(judged) == 8 and all(b["temperature"] == 0 and b["model"] == "judge" for b in judged)
    firsts = sorted(b["messages"][-1]["content"].split("Answer A:\n")[1].split("\n")[0] for b in judged
                    if b["messages"][-1]["content"].startswith("Question:\nCapital of Peru?"))
    assert firsts == ["Cusco", "Lima"]  # each answer came first once

    monkeypatch.setattr(RuleJudge, "rule", "biased")  # always "A": every win is the position's, not the answer's
    metrics, rows = evaluation.judge(prompts, base, tuned, url=rule_judge + "/v1/", model="judge",
                                     api_key="judge-key")
    assert metrics == {"judge_win_rate": 0.0, "judge_tie_rate": 1.0, "judge_loss_rate": 0.0}
    assert all("It comes first." in r["reason"] for r in rows)

    with pytest.raises(ConnectionError, match="refused the request with HTTP 401"):
        evaluation.judge(prompts, base, tuned, url=rule_judge, model="judge", api_key="wrong")


def test_an_unreachable_judge_raises_one_sentence_naming_the_url():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ConnectionError) as refused:
        evaluation.judge(["q"], ["a"], ["b"], url=url, model="judge")
    message = str(refused.value)
    assert message.startswith(f"the judge at {url} cannot be reached") and "\n" not in message


@pytest.mark.parametrize("reply, verdict", [
    ("A\nIt is correct.", "A"), ("**B**\nbecause it is right", "B"), ("Verdict: TIE", "TIE"),
    ("B. It names the city.", "B"), ("tie\nboth wrong", "TIE"), ("I think Answer B is better here.", "B"),
    ("Better answer: A", "A"), ("no idea", None), ("", None),
])
def test_judge_replies_are_read_robustly(reply, verdict):
    assert evaluation.parse_verdict(reply)[0] == verdict


def test_the_position_bias_rule():
    combine = evaluation.combine_verdicts
    assert combine("tuned", "tuned") == "tuned" and combine("tuned", "tie") == "tuned"
    assert combine("tie", "base") == "base" and combine(None, "base") == "base"
    assert combine("tuned", "base") == "tie" and combine("tie", "tie") == "tie" and combine(None, None) == "tie"


# --- judge on a real vLLM Live Model of SmolLM2 (built with the deployments tests' env) -------

@pytest.mark.training
@pytest.mark.timeout(1800)
def test_the_judge_on_a_vllm_live_model_of_smollm2(request, workspace):
    from deepe_widgets import models

    env = request.getfixturevalue("vllm_env")
    models.ensure_default_model(progress=lambda _line: None)
    env.wait()
    live = deepe_json("deploy", models.DEFAULT_BASE_MODEL, "--wait", "--json", timeout=1200)
    try:
        assert live["status"] == "live", live["error"]
        key = Path(live["api_key_file"]).read_text().strip()
        prompts = ["What is the capital of France?", "How many legs does a spider have?", "What colour is grass?"]
        base = ["Paris is the capital of France.", "Six.", "Grass is green."]
        tuned = ["Lyon.", "A spider has eight legs.", "Green."]
        metrics, rows = evaluation.judge(prompts, base, tuned, url=live["url"], model=live["name"], api_key=key,
                                         references=["Paris", "Eight", "Green"])
        assert set(metrics) == {"judge_win_rate", "judge_tie_rate", "judge_loss_rate"}
        assert all(0 <= v <= 1 for v in metrics.values()) and sum(metrics.values()) == pytest.approx(1)
        assert len(rows) == 3 and all(r["verdict"] in ("tuned", "base", "tie") and r["reason"].strip() for r in rows)
    finally:
        deepe("deployments", "stop", live["name"], check=False)



@pytest.mark.training
def test_the_evaluation_benchmark_runs_tiny(tmp_path):
    """`python -m benchmarks.evaluation --tiny` runs both rows (timing itself is not asserted)."""
    out = tmp_path / "RESULTS-evaluation.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.evaluation", "--tiny", "--output", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "| generation tokens/s, 12 prompts, batch 8" in text and "generation suite wall time" in text
    assert "Same answers on both sides: yes" in text
