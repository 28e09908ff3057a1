"""Kernel side of embedding methods: (anchor, positive[, negative]) pairs with a held-out split, the
retrieval evaluator on it, and nearest passages for inference.

Imports nothing of the workbench but the runtime; datasets and sentence-transformers only when called."""

from __future__ import annotations

from pathlib import Path

from . import held_out_rows, load_dataset_file

PAIR_COLUMNS = (("anchor", "positive"), ("query", "passage"), ("query", "positive"), ("question", "answer"),
                ("prompt", "response"), ("sentence1", "sentence2"))
PASSAGE_COLUMNS = ("passage", "positive", "text", "document", "response", "answer", "sentence2")


def pair_dataset(raw, anchor_column: str = "", positive_column: str = "", negative_column: str = "",
                 eval_fraction: float = 0.1, seed: int = 42):
    """(train, held_out, corpus): `anchor` / `positive` (/ `negative`) datasets and every distinct
    passage of the data (positives and negatives), which the held-out queries are ranked against."""
    columns = raw.column_names
    if not (anchor_column or positive_column):
        anchor_column, positive_column = next(((a, p) for a, p in PAIR_COLUMNS if a in columns and p in columns),
                                              ("", ""))
    missing = [c for c in (anchor_column, positive_column) if not c or c not in columns]
    if missing:
        raise ValueError(f"the dataset needs a query and a passage column (columns: {columns}); name them with "
                         "PromptInputColumn and PromptOutputColumn, or use anchor/positive or query/passage")
    negative_column = negative_column or ("negative" if "negative" in columns else "")
    if negative_column and negative_column not in columns:
        raise ValueError(f"the dataset has no column {negative_column!r} (NegativeColumn); columns: {columns}")
    picked = [anchor_column, positive_column] + ([negative_column] if negative_column else [])
    names = ["anchor", "positive"] + (["negative"] if negative_column else [])
    pairs = raw.select_columns(picked)
    for old, new in zip(picked, names):
        if old != new:
            pairs = pairs.rename_column(old, new)
    train, held = held_out_rows(raw, columns, eval_fraction, seed)
    corpus = list(dict.fromkeys(str(p) for name in names[1:] for p in pairs[name]))
    return pairs.select(train), pairs.select(held), corpus


def retrieval_evaluator(held_out, corpus: list[str], name: str = "heldout"):
    """sentence-transformers' InformationRetrievalEvaluator: each held-out anchor should find its
    positive among `corpus` (NDCG@10, MRR@10, recall@1/5, accuracy@1, MAP@10)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    ids = {passage: f"p{i}" for i, passage in enumerate(corpus)}
    queries = {f"q{i}": str(row["anchor"]) for i, row in enumerate(held_out)}
    relevant = {f"q{i}": {ids[str(row["positive"])]} for i, row in enumerate(held_out)}
    return InformationRetrievalEvaluator(queries, {v: k for k, v in ids.items()}, relevant, name=name,
                                         mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1],
                                         precision_recall_at_k=[1, 5], map_at_k=[10], write_csv=False)


def load_corpus(path: str) -> list[str]:
    """Passages from a .txt file (one a line) or a dataset file (its passage-like columns, and the
    `negative` column, deduplicated in order)."""
    if not path:
        raise ValueError("no corpus: give CORPUS (a file of passages) or the dataset the model was trained on")
    if Path(path).suffix.lower() == ".txt":
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    data = load_dataset_file(path)
    column = next((c for c in PASSAGE_COLUMNS if c in data.column_names), None)
    if column is None:
        raise ValueError(f"{path} has no passage column ({', '.join(PASSAGE_COLUMNS)}); columns: {data.column_names}")
    passages = [str(p) for p in data[column]]
    if "negative" in data.column_names:
        passages += [str(p) for p in data["negative"]]
    return list(dict.fromkeys(p for p in passages if p.strip()))


def nearest_passages(model, queries: list[str], corpus: list[str], top_k: int = 3) -> list[list[dict]]:
    """Per query, the `top_k` passages with the highest cosine similarity, with their scores."""
    import torch

    if not queries:
        return []
    query_vectors = model.encode(list(queries), convert_to_tensor=True, normalize_embeddings=True)
    passage_vectors = model.encode(list(corpus), convert_to_tensor=True, normalize_embeddings=True)
    scores = query_vectors @ passage_vectors.T
    top = torch.topk(scores, k=min(top_k, len(corpus)), dim=1)
    return [[{"passage": corpus[int(j)], "score": round(float(s), 4)} for s, j in zip(values, indices)]
            for values, indices in zip(top.values, top.indices)]
