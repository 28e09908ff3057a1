"""Embedding-Demo: the packaged all-MiniLM-L6-v2 registered as an embedding base model; a tiny
sentence-transformers model trained through `deepe train --wait` on the jargon retrieval demo, its
held-out NDCG@10 measured before training and rising; saved and asked with `deepe infer` beside
its base; bad embedding data refused at submit with nothing queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepe_widgets import embeddings, jobs, metrics
from deepe_widgets.errors import DeepeError

from helpers import deepe, deepe_json

NDCG = "eval_heldout_cosine_ndcg@10"


@pytest.fixture(scope="module")
def tiny_embedding_dir(tmp_path_factory) -> Path:
    from deepe_widgets.testing import make_tiny_embedding_model

    return make_tiny_embedding_model(tmp_path_factory.mktemp("models") / "tiny-embed")


def _dataset(home: Path, name: str, rows: list[dict]) -> str:
    from deepe_widgets.datasets import add_dataset

    path = home / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return add_dataset(name, path).name


def test_demo_data_is_jargon_with_a_held_out_phrasing():
    rows = embeddings.demo_embed_rows()
    held = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] == "train"]
    assert len(held) == 30 and len(train) == 90
    assert {r["passage"] for r in held} == {r["passage"] for r in train}  # every passage is learnt
    assert not {r["query"] for r in held} & {r["query"] for r in train}  # but never the held-out question


def test_the_submit_check_and_the_kernel_pick_the_same_column_pair():
    """The pair the workbench checks at submit is the pair the kernel trains on, for every known pair and
    for a dataset holding two of them (the earlier one wins on both sides)."""
    from datasets import Dataset

    from deepe_widgets.runtime import embedding

    shapes = [list(pair) for pair in embedding.PAIR_COLUMNS] + [["prompt", "response", "question", "answer"]]
    for columns in shapes:
        raw = Dataset.from_list([{c: f"{c} {i}" for c in columns} for i in range(10)])
        train, held, _corpus = embedding.pair_dataset(raw, eval_fraction=0.2)
        row = (train if len(train) else held)[0]
        kernel = tuple(str(row[side]).split()[0] for side in ("anchor", "positive"))
        assert embeddings.pair_columns(columns) == kernel, (columns, kernel)


def test_packaged_model_is_registered_as_an_embedding_base(home):
    record = embeddings.ensure_embedding_base_model(progress=lambda _m: None)
    assert record is not None and record.kind == "base" and record.meta["training_type"] == "embedding"
    assert (Path(record.path) / "modules.json").is_file() and embeddings.is_embedding_model(record.path)
    assert embeddings.ensure_embedding_base_model().path == record.path  # once


@pytest.mark.parametrize("rows,params,field,message", [
    ([{"query": "What is a zorbix?"}], {}, "PromptInputColumn", "needs two text columns"),
    ([{"anchor": "What is a zorbix?", "positive": ""}], {}, "dataset", "row 1 has no text in 'positive'"),
    ([{"q": "What is a zorbix?", "p": "The hand-over."}], {"prompt_input_column": "q", "prompt_output_column": "x"},
     "PromptOutputColumn", "has no column 'x'"),
])
def test_bad_embedding_data_is_refused_at_submit(workspace, tiny_embedding_dir, rows, params, field, message):
    from deepe_widgets.models import add_model

    add_model("tiny-embed", tiny_embedding_dir)
    name = _dataset(workspace, "pairs", rows)
    with pytest.raises(DeepeError) as caught:
        jobs.submit_training("Embedding-Demo", "tiny-embed", name, params=params)
    assert message in caught.value.message and caught.value.field == field, caught.value.message
    assert jobs.list_jobs() == []


def test_one_column_dataset_exits_2_with_one_line(workspace, tiny_embedding_dir):
    deepe("models", "add", "tiny-embed", str(tiny_embedding_dir))
    data = workspace / "one-column.jsonl"
    data.write_text('{"text": "What is a zorbix?"}\n{"text": "What is a drosk?"}\n', encoding="utf-8")
    done = deepe("train", "--method", "Embedding-Demo", "--base-model", "tiny-embed", "--dataset", str(data),
                 check=False)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs two text columns" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and jobs.list_jobs() == []


@pytest.mark.training
def test_embedding_demo_trains_saves_and_finds_passages_beside_its_base(workspace, tiny_embedding_dir):
    deepe("models", "add", "tiny-embed", str(tiny_embedding_dir))
    trained = deepe_json("train", "--method", "Embedding-Demo", "--base-model", "tiny-embed", "--dataset",
                         "demo-embed", "--param", "max_steps=10", "--param", "learning_rate=5e-3",
                         "--param", "eval_steps=5", "--param", "batch_size=16", "--wait", "--json", timeout=400)
    assert trained["status"] == "succeeded", trained["error"]
    ndcg = {row.step: row.value for row in metrics.metrics_for(trained["id"]) if row.name == NDCG}
    assert sorted(ndcg) == [0, 5, 10]  # a value before any training, then every 5 steps
    assert ndcg[10] > ndcg[0] + 0.2, ndcg  # the jargon is learnt: held-out queries find their passage
    names = {row.name for row in metrics.metrics_for(trained["id"])}
    assert {"loss", "eval_heldout_cosine_mrr@10", "eval_heldout_cosine_recall@5"} <= names
    assert metrics.direction(NDCG) == "max"

    [customized] = trained["artifacts"]
    assert (Path(customized["path"]) / "modules.json").is_file()  # a sentence-transformers folder
    saved = deepe_json("save", customized["name"], "--wait", "--json", timeout=300)
    assert saved["status"] == "succeeded", saved["error"]
    [complete] = saved["artifacts"]
    assert (Path(complete["path"]) / "modules.json").is_file()
    # The evaluation stage scores the same held-out queries against the same passages: the trained
    # model as its training's last evaluation did, its base as the first one (before any step) did.
    from deepe_widgets import evaluations

    for model, given, expected in ((customized["name"], (), ndcg[10]), ("tiny-embed", ("--dataset", "demo-embed"),
                                                                         ndcg[0])):
        done = deepe_json("evaluate", model, *given, "--wait", "--json", timeout=300)
        assert done["status"] == "succeeded", done["error"]
        result = evaluations.latest(model, "retrieval")
        assert result["metrics"][NDCG] == pytest.approx(expected, abs=1e-3), (model, result["metrics"], ndcg)
        assert len(evaluations.read_predictions(result)) == result["rows"] > 0

    queries = [r["query"] for r in embeddings.demo_embed_rows() if r["split"] == "test"][:2]
    answer = deepe_json("infer", complete["name"], *[a for q in queries for a in ("--prompt", q)], "--json",
                        timeout=300)
    assert answer["error"] is None, answer["error"]
    first = answer["responses"][0]  # the training data's passages, and its base model's answer beside
    assert first["prompt"] == queries[0] and len(first["passages"]) == 3 and len(first["base_passages"]) == 3
    passages = {r["passage"] for r in embeddings.demo_embed_rows()}
    assert {hit["passage"] for hit in first["passages"] + first["base_passages"]} <= passages
    scores = [hit["score"] for hit in first["passages"]]
    assert scores == sorted(scores, reverse=True) and "base model:" in first["response"]
    done = deepe("infer", complete["name"], "--prompt", "Who gets the pager?", "--param",
                 f"corpus={workspace / 'missing.txt'}", check=False)
    assert done.returncode == 2 and "corpus file" in done.stderr and "does not exist" in done.stderr


def test_a_corpus_file_gives_the_passages_and_the_nearest_come_first(tmp_path, tiny_embedding_dir):
    from sentence_transformers.sentence_transformer import SentenceTransformer

    from deepe_widgets.runtime.embedding import load_corpus, nearest_passages

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The pager hand-over.\n\nThe coffee machine.\nThe pager hand-over.\n", encoding="utf-8")
    assert load_corpus(str(corpus)) == ["The pager hand-over.", "The coffee machine."]  # blank and repeated lines go
    model = SentenceTransformer(str(tiny_embedding_dir), device="cpu")
    [hits] = nearest_passages(model, ["The coffee machine."], load_corpus(str(corpus)), top_k=5)
    assert [h["passage"] for h in hits][0] == "The coffee machine." and len(hits) == 2
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3) and hits[0]["score"] > hits[1]["score"]


@pytest.mark.parametrize("variant,kind,demo,parameter", [
    ("embedding_training.ipynb", "embedding", "embedding_demo", "NegativeColumn"),
    ("vl_training.ipynb", "vision-language", "vl_demo", "MAX_EVAL_SAMPLES"),
])
def test_custom_template_variants_register_as_user_methods(home, tmp_path, variant, kind, demo, parameter):
    import shutil

    templates = Path(__file__).resolve().parent.parent / "method_templates"
    mine = shutil.copy(templates / "custom_template" / variant, tmp_path / f"my_{variant}")
    saving = shutil.copy(templates / demo / "saving.ipynb", tmp_path / "saving.ipynb")
    deepe("methods", "add", "--name", "mine", "--type", kind, "--lifecycle", "complete",
          "--stage", f"training={mine}@python3", "--stage", f"saving={saving}@python3")
    shown = deepe_json("methods", "show", "mine", "--json")
    assert shown["type"] == kind and not shown["script_mode"] and parameter in shown["parameters"]
