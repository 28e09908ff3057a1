"""Kernel side of the evaluation stage: the built-in suites an evaluation notebook calls.

- generation: greedy, batched answers to held-out prompts, scored against their references
  (exact match, ROUGE-L, chrF, BLEU, answer length);
- benchmark: a local multiple-choice file (or an lm-eval task YAML with local data) run by
  lm-evaluation-harness, offline;
- judge: a pairwise LLM judge behind an OpenAI-compatible endpoint, asked in both orders.

Imports nothing of the workbench but the runtime; torch, transformers, peft, rouge_score,
sacrebleu and lm_eval only when a function needs them, so the module loads in any kernel.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import unicodedata
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from . import MetricSink, log_event

# Builders of the `datasets` library that read local files; anything else in an lm-eval task's
# `dataset_path` (that is not a local folder) is a dataset on a hub.
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
LOCAL_FILE_ROUTE = ("give a local multiple-choice .jsonl (question, choices, answer), or a task YAML with "
                    "dataset_path: json (or csv/parquet) and dataset_kwargs.data_files naming local files")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --- loading -------------------------------------------------------------------------------

def load_model(model_path: str, adapter_path: str = ""):
    """(model, tokenizer) ready for batched generation: on the GPU when there is one, in eval mode,
    left padding, a pad token set. An adapter is merged into its base (faster to generate with);
    a folder holding only an adapter finds its base in adapter_config.json."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path, adapter_path = str(model_path), str(adapter_path or "")
    if not adapter_path and (Path(model_path) / "adapter_config.json").is_file():
        adapter_path = model_path
        model_path = json.loads((Path(model_path) / "adapter_config.json").read_text())["base_model_name_or_path"]
    from .devices import compute_dtype_name, current_device

    on = current_device()
    # native bf16 only (emulated bf16 on a T4 or V100 is slower than fp16); MPS stays on the CPU as before
    device = "cuda" if on.type == "cuda" else "cpu"
    dtype = getattr(torch, compute_dtype_name(on)) if device == "cuda" else torch.float32
    # the adapter's folder holds the tokenizer it was trained with (chat template, added tokens)
    tokenizer_path = adapter_path if adapter_path and _has_tokenizer(adapter_path) else model_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if adapter_path:
        from peft import PeftModel

        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding (a decoder-only model continues right after each prompt) and a pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def _has_tokenizer(folder: str) -> bool:
    return (Path(folder) / "tokenizer_config.json").is_file()


# --- generation suite ----------------------------------------------------------------------

