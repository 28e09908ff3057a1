"""The demo datasets `deepe init` registers: `demo-sft` and `demo-gsm`."""

from __future__ import annotations

import json
import random

from . import config, store
from .datasets import add_dataset

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
    """Write and register `demo-sft` and `demo-gsm` under the workspace (once)."""
    folder = config.workspace_dir("datasets")
    for name, rows in (("demo-sft", demo_sft_rows()), ("demo-gsm", demo_gsm_rows())):
        if store.get_one(store.DatasetRecord, name=name) is not None:
            continue
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        add_dataset(name, path)
