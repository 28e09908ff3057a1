"""What a run was made from, as hashes: the record's `metadata.deepe.provenance`.

A re-run compares these with the files as they are now to prove it is the same run (or to
say what changed). Foundation level: the standard library only, so any floor may use it.

- a dataset file: its size and SHA-256;
- a model folder: a cheap fingerprint (every file's size; SHA-256 of the config and tokenizer
  files and of every file up to 2 MiB; of the first and last 1 MiB of larger files, the
  weights), a whole model in well under a second;
- the device a kernel's torch trains on: its torch build and the GPUs visible to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

SAMPLE_BYTES = 1 << 20  # a weight file is fingerprinted by its first and last MiB (and its size)
WHOLE_FILE_LIMIT = 2 * SAMPLE_BYTES  # smaller files are hashed whole
# Hashed whole whatever their size: what decides how text becomes tokens and how weights are read.
ALWAYS_WHOLE = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja",
                "chat_template.json", "preprocessor_config.json", "processor_config.json")
FINGERPRINT_METHOD = ("sha256 of 'path size digest' lines; digest = sha256 of the whole file for config/tokenizer "
                      "files and files up to 2 MiB, else of its first and last 1 MiB")


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a whole file, hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict:
    """`{"path", "size", "sha256"}` of a data file (hashed whole: a changed row must show)."""
    path = Path(path)
    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}


def _sampled_sha256(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        handle.seek(max(size - SAMPLE_BYTES, SAMPLE_BYTES))
        digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


# A model's card describes it (and gains its evaluation's scores later): not what it computes.
CARD_FILES = ("README.md", "model_card.json")


def _folder_files(folder: Path) -> list[Path]:
    """Every file under `folder`, in a stable order; hidden files and folders (a hub download's
    `.cache/`, `.git/`) are bookkeeping, and the card at its top a description: not the model."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files) if not f.startswith(".")
                  and not (Path(root) == folder and f in CARD_FILES)]
    return found


