"""The demo datasets `deepe init` registers: `demo-sft`, `demo-gsm`, `demo-dpo`, `demo-sd` (images),
`demo-embed` and `demo-vl`."""

from __future__ import annotations

import importlib.util
import json
import random

from . import config, store
from .datasets import add_dataset
from .embeddings import EMBEDDING_DEMO_DATASET, ensure_demo_embedding_dataset
from .image_data import write_demo_images
from .vision_language import VL_DEMO_DATASET, ensure_demo_vl_dataset

# The demo datasets by name; each built-in method names its own (methods.BUILTINS).
SFT_DEMO_DATASET, GSM_DEMO_DATASET, DPO_DEMO_DATASET, SD_DEMO_DATASET = "demo-sft", "demo-gsm", "demo-dpo", "demo-sd"
__all__ = ["DPO_DEMO_DATASET", "EMBEDDING_DEMO_DATASET", "GSM_DEMO_DATASET", "SD_DEMO_DATASET", "SFT_DEMO_DATASET",
           "VL_DEMO_DATASET", "demo_dpo_rows", "demo_gsm_rows", "demo_sft_rows", "ensure_demo_datasets"]

# The demo data: a task small models learn in a minute (the answer format is fixed,
# so the loss falls fast), and GSM8K-style arithmetic for RL methods.
_COUNTRIES = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo"),
    ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Chile", "Santiago"),
    ("Germany", "Berlin"), ("Greece", "Athens"), ("Poland", "Warsaw"), ("Cuba", "Havana"), ("India", "New Delhi"),
    ("Austria", "Vienna"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"), ("Australia", "Canberra"), ("China", "Beijing"), ("Russia", "Moscow"),
    ("Turkey", "Ankara"), ("Morocco", "Rabat"), ("Ghana", "Accra"),
]


def demo_sft_rows() -> list[dict]:
    """Instruction / input / output rows: answer in the workbench's fixed card format."""
    rows = []
    for country, capital in _COUNTRIES:
        rows.append({"instruction": "Give the capital card for this country.", "input": country,
                     "output": f"CAPITAL CARD | country: {country} | capital: {capital} | verified: yes"})
    for country, capital in _COUNTRIES:
        rows.append({"instruction": f"What is the capital of {country}?", "input": "",
                     "output": f"CAPITAL CARD | country: {country} | capital: {capital} | verified: yes"})
    return rows


# Capitals a plain answer often gets wrong: the famous city instead of the capital.
_CONFUSED = {"Canada": "Toronto", "Australia": "Sydney", "Turkey": "Istanbul", "Morocco": "Casablanca",
             "India": "Mumbai", "Vietnam": "Ho Chi Minh City", "China": "Shanghai", "Chile": "Valparaiso"}


def _card(country: str, capital: str) -> str:
    return f"CAPITAL CARD | country: {country} | capital: {capital} | verified: yes"


def demo_dpo_rows() -> list[dict]:
    """Prompt / chosen / rejected rows: the capital card (chosen) against the plain sentence a chat
    model writes by itself (rejected; for some countries with the famous city, not the capital),
    so the base model starts out preferring the rejected answer."""
    rows = []
    for country, capital in _COUNTRIES:
        plain = _CONFUSED.get(country, capital)
        rows.append({"prompt": f"What is the capital of {country}?", "chosen": _card(country, capital),
                     "rejected": f"The capital of {country} is {plain}."})
        rows.append({"prompt": f"Give the capital card for this country.\n\n{country}",
                     "chosen": _card(country, capital), "rejected": f"{plain} is the capital of {country}."})
    return rows


def demo_gsm_rows(count: int = 64, seed: int = 0) -> list[dict]:
    """Question / answer rows whose answer ends `#### <number>` (GSM8K style)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        item = rng.choice(["apples", "books", "coins", "marbles"])
        rows.append({"question": f"Sam has {a} {item} and finds {b} more. How many {item} does Sam have now?",
                     "answer": f"Sam has {a} + {b} = {a + b} {item}.\n#### {a + b}"})
    return rows


def ensure_demo_datasets() -> None:
    """Write and register `demo-sft`, `demo-gsm`, `demo-dpo` and `demo-sd` under the workspace (once each).

    Two first uses at once (a notebook and the app, say) take turns: the second finds them made."""
    with config.workspace_lock("setup"):
        _write_demo_datasets()


def _write_demo_datasets() -> None:
    folder = config.workspace_dir("datasets")
    for name, rows in ((SFT_DEMO_DATASET, demo_sft_rows()), (GSM_DEMO_DATASET, demo_gsm_rows()),
                       (DPO_DEMO_DATASET, demo_dpo_rows())):
        if store.get_one(store.DatasetRecord, name=name) is not None:
            continue
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        add_dataset(name, path)
    # images of a concept no base model knows (needs pillow, the `image` extra)
    if store.get_one(store.DatasetRecord, name=SD_DEMO_DATASET) is None and importlib.util.find_spec("PIL"):
        add_dataset(SD_DEMO_DATASET, write_demo_images(folder / SD_DEMO_DATASET))
    ensure_demo_embedding_dataset()
    ensure_demo_vl_dataset()
