"""Live Model benchmarks: the platform's vLLM deployment against the same engine started by hand.

    python -m benchmarks.live_model                 SmolLM2-135M-Instruct (the default base model)
    python -m benchmarks.live_model --tiny          a tiny test model (seconds of decoding)
    python -m benchmarks.live_model --model FOLDER  any model folder

Needs the vLLM deployment environment (`deepe envs create vllm`; `DEEPE_ENVS_DIR` to use one
built elsewhere). Rows: time from `deepe deploy` to the first answer; decode tokens/s through
the Live Model vs the same server command run by hand (ratio); p50/p95 latency of 8 concurrent
chat requests in a bounded loop on 127.0.0.1. Writes benchmarks/RESULTS-live.md (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "Write a short story about a lighthouse keeper."
HEADERS = {"Content-Type": "application/json"}  # + the server's key, once it is known


def _chat(url: str, model: str, max_tokens: int, prompt: str = PROMPT) -> tuple[float, int]:
    """(seconds, completion tokens) of one chat completion that decodes exactly `max_tokens`."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0, "ignore_eos": True}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=HEADERS)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as reply:
        answer = json.loads(reply.read())
    return time.perf_counter() - started, int(answer["usage"]["completion_tokens"])


def _tokens_per_second(url: str, model: str, max_tokens: int, rounds: int) -> float:
    _chat(url, model, 4)  # warm-up
    seconds = tokens = 0.0
    for _ in range(rounds):
        s, t = _chat(url, model, max_tokens)
        seconds += s
        tokens += t
    return tokens / seconds


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 900) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server started by hand exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/models", headers=HEADERS), timeout=5):
                return time.monotonic() - started
        except OSError:
            time.sleep(1)
    raise RuntimeError("the server started by hand was not ready in time")


def run(model_dir: Path | None, tiny: bool, max_tokens: int, rounds: int,
        workdir: Path) -> tuple[list[dict], list[str]]:
    os.environ["DEEPE_HOME"] = str(workdir / "home")
    os.environ.pop("DEEPE_DB_URL", None)
    from deepe_widgets import config, demo_data, deployments, envs, methods, models, store
    from deepe_widgets.worker import ensure_worker

    store.dispose_engines()
    methods.ensure_builtins()
    demo_data.ensure_demo_datasets()
    envs.require_env("vllm")
    if tiny:
        from deepe_widgets.testing import make_tiny_model

        model_dir = make_tiny_model(workdir / "tiny64", hidden_size=256)
    if model_dir is not None:
        name = "bench-model"
        models.add_model(name, model_dir, replace=True)
    else:
        name = models.ensure_default_model().name
    rows, notes = [], []

    # 1. deepe deploy → first answer
    t0 = time.monotonic()
    job, live = deployments.submit_deploy(name)
    ensure_worker()
    live = deployments.wait_until_settled(job.id, timeout=1200)
    if live.meta.get("status") != deployments.LiveStatus.LIVE:
        raise RuntimeError(f"the deployment failed: {live.meta.get('error')}")
    url, served = live.meta["url"], live.meta["served_name"]
    HEADERS["Authorization"] = f"Bearer {deployments.api_key(live)}"
    first_seconds, _ = _chat(url, served, 8)
    to_first = time.monotonic() - t0
    rows.append({"row": "deploy → first answer (submit, queue, server start, /v1/models, one chat request)",
                 "baseline": "-", "measured": f"{to_first:.1f} s (server ready in "
                 f"{live.meta.get('ready_seconds')} s after its start)", "ratio": "-"})

    # 2. tokens/s through the Live Model ...
    live_tps = _tokens_per_second(url, served, max_tokens, rounds)
    # 3. ... and p95 of 8 concurrent requests, a bounded loop (3 rounds of 8)
    latencies: list[float] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            latencies += [s for s, _t in pool.map(lambda _i: _chat(url, served, 32), range(8))]
    command = live.meta["command"]
    settings = deployments.read_server_file(job).get("settings", {})
    deployments.stop(live.name)

    # the same engine and command, started by hand on another port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = shlex.split(command)
    argv[argv.index("--port") + 1] = str(port)
    log_path = workdir / "by-hand-server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={
                                    **os.environ, **settings, "VLLM_API_KEY": HEADERS["Authorization"][7:],
                                    "PYTHONPATH": str(config.package_templates_dir() / "vllm")})  # key_guard
    try:
        hand_url = f"http://127.0.0.1:{port}"
        hand_ready = _wait_ready(hand_url, proc)
        hand_tps = _tokens_per_second(hand_url, served, max_tokens, rounds)
    finally:
        deployments.stop_server(proc.pid)
    rows.append({"row": f"decode tokens/s, {rounds} requests × {max_tokens} tokens, one at a time",
                 "baseline": f"{hand_tps:.1f} tok/s (same command by hand)", "measured": f"{live_tps:.1f} tok/s "
                 "(through the Live Model)", "ratio": f"{live_tps / hand_tps:.3f}"})
    rows.append({"row": "latency of 8 concurrent chat requests × 3 rounds (32 tokens each)", "baseline": "-",
                 "measured": f"p50 {_percentile(latencies, 0.5):.2f} s, p95 {_percentile(latencies, 0.95):.2f} s",
                 "ratio": "-"})
    notes.append(f"Server command: `{command}` with {settings}; by hand it was ready in {hand_ready:.1f} s.")
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live_model")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--model", type=Path, help="a model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS-live.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="deepe-bench-live-") as tmp:
        try:
            rows, notes = run(args.model, args.tiny, args.max_tokens, args.rounds, Path(tmp))
        finally:  # the worker it started (and any server still up) must not outlive the benchmark
            from deepe_widgets.worker import stop_workers

            stop_workers(now=True, timeout=60)
        from deepe_widgets import envs

        info = envs.env_info("vllm") or {}
    lines = ["# Live Model benchmark (vLLM)", "",
             f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}; engine env: "
             f"{info.get('device')}, {', '.join(f'{k} {v}' for k, v in (info.get('packages') or {}).items() if v)}; "
             f"model: {'tiny (head_dim 64)' if args.tiny else args.model or 'SmolLM2-135M-Instruct'}.", "",
             "| row | baseline | measured | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['baseline']} | {r['measured']} | {r['ratio']} |" for r in rows]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
