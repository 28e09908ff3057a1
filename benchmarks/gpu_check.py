"""The GPU check: does the workbench use an NVIDIA GPU in every stage, and how much of it?

    python -m benchmarks.gpu_check                    every check (under 10 minutes on one GPU)
    python -m benchmarks.gpu_check --skip-vllm        without the Live Model
    python -m benchmarks.gpu_check --output benchmarks/RESULTS-gpu.md

Run it from the repository root, in the workbench's environment, on a machine with one CUDA GPU (more
are fine: the worker leases one per stage). On a machine without CUDA it prints one sentence and exits 0.
What it needs there, besides the workbench (`pip install -e '.[runtime]'` or the dev install):

    pip install 'torch' 'transformers' 'trl' 'peft' 'papermill'   # already in the workbench's dev env
    pip install bitsandbytes                                     # the 4-bit row ('deepe-widgets[qlora]')
    deepe envs create vllm --device cuda                         # the Live Model rows (vllm==0.32.0)

It works in a workspace of its own (a temporary DEEPE_HOME; `DEEPE_ENVS_DIR` to reuse a vLLM env built
elsewhere) and prints, per run:
1. every built-in trained for 3 steps on the tiny models, and SFT-Demo and DPO-Demo on SmolLM2 (the
   default base model, imported from its GGUF as `deepe init` does), through the queue and a worker as a
   user would: status, seconds, the card's peak memory (nvidia-smi, sampled), and the device and precision
   the stage logged;
2. SmolLM2 loaded here: the device and dtype of its parameters, whether 4-bit loaded (bitsandbytes), and
   the activation memory of one training step (batch 4 x 512 tokens) with and without activation
   checkpointing, scaled to a 7B model (see `scale_to_7b`);
3. SmolLM2 served by vLLM through `deepe deploy`: ready time and decode tokens/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# no held-out rows: an evaluation job after each training would double the time
STEPS = {"max_steps": "3", "batch_size": "2", "max_seq_length": "64", "save_steps": "0", "eval_fraction": "0"}
# A 7B decoder (Llama-2-7B, Mistral-7B): layers and hidden size, for the activation estimate
SEVEN_B = {"layers": 32, "hidden": 4096}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class CardMemory:
    """The peak memory used on the GPUs, sampled from nvidia-smi every 0.2 s while a run lasts (the
    stage runs in its own kernel process, out of this process's torch counters)."""

    def __init__(self):
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
                used = max(int(line) for line in done.stdout.split())
            except (OSError, ValueError, subprocess.TimeoutExpired):
                continue
            self.peak_mib = max(self.peak_mib, used)

    def __enter__(self) -> "CardMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def stage_device_line(run_dir: str) -> str:
    """What the stage logged about its device (`runtime.devices.report_device`: "device: cuda: …, bf16")."""
    lines = [line for line in (Path(run_dir) / "training.log").read_text(errors="replace").splitlines()
             if "device: " in line or "GPU(s) leased" in line or "WARNING" in line and "GPU" in line]
    return "; ".join(line.split("]")[-1].split("INFO")[-1].strip() for line in lines[-3:]) or "(not logged)"


def train_once(method: str, base: str, dataset: str, params: dict) -> dict:
    """One training through the queue and a worker of this process; its row."""
    from deepe_widgets import jobs
    from deepe_widgets.worker import Worker

    started = time.monotonic()
    try:
        job = jobs.submit_training(method, base, dataset, params={**STEPS, **params})
    except Exception as exc:  # a method this machine cannot run (a missing extra): say so, go on
        return {"run": f"{method} on {base}", "status": f"not submitted: {exc}"}
    with CardMemory() as memory:
        Worker(idle_exit=1.0, poll_seconds=0.1, quick_slot=False).run()
    job = jobs.get_job(job.id)
    return {"run": f"{method} on {base}" + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})"
                                            if params else ""),
            "status": job.status + (f": {job.error}" if job.error else ""),
            "seconds": f"{time.monotonic() - started:.0f}", "peak GPU memory": f"{memory.peak_mib} MiB",
            "device (stage log)": stage_device_line(job.run_dir)}


def builtin_runs(workdir: Path) -> list[dict]:
    """Every built-in for 3 steps on its tiny model, then SFT-Demo and DPO-Demo (and 4-bit SFT) on SmolLM2."""
    from deepe_widgets import methods, models, testing

    tiny = {"chat": models.add_model("tiny", testing.make_tiny_model(workdir / "tiny"), replace=True).name,
            "embedding": models.add_model("tiny-embed", testing.make_tiny_embedding_model(workdir / "tiny-embed"),
                                          replace=True).name,
            "vision-language": models.add_model("tiny-vl", testing.make_tiny_vl_model(workdir / "tiny-vl"),
                                                replace=True).name,
            "image-generation": models.add_model("tiny-sd", testing.make_tiny_sd_pipeline(workdir / "tiny-sd"),
                                                 replace=True).name}
    rows = []
    for name, builtin in methods.BUILTINS.items():
        if builtin.template or name == "MLX-Demo":  # templates are copied, not run; MLX never uses CUDA
            continue
        rows.append(train_once(name, tiny[str(builtin.training_type)], builtin.demo_dataset, {}))
        print(rows[-1], flush=True)
    smol = models.ensure_default_model().name
    for name, params in (("SFT-Demo", {}), ("DPO-Demo", {}), ("SFT-Demo", {"load_in_4bit": "true"})):
        rows.append(train_once(name, smol, methods.BUILTINS[name].demo_dataset, params))
        print(rows[-1], flush=True)
    return rows