def chat_texts(tokenizer, prompts: list[str], system_prompt: str = "") -> list[str]:
    """Each prompt as the model reads it: through the chat template when the tokenizer has one."""
    if not getattr(tokenizer, "chat_template", None):
        return [str(p) for p in prompts]
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [tokenizer.apply_chat_template(system + [{"role": "user", "content": str(p)}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def generate_answers(model, tokenizer, prompts: list[str], *, system_prompt: str = "", batch_size: int = 8,
                     max_new_tokens: int = 128) -> list[str]:
    """Greedy answers, one per prompt and in the prompts' order. Prompts are batched by length
    (similar lengths together, so little padding is computed), left-padded; only the new tokens
    are decoded."""
    import torch

    if not prompts:
        return []
    prepare_tokenizer(tokenizer)
    texts = chat_texts(tokenizer, prompts, system_prompt)
    # a chat template writes its own BOS; without one the tokenizer adds what the model expects
    special = not getattr(tokenizer, "chat_template", None)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)  # longest first: OOM shows at once
    answers: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    batch_size = max(1, int(batch_size))
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in picked], return_tensors="pt", padding=True,
                          add_special_tokens=special).to(device)
        with torch.inference_mode():
            output = model.generate(**batch, max_new_tokens=int(max_new_tokens), do_sample=False,
                                    temperature=None, top_p=None, top_k=None,
                                    pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        for i, text in zip(picked, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text.strip()
    return answers


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: what exact match compares."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in str(text).lower())
    return " ".join(kept.split())


class _RougeTokenizer:
    """rouge_score's own tokenizer keeps only a-z and 0-9, so Chinese, Japanese or accented text
    would score 0: words of any script instead, each CJK character a token of its own."""

    _words = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")

    def tokenize(self, text: str) -> list[str]:
        return self._words.findall(str(text).lower())


def generation_scores(answers: list[str], references: list[str]) -> tuple[dict, list[dict]]:
    """(metrics, per_row) of answers against their references, every score in [0, 1]:
    `eval_exact_match` (after `normalize_answer`), `eval_rougeL` (ROUGE-L F-measure, mean of rows),
    `eval_chrf` and `eval_bleu` (sacrebleu's corpus scores / 100), and `eval_answer_length` (mean
    words per answer). per_row: `{"exact_match": 0|1, "rougeL", "chrf"}` (sentence chrF)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    answers, references = [str(a) for a in answers], [str(r) for r in references]
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers for {len(references)} references: one answer per reference")
    if not answers:
        raise ValueError("no answers to score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokenizer())
    per_row = []
    for answer, reference in zip(answers, references):
        per_row.append({
            "exact_match": int(normalize_answer(answer) == normalize_answer(reference)),
            "rougeL": round(scorer.score(reference, answer)["rougeL"].fmeasure, 6),
            "chrf": round(_unit(sacrebleu.sentence_chrf(answer, [reference]).score / 100), 6),
        })
    count = len(per_row)
    metrics = {
        "eval_exact_match": sum(r["exact_match"] for r in per_row) / count,
        "eval_rougeL": sum(r["rougeL"] for r in per_row) / count,
        "eval_chrf": _unit(sacrebleu.corpus_chrf(answers, [references]).score / 100),
        "eval_bleu": _unit(sacrebleu.corpus_bleu(answers, [references]).score / 100),
        "eval_answer_length": sum(len(a.split()) for a in answers) / count,
    }
    return metrics, per_row


def _unit(value: float) -> float:
    """A score kept in [0, 1] (sacrebleu's floats can land a hair above 100)."""
    return min(1.0, max(0.0, float(value)))


def prediction_rows(prompts: list[str], references: list[str], answers: list[str],
                    per_row: list[dict]) -> list[dict]:
    """The rows of predictions.jsonl: `{"prompt", "reference", "answer", "scores"}`."""
    return [{"prompt": str(p), "reference": str(r), "answer": str(a), "scores": s}
            for p, r, a, s in zip(prompts, references, answers, per_row)]


# --- benchmark suite -----------------------------------------------------------------------

def _answer_index(answer, choices: list) -> int | None:
    """The answer as an index into choices: an index, the text of a choice, or its letter."""
    texts = [str(c).strip() for c in choices]
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < len(choices) else None
    text = str(answer).strip()
    if text in texts:
        return texts.index(text)
    if text.isdigit() and int(text) < len(choices):
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[:len(choices)]:
        return LETTERS.index(text.upper())
    return None


def _benchmark_rows(path: Path) -> list[dict]:
    """The rows of a multiple-choice jsonl, checked, with `answer` as an index."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"line {number}: not a JSON object")
            for field in ("question", "choices", "answer"):
                if field not in row:
                    raise ValueError(f"line {number}: no '{field}'")
            choices = row["choices"]
            if not isinstance(choices, list) or len(choices) < 2:
                raise ValueError(f"line {number}: 'choices' must be a list of at least 2")
            if len(choices) > len(LETTERS):
                raise ValueError(f"line {number}: more than {len(LETTERS)} choices")
            index = _answer_index(row["answer"], choices)
            if index is None:
                raise ValueError(f"line {number}: 'answer' {row['answer']!r} is neither an index into the "
                                 f"{len(choices)} choices nor one of their texts")
            rows.append({"question": str(row["question"]), "choices": [str(c) for c in choices],
                         "labels": list(LETTERS[:len(choices)]), "answer": index})
    if not rows:
        raise ValueError(f"{path} has no rows: a benchmark needs at least one question")
    return rows


def _task_config(path: Path) -> dict:
    """An lm-eval task YAML (its includes merged, !function resolved), checked to read local files
    only; relative data files are made absolute (relative to the YAML's folder)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        config = load_yaml(path, resolve_func=True)
    except Exception as exc:
        raise ValueError(f"{path} is not an lm-eval task YAML: {exc}") from None
    if "task" not in config:
        raise ValueError(f"{path} names no 'task': give one lm-eval task per YAML")
    source = str(config.get("dataset_path") or "")
    if source and source not in LOCAL_BUILDERS:  # a local dataset folder is read offline too
        folder = Path(source).expanduser()
        folder = folder if folder.is_absolute() else path.parent / folder
        if folder.is_dir():
            config["dataset_path"] = str(folder.resolve())
            return config
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if source not in LOCAL_BUILDERS or not files:
        raise ValueError(f"task {config['task']!r} reads dataset {source!r} from a hub, which is not reachable "
                         f"offline: {LOCAL_FILE_ROUTE}")

    def local(name) -> str:
        file = Path(str(name)).expanduser()
        file = file if file.is_absolute() else (path.parent / file).resolve()
        if not file.is_file():
            raise ValueError(f"task {config['task']!r}: data file {str(name)!r} not found (looked for {file})")
        return str(file)

    if isinstance(files, dict):
        files = {split: ([local(f) for f in names] if isinstance(names, list) else local(names))
                 for split, names in files.items()}
    else:
        files = [local(f) for f in files] if isinstance(files, list) else local(files)
    config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": files}
    return config


def check_benchmark_file(path) -> int:
    """The number of questions in a benchmark file, or ValueError naming what is wrong (and the
    line): a multiple-choice .jsonl (`question`, `choices` (≥ 2), `answer`: an index or a choice's
    text), or an lm-eval task .yaml whose data files are local (a hub dataset is refused)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"benchmark file {path} not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        config = _task_config(path)
        files = config.get("dataset_kwargs", {}).get("data_files")
        if not files:
            return 0  # a local dataset folder: lm-eval counts its rows when it loads it
        split = config.get("test_split") or config.get("validation_split") or "train"
        chosen = files.get(split, next(iter(files.values()))) if isinstance(files, dict) else files
        chosen = chosen if isinstance(chosen, list) else [chosen]
        if config["dataset_path"] != "json":
            return 0
        return sum(1 for f in chosen for line in open(f, encoding="utf-8") if line.strip())
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise ValueError(f"benchmark file {path.name}: use a multiple-choice .jsonl or an lm-eval task .yaml")
    return len(_benchmark_rows(path))


def task_name(path) -> str:
    """The lm-eval task name of a benchmark file: its stem in lower case, letters, digits and _."""
    name = re.sub(r"[^a-z0-9]+", "_", Path(path).stem.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"bench_{name}"


def multiple_choice_task(benchmark_file, folder) -> tuple[str, Path]:
    """(task name, YAML path): an MMLU-shaped lm-eval task in `folder` for a multiple-choice jsonl
    (the question, its lettered choices and `Answer:`; the model's likelihood of each letter)."""
    folder = Path(folder)
    name = task_name(benchmark_file)
    data = folder / f"{name}.jsonl"
    rows = _benchmark_rows(Path(benchmark_file))
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question.strip()}}\n{% for choice in choices %}{{labels[loop.index0]}}. {{choice}}\n"
                       "{% endfor %}Answer:",
        "doc_to_choice": "{{labels}}",
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    yaml_path = folder / f"{name}.yaml"
    yaml_path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    return name, yaml_path


@contextmanager
def _offline():
    """No hub requests while lm-eval runs: the variables for new readers, and the flags the
    already-imported `datasets` and `huggingface_hub` read them into."""
    names = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    saved_env = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    flags = []
    try:
        import datasets.config
        import huggingface_hub.constants

        flags = [(datasets.config, "HF_DATASETS_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
                 (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    except ImportError:
        pass
    saved_flags = [(owner, attr, getattr(owner, attr)) for owner, attr in flags if hasattr(owner, attr)]
    for owner, attr, _ in saved_flags:
        setattr(owner, attr, True)
    try:
        yield
    finally:
        for owner, attr, value in saved_flags:
            setattr(owner, attr, value)
        for n, v in saved_env.items():
            os.environ.pop(n, None) if v is None else os.environ.__setitem__(n, v)


def run_benchmark(model_path, adapter_path, benchmark_file, *, batch_size: int = 8, model=None,
                  tokenizer=None) -> dict:
    """lm-evaluation-harness on the model (its adapter applied by peft), offline, on a local benchmark
    file (see `check_benchmark_file`). Returns `{"bench_<task>_acc": float, "bench_<task>_acc_stderr": float}`
    (acc_norm too where the task reports it). An already loaded `model` and `tokenizer` may be given
    instead of the paths."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from .devices import compute_dtype_name, current_device

    benchmark_file = Path(benchmark_file)
    check_benchmark_file(benchmark_file)
    on = current_device()
    device = "cuda" if on.type == "cuda" else "cpu"
    # on a GPU in the card's compute dtype (native bf16, else fp16); on the CPU the model's own
    dtype = compute_dtype_name(on) if device == "cuda" else "auto"
    with tempfile.TemporaryDirectory(prefix="deepe-bench-") as folder, _offline():
        if benchmark_file.suffix.lower() in (".yaml", ".yml"):
            spec = _task_config(benchmark_file)
            name = spec["task"]
        else:
            name, yaml_path = multiple_choice_task(benchmark_file, folder)
            spec = name
        manager = TaskManager(include_path=folder, include_defaults=False)
        if model is not None:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
        else:
            args = {"pretrained": str(model_path), "batch_size": batch_size, "device": device, "dtype": dtype}
            if adapter_path:
                args["peft"] = str(adapter_path)
                if _has_tokenizer(str(adapter_path)):
                    args["tokenizer"] = str(adapter_path)
            lm = HFLM(**args)
        log_event(f"lm-eval: task {name} on {model_path or 'the loaded model'}"
                  + (f" + adapter {adapter_path}" if adapter_path else ""))
        out = lm_eval.simple_evaluate(model=lm, tasks=[spec], task_manager=manager, log_samples=False,
                                      batch_size=batch_size, device=device)
    metrics = {}
    for task, values in (out or {}).get("results", {}).items():
        key = f"bench_{task_name(task).removeprefix('bench_')}"
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in values:
                metrics[f"{key}_{metric}"] = float(values[f"{metric},none"])
                stderr = values.get(f"{metric}_stderr,none")
                metrics[f"{key}_{metric}_stderr"] = float(stderr) if isinstance(stderr, (int, float)) else math.nan
    if not metrics:
        raise ValueError(f"lm-eval reported no accuracy for task {name}: is it a multiple_choice task with "
                         "metric acc?")
    return metrics


# --- judge suite ---------------------------------------------------------------------------

JUDGE_SYSTEM = ("You are a strict, impartial judge of answers. You compare two answers to the same question "
                "and say which one answers it better: correct, helpful and to the point. Length and the order "
                "the answers come in do not matter.")
JUDGE_REPLY = ("Reply with exactly two lines. First line: only A, B or TIE. Second line: one sentence saying why.")


def judge_prompt(question: str, answer_a: str, answer_b: str, reference: str | None = None) -> str:
    """What the judge reads for one comparison."""
    parts = [f"Question:\n{question}"]
    if reference:
        parts.append(f"Reference answer (what a good answer says):\n{reference}")
    parts += [f"Answer A:\n{answer_a}", f"Answer B:\n{answer_b}",
              f"Which answer, A or B, answers the question better? {JUDGE_REPLY}"]
    return "\n\n".join(parts)


_VERDICT = re.compile(r"^\W*(?:(?:final\s+)?(?:verdict|answer|winner|choice|better(?:\s+answer)?)\s*(?:is)?\W*)?"
                      r"(tie|a|b)\b", re.IGNORECASE)
_VERDICT_ANYWHERE = re.compile(r"\b(?:answer\s+)?(a|b)\s+is\s+better\b|\b(tie)\b|\b(?:verdict|winner)\W+(a|b|tie)\b",
                               re.IGNORECASE)


def parse_verdict(reply: str) -> tuple[str | None, str]:
    """("A" | "B" | "TIE" | None, reason) from a judge's reply: the verdict on its first line
    ("A", "**B**", "Verdict: TIE", "A. Because …"), else the first "A is better" / "verdict: B"
    found in it; the reason is the rest of the reply."""
    text = str(reply or "").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None, ""
    first = lines[0].replace("*", "").replace("#", "").strip()
    match = _VERDICT.match(first)
    if match:
        rest = first[match.end():].lstrip(" .:-–—)")
        reason = " ".join(([rest] if rest else []) + lines[1:]).strip()
        return match.group(1).upper(), re.sub(r"^(?:reason|because|why)\s*[:\-]\s*", "", reason, flags=re.I)
    found = _VERDICT_ANYWHERE.search(text)
    if found:
        return next(g for g in found.groups() if g).upper(), " ".join(lines)
    return None, " ".join(lines)


def _chat_url(url: str) -> str:
    base = str(url).rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def ask_judge(url: str, model: str, prompt: str, *, api_key: str = "", timeout: float = 120,
              max_tokens: int = 128) -> str:
    """The judge's reply to one prompt (temperature 0). ConnectionError, in one sentence, when
    the endpoint cannot be reached or refuses the request."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": max_tokens,
                       "messages": [{"role": "system", "content": JUDGE_SYSTEM},
                                    {"role": "user", "content": prompt}]}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(_chat_url(url), data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip().splitlines()
        raise ConnectionError(f"the judge at {url} refused the request with HTTP {exc.code}"
                              + (f": {detail[0][:200]}" if detail else "")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"the judge at {url} cannot be reached ({reason}): is the Live Model live, "
                              "or DEEPE_JUDGE_URL right?") from None
    try:
        return str(answer["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        raise ConnectionError(f"the judge at {url} did not answer as an OpenAI-compatible chat endpoint "
                              f"does: {json.dumps(answer)[:200]}") from None


def combine_verdicts(base_first: str | None, tuned_first: str | None) -> str:
    """The verdict of one prompt from its two orders (A = base then A = tuned), already mapped
    to "tuned" / "base" / "tie" / None (unreadable). The tuned model wins when it wins both orders,
    or wins one and the other is a tie (or unreadable); the same for the base; anything else (each
    order prefers its first or second answer, i.e. position bias, or two ties) is a tie."""
    votes = [v for v in (base_first, tuned_first) if v in ("tuned", "base")]
    if votes and all(v == votes[0] for v in votes):
        return votes[0]
    return "tie"


def judge(prompts: list[str], base_answers: list[str], tuned_answers: list[str], *, url: str, model: str,
          api_key: str = "", references: list[str] | None = None, concurrency: int = 4,
          timeout: float = 120) -> tuple[dict, list[dict]]:
    """Pairwise judging of the tuned model's answers against the base model's by a judge model
    behind an OpenAI-compatible chat endpoint (`{url}/v1/chat/completions`, temperature 0).
    Each prompt is judged twice, the base answer first and then the tuned answer first, to cancel
    position bias; `combine_verdicts` gives the row's verdict. Returns (metrics, rows):
    `judge_win_rate`, `judge_tie_rate`, `judge_loss_rate`; rows `{"verdict", "reason"}`.
    An unreachable endpoint raises ConnectionError (one sentence, naming the URL)."""
    count = len(prompts)
    if not (len(base_answers) == len(tuned_answers) == count) or (references is not None and len(references) != count):
        raise ValueError("judge: give one base answer, one tuned answer (and one reference) per prompt")
    if not count:
        raise ValueError("judge: no prompts to judge")
    ask = [(i, order) for i in range(count) for order in ("base_first", "tuned_first")]
    ask_judge(url, model, "Reply with: A", api_key=api_key, timeout=timeout, max_tokens=2)  # reachable, at once

    def one(item):
        i, order = item
        first, second = ((base_answers[i], tuned_answers[i]) if order == "base_first"
                         else (tuned_answers[i], base_answers[i]))
        reference = references[i] if references is not None else None
        verdict, reason = parse_verdict(ask_judge(url, model, judge_prompt(prompts[i], first, second, reference),
                                                  api_key=api_key, timeout=timeout))
        mapping = {"A": "base", "B": "tuned"} if order == "base_first" else {"A": "tuned", "B": "base"}
        return mapping.get(verdict, "tie" if verdict == "TIE" else None), reason

    with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as pool:
        answers = list(pool.map(one, ask))
    rows = []
    for i in range(count):
        (base_first, why_1), (tuned_first, why_2) = answers[2 * i], answers[2 * i + 1]
        verdict = combine_verdicts(base_first, tuned_first)
        agreeing = [why for vote, why in ((base_first, why_1), (tuned_first, why_2)) if vote == verdict and why]
        if agreeing:
            reason = agreeing[0]
        else:
            shown = {"tuned": "the tuned answer", "base": "the base answer", "tie": "a tie", None: "no verdict"}
            reason = (f"base answer first: {shown[base_first]} ({why_1 or 'no reason given'}); tuned answer first: "
                      f"{shown[tuned_first]} ({why_2 or 'no reason given'})")
        rows.append({"verdict": verdict, "reason": reason})
    metrics = {f"judge_{name}_rate": sum(r["verdict"] == verdict for r in rows) / count
               for name, verdict in (("win", "tuned"), ("tie", "tie"), ("loss", "base"))}
    return metrics, rows


# --- results -------------------------------------------------------------------------------

def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def write_results(output_dir, suite: str, metrics: dict, rows: list[dict], **extra) -> tuple[Path, Path]:
    """`evaluation.json` (`{"suite", "metrics", "rows": count, "model", "dataset", …extra}`) and
    `predictions.jsonl` (one row a line) in `output_dir`; returns their paths."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"suite": str(suite), "metrics": {str(k): _finite(v) for k, v in metrics.items()},
               "rows": len(rows), "model": str(extra.pop("model", "") or ""), "dataset": extra.pop("dataset", None),
               **extra}
    result = folder / "evaluation.json"
    result.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    predictions = folder / "predictions.jsonl"
    with open(predictions, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return result, predictions


def log_results(job_id: int, metrics: dict) -> None:
    """The metrics as metric rows of the evaluate job at step 0 (job 0: only printed)."""
    for name, value in metrics.items():
        log_event(f"{name} = {value:.6g}" if isinstance(value, (int, float)) else f"{name} = {value}")
    if not int(job_id or 0):
        return
    sink = MetricSink(job_id)
    sink.add(0, metrics, None)
    sink.close()
