"""Evaluation benchmarks: the generation suite against a bare batched `model.generate` loop.

    python -m benchmarks.evaluation                 SmolLM2-135M-Instruct (the default base model), 50 prompts
    python -m benchmarks.evaluation --tiny          a tiny test model (seconds)
    python -m benchmarks.evaluation --model FOLDER  any model folder

Rows: decode tokens/s of `runtime.evaluation.generate_answers` vs a bare loop of batched greedy
`model.generate` over the same model, prompts (chat-templated), batch size and max_new_tokens, in
alternating rounds (goal: ratio ≥ 0.95); the wall time of the whole generation suite (load the model,
answer, score, write the results) on the prompts. Writes benchmarks/RESULTS-evaluation.md (or --output).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def prompts_and_references(count: int) -> tuple[list[str], list[str]]:
    """Held-out-like prompts of mixed lengths: the demo SFT instructions and the demo GSM questions, alternating."""
    from deepe_widgets.demo_data import demo_gsm_rows, demo_sft_rows

    sft = [(f"{r['instruction']}\n\n{r['input']}" if r.get("input") else r["instruction"], r["output"])
           for r in demo_sft_rows()]
    gsm = [(r["question"], r["answer"]) for r in demo_gsm_rows()]
    mixed = [pair for both in zip(sft, gsm) for pair in both]
    while len(mixed) < count:
        mixed += mixed
    prompts, references = zip(*mixed[:count])
    return list(prompts), list(references)


def bare_loop(model, tokenizer, texts: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """The baseline: batches in the given order, tokenize, greedy generate, decode the new tokens."""
    import torch

    answers = []
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        with torch.inference_mode():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                    top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def count_tokens(tokenizer, answers: list[str]) -> int:
    """Tokens generated, counted the same way for both sides: the answers re-tokenized."""
    return sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"])


def talkative_tiny_model(path: Path) -> Path:
    """The tiny test model with larger random weights (`testing.make_talkative_model`)."""
    from deepe_widgets.testing import make_talkative_model

    return make_talkative_model(path)


def run(model_dir: Path | None, tiny: bool, count: int, batch_size: int, max_new_tokens: int, rounds: int,
        workdir: Path) -> tuple[list[dict], list[str]]:
    os.environ["DEEPE_HOME"] = str(workdir / "home")
    os.environ.pop("DEEPE_DB_URL", None)
    from deepe_widgets import models, store
    from deepe_widgets.runtime import evaluation

    store.dispose_engines()
    if tiny:
        model_dir = talkative_tiny_model(workdir / "tiny")
    elif model_dir is None:
        model_dir = Path(models.ensure_default_model(progress=lambda line: print(line, flush=True)).path)
    prompts, references = prompts_and_references(count)
    rows, notes = [], []

    # 1. the suite's generation vs the bare loop, alternating rounds (the machine's load shifts)
    model, tokenizer = evaluation.load_model(str(model_dir))
    texts = evaluation.chat_texts(tokenizer, prompts)
    bare_loop(model, tokenizer, texts[:batch_size], batch_size, 4)  # warm-up: first-call costs off the clock
    bare_rates, suite_rates, same = [], [], True
    for _ in range(rounds):
        started = time.perf_counter()
        bare = bare_loop(model, tokenizer, texts, batch_size, max_new_tokens)
        bare_rates.append(count_tokens(tokenizer, bare) / (time.perf_counter() - started))
        started = time.perf_counter()
        suite = evaluation.generate_answers(model, tokenizer, prompts, batch_size=batch_size,
                                            max_new_tokens=max_new_tokens)
        suite_rates.append(count_tokens(tokenizer, suite) / (time.perf_counter() - started))
        same = same and suite == bare
        print(f"  round {len(bare_rates)}/{rounds}: bare {bare_rates[-1]:.1f} tok/s, suite {suite_rates[-1]:.1f} tok/s",
              flush=True)
    bare_tps, suite_tps = statistics.median(bare_rates), statistics.median(suite_rates)
    ratio = suite_tps / bare_tps
    rows.append({"row": f"generation tokens/s, {count} prompts, batch {batch_size}, {max_new_tokens} new tokens "
                        f"(median of {rounds} alternating rounds)",
                 "baseline": f"{bare_tps:.1f} tok/s (bare batched model.generate loop)",
                 "measured": f"{suite_tps:.1f} tok/s (generate_answers)", "ratio": f"{ratio:.3f}",
                 "target": "≥ 0.95", "met": "yes" if ratio >= 0.95 else "NO"})
    notes.append("Rounds (bare / suite tok/s): " + ", ".join(f"{b:.1f} / {s:.1f}"
                                                             for b, s in zip(bare_rates, suite_rates))
                 + f". Same answers on both sides: {'yes' if same else 'no'} (the suite batches prompts of "
                 "similar length together, the bare loop in the given order; both greedy, left-padded).")
    del model

    # 2. the whole suite, as the evaluation stage runs it
    started = time.perf_counter()
    model, tokenizer = evaluation.load_model(str(model_dir))
    loaded = time.perf_counter()
    answers = evaluation.generate_answers(model, tokenizer, prompts, batch_size=batch_size,
                                          max_new_tokens=max_new_tokens)
    answered = time.perf_counter()
    metrics, per_row = evaluation.generation_scores(answers, references)
    evaluation.write_results(workdir / "output", "generation", metrics,
                             evaluation.prediction_rows(prompts, references, answers, per_row), model=str(model_dir))
    done = time.perf_counter()
    rows.append({"row": f"generation suite wall time, {count} prompts (load, answer, score, write)", "baseline": "-",
                 "measured": f"{done - started:.1f} s (load {loaded - started:.1f} s, answer "
                             f"{answered - loaded:.1f} s, score + write {done - answered:.2f} s)",
                 "ratio": "-", "target": "-", "met": "-"})
    notes.append("Scores of that run: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + ".")
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluation")
    parser.add_argument("--tiny", action="store_true", help="a tiny test model (seconds, not minutes)")
    parser.add_argument("--model", type=Path, help="a model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the markdown (default: benchmarks/RESULTS-evaluation.md; "
                             "not written with --tiny unless given)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.prompts, args.max_new_tokens, args.rounds = min(args.prompts, 12), min(args.max_new_tokens, 8), 1
    with tempfile.TemporaryDirectory(prefix="deepe-bench-eval-") as tmp:
        rows, notes = run(args.model, args.tiny, args.prompts, args.batch_size, args.max_new_tokens, args.rounds,
                          Path(tmp))
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    lines = ["# Evaluation benchmark (generation suite)", "",
             f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"Python {platform.python_version()}, torch {torch.__version__} on {device}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; model: "
             f"{'tiny' if args.tiny else args.model or 'SmolLM2-135M-Instruct'}.", "",
             "| row | baseline | measured | ratio | target | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['baseline']} | {r['measured']} | {r['ratio']} | {r['target']} | {r['met']} |"
              for r in rows]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(lines)
    print(text)
    output = args.output or (None if args.tiny else HERE / "RESULTS-evaluation.md")
    if output:
        Path(output).write_text(text)
        print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