def scale_to_7b(activation_bytes: int, layers: int, hidden: int) -> int:
    """Activation memory of the same batch on a 7B model: activations grow with layers x hidden size per
    token (the MLP's width is a like multiple of the hidden size in both), so
    A_7B = A_measured x (L_7B x H_7B) / (L x H)."""
    return int(activation_bytes * SEVEN_B["layers"] * SEVEN_B["hidden"] / (layers * hidden))


def memory_probe(model_path: Path) -> list[dict]:
    """SmolLM2 in this process: where its parameters are, 4-bit loading, activation memory of a step."""
    import torch
    from transformers import AutoModelForCausalLM

    from deepe_widgets.runtime import devices

    device = devices.current_device()
    dtype = getattr(torch, devices.compute_dtype_name(device))
    rows = []
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, device_map={"": 0})
    parameters = sum(p.numel() for p in model.parameters())
    kinds = sorted({f"{p.device}/{p.dtype}".replace("torch.", "") for p in model.parameters()})
    rows.append({"check": "SmolLM2 parameters", "result": f"{parameters / 1e6:.0f}M on {', '.join(kinds)} "
                 f"({device}, {devices.precision(device)})"})
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    model.config.use_cache = False
    batch = torch.randint(0, model.config.vocab_size, (4, 512), device="cuda")
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.cuda.synchronize()
        activations = torch.cuda.max_memory_allocated() - before
        model.zero_grad(set_to_none=True)
        del loss
        rows.append({"check": f"activation memory, batch 4 x 512, checkpointing {'on' if checkpointing else 'off'}",
                     "result": f"{activations / 2**30:.2f} GiB here (peak during forward + backward, over the "
                               f"weights); a 7B ({SEVEN_B['layers']} layers x {SEVEN_B['hidden']}) needs about "
                               f"{scale_to_7b(activations, layers, hidden) / 2**30:.1f} GiB "
                               f"(x {SEVEN_B['layers'] * SEVEN_B['hidden'] / (layers * hidden):.1f})"})
    del model
    torch.cuda.empty_cache()
    problem = devices.four_bit_problem(device, has_bitsandbytes=_has("bitsandbytes"))
    if problem:
        rows.append({"check": "4-bit load", "result": f"not loaded: {problem}"})
    else:
        from transformers import BitsAndBytesConfig

        quantised = AutoModelForCausalLM.from_pretrained(model_path, device_map={"": 0}, quantization_config=(
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)))
        four_bit = sum(1 for m in quantised.modules() if type(m).__name__ == "Linear4bit")
        rows.append({"check": "4-bit load", "result": f"{'loaded' if four_bit else 'NOT loaded'}: {four_bit} "
                     f"Linear4bit layers, {quantised.get_memory_footprint() / 2**20:.0f} MiB"})
        del quantised
        torch.cuda.empty_cache()
    return rows


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def vllm_rows() -> list[dict]:
    """SmolLM2 through `deepe deploy` on the GPU: ready time and decode tokens/s."""
    from benchmarks.live_model import HEADERS, _tokens_per_second
    from deepe_widgets import deployments, envs, models
    from deepe_widgets.errors import DeepeError
    from deepe_widgets.worker import ensure_worker, stop_workers

    try:
        env = envs.require_env("vllm")
    except DeepeError as exc:
        return [{"check": "vLLM", "result": f"skipped: {exc.message}"}]
    if env.get("device") != "cuda":
        return [{"check": "vLLM", "result": "skipped: the vLLM env is the CPU build; deepe envs create vllm "
                                            "--device cuda --force"}]
    started = time.monotonic()
    job, live = deployments.submit_deploy(models.ensure_default_model().name)
    ensure_worker()
    try:
        live = deployments.wait_until_settled(job.id, timeout=600)
        state = deployments.LiveState.from_meta(live.meta)
        if state.status != deployments.LiveStatus.LIVE:
            return [{"check": "vLLM", "result": f"failed: {state.error}"}]
        HEADERS["Authorization"] = f"Bearer {deployments.api_key(live)}"
        tokens_per_second = _tokens_per_second(state.url, state.served_name, 256, 3)
        deployments.stop(live.name)
    finally:
        stop_workers(now=True, timeout=60)
    return [{"check": "vLLM ready", "result": f"server ready {state.ready_seconds} s after its start, "
             f"{time.monotonic() - started:.0f} s from deepe deploy; command: {state.command}"},
            {"check": "vLLM decode", "result": f"{tokens_per_second:.0f} tokens/s (3 requests x 256 tokens)"}]


def table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in columns) + " |"
              for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    parser.add_argument("--skip-vllm", action="store_true", help="leave out the Live Model rows")
    parser.add_argument("--output", type=Path, default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    if not cuda_available():
        print("gpu_check: no CUDA GPU that torch can use here; nothing to check (run it on a machine with one).")
        return 0
    if not shutil.which("nvidia-smi"):
        print("gpu_check: torch sees a GPU but nvidia-smi is not on the PATH; the peak memory column reads 0.")
    import torch

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deepe-gpu-check-") as tmp:
        workdir = Path(tmp)
        os.environ["DEEPE_HOME"] = str(workdir / "home")
        os.environ.pop("DEEPE_DB_URL", None)
        from deepe_widgets import config, demo_data, methods, models, store

        config.configure_logging()
        store.dispose_engines()
        methods.ensure_builtins()
        demo_data.ensure_demo_datasets()
        device = f"{torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"
        runs = builtin_runs(workdir)
        checks = memory_probe(Path(models.ensure_default_model().path))
        if not args.skip_vllm:
            checks += vllm_rows()
    seconds = time.monotonic() - started
    report = (f"# GPU check\n\nDevice: {device}; torch {torch.__version__}; {seconds:.0f} s in all.\n\n"
              f"## Built-ins through the queue (3 steps)\n\n{table(runs)}\n\n"
              f"## SmolLM2 on the GPU\n\n{table(checks)}\n")
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