def model_fingerprint(folder: str | os.PathLike) -> dict:
    """`{"path", "sha256", "files": {relative path: [size, digest]}, "method"}` of a model folder.

    Sizes, and SHA-256 of the config / tokenizer files and of the first and last MiB of each
    weight file: a model is fingerprinted in well under a second however large it is, and a
    changed config, tokenizer, shard count or weight file shows. Symlinked files (a hub cache
    snapshot) are followed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    files: dict[str, list] = {}
    for path in _folder_files(folder):
        size = path.stat().st_size
        whole = size <= WHOLE_FILE_LIMIT or path.name in ALWAYS_WHOLE
        files[path.relative_to(folder).as_posix()] = [size, sha256_file(path) if whole else _sampled_sha256(path, size)]
    lines = "".join(f"{name} {size} {digest}\n" for name, (size, digest) in files.items())
    return {"path": str(folder), "sha256": hashlib.sha256(lines.encode()).hexdigest(), "files": files,
            "method": FINGERPRINT_METHOD}


def changed_files(before: dict, after: dict) -> list[str]:
    """The files of two model fingerprints that differ, were added or are gone, by name."""
    old, new = before.get("files") or {}, after.get("files") or {}
    names = []
    for name in sorted((set(old) | set(new)) - set(CARD_FILES)):  # cards in fingerprints made before
        if name not in new:
            names.append(f"{name} removed")
        elif name not in old:
            names.append(f"{name} added")
        elif list(old[name]) != list(new[name]):
            names.append(name)
    return names


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def _nvidia_gpus(visible: str | None) -> list[str]:
    """Names of the NVIDIA GPUs CUDA would use (`CUDA_VISIBLE_DEVICES` by index or UUID)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        done = subprocess.run([smi, "--query-gpu=index,uuid,name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    gpus = [[part.strip() for part in line.split(",", 2)] for line in done.stdout.splitlines() if line.count(",") >= 2]
    if visible is None:
        return [name for _index, _uuid, name in gpus]
    picked = []
    for wanted in (w.strip() for w in visible.split(",") if w.strip()):
        if wanted.startswith("MIG-"):  # a MIG instance nvidia-smi lists under its GPU: named as that GPU
            picked += [name for _index, _uuid, name in gpus[:1]]
            continue
        found = [name for index, uuid, name in gpus if wanted == index or (len(wanted) > 4 and uuid.startswith(wanted))]
        if not found:  # CUDA stops at the first entry it cannot match
            break
        picked += found[:1]
    return picked


def probe_device(torch_version: str | None) -> dict:
    """The device a kernel's torch trains on, without importing torch (that costs a stage seconds
    on a small machine): `type` cpu when `torch_version` is a CPU build or no GPU is visible,
    cuda with the GPU's `name` (nvidia-smi, honouring CUDA_VISIBLE_DEVICES), mps on Apple
    silicon; with the CPU model and the cores this process may use, and `how` it was decided."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    out = {"type": "cpu", "name": None, "count": 0, "cpu": _cpu_model(), "cpus": cpus,
           "platform": platform.platform(), "torch": torch_version}
    build = (torch_version or "").partition("+")[2]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not torch_version:
        out["how"] = "torch is not installed in the kernel"
    elif build == "cpu":
        out["how"] = f"torch {torch_version} is a CPU build"
    elif sys.platform == "darwin" and platform.machine() == "arm64":
        out.update(type="mps", name="Apple silicon GPU", count=1, how="torch on Apple silicon uses MPS")
    elif visible is not None and visible.strip() in ("", "-1"):
        out["how"] = "CUDA_VISIBLE_DEVICES hides every GPU"
    elif gpus := _nvidia_gpus(visible):
        out.update(type="cuda", name=gpus[0], count=len(gpus), how="nvidia-smi")
    else:
        out["how"] = "no NVIDIA GPU found (nvidia-smi)"
    return out


def describe_device(device: dict | None) -> str:
    """"cuda: NVIDIA H100 80GB HBM3", "cpu: AMD EPYC 7B13 (2 cores)" or "unknown"."""
    if not device or not device.get("type"):
        return "unknown"
    if device["type"] == "cpu":
        cpus = device.get("cpus")
        return f"cpu: {device.get('cpu') or 'unknown CPU'}" + (f" ({cpus} cores)" if cpus else "")
    count = device.get("count") or 1
    return f"{device['type']}: {device.get('name')}" + (f" x{count}" if count > 1 else "")


# The stage writes the device its torch really uses here, in its run folder (`runtime.devices.
# report_device`): `probe_device` decides from nvidia-smi, which lists a GPU torch may not use.
STAGE_DEVICE_FILE = ".deepe-device.json"


def read_stage_device(run_folder: str | os.PathLike) -> dict | None:
    """What the stage's torch reported (`{"type", "name", "warning"}`), or None when it said nothing."""
    try:
        seen = json.loads(Path(run_folder, STAGE_DEVICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return seen if isinstance(seen, dict) and seen.get("type") else None


def stage_device(probed: dict | None, seen: dict | None) -> dict | None:
    """The provenance's device: `probed` (nvidia-smi, before the stage), corrected by what the
    stage's torch `seen`: a GPU torch cannot use (a driver older than the wheel) is recorded as
    `cpu`, with the GPU it left unused and why."""
    if not seen or not probed or seen.get("type") == probed.get("type"):
        return probed
    corrected = {**probed, "type": seen["type"], "name": seen.get("name"),
                 "count": seen.get("count", 1 if seen["type"] != "cpu" else 0),
                 "how": f"the stage's torch uses {seen['type']} (nvidia-smi said {probed.get('type')})"}
    if probed.get("type") == "cuda" and seen["type"] != "cuda":
        corrected["unused_gpu"] = probed.get("name")
    if seen.get("warning"):
        corrected["warning"] = seen["warning"]
    return corrected


# A model folder's weights as torch dtype names, from safetensors' header codes.
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
SAVING_DTYPES = ("auto", "float32", "float16", "bfloat16")


def model_dtype(folder: str | os.PathLike) -> str:
    """The dtype a model folder's weights are kept in: its config's `dtype` (`torch_dtype` before
    transformers 4.56), else the floating tensors of its first safetensors file (a diffusers
    pipeline names none in its configs), else float32."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    for key in ("dtype", "torch_dtype"):
        named = str(config.get(key) or "").removeprefix("torch.") if isinstance(config, dict) else ""
        if named in SAFETENSORS_DTYPES.values():
            return named
    for weights in sorted(folder.rglob("*.safetensors")):
        try:
            with open(weights, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(min(length, 100 << 20)))
        except (OSError, ValueError, struct.error):
            continue
        kinds = [SAFETENSORS_DTYPES[t["dtype"]] for name, t in header.items()
                 if name != "__metadata__" and isinstance(t, dict) and t.get("dtype") in SAFETENSORS_DTYPES]
        if kinds:
            return max(set(kinds), key=kinds.count)
    return "float32"


def saving_dtype(setting: str, base_folder: str | os.PathLike) -> str:
    """A saving stage's DTYPE as the dtype it saves in: `auto` is the base model's own."""
    setting = str(setting or "auto").strip().lower()
    if setting not in SAVING_DTYPES:
        raise ValueError(f"DTYPE must be one of {', '.join(SAVING_DTYPES)}, not {setting!r}")
    return model_dtype(base_folder) if setting == "auto" else setting
