"""Embedding: (query, passage) pairs for a sentence-transformers model (Embedding-Demo). The data
helpers (the packaged base model, `demo-embed`, the pair check) live in `deepe_widgets.embeddings`."""

from __future__ import annotations

from .. import embeddings
from ..config import TrainingTypeName
from .registry import TrainingType, register


class Embedding(TrainingType):
    name = "embedding"
    training_type = TrainingTypeName.EMBEDDING
    order = 10
    demo_dataset = embeddings.EMBEDDING_DEMO_DATASET
    config_classes = {"Embedding-Demo": "sentence_transformers.SentenceTransformerTrainingArguments"}
    no_four_bit = "sentence-transformers models train unquantised"
    needs_model = "an embedding model (a sentence-transformers encoder such as all-MiniLM-L6-v2)"
    model_is = "an embedding model"
    default_base_model = embeddings.EMBEDDING_BASE_MODEL
    standard_columns = "anchor/positive or query/passage"
    inference_folder = "embedding_demo"
    evaluation_file = "evaluation/embedding.ipynb"
    suites = ("retrieval",)
    default_suite = "retrieval"

    def recognizes(self, model_row) -> bool:
        return (model_row.meta or {}).get("training_type") == TrainingTypeName.EMBEDDING or \
            embeddings.is_embedding_model(model_row.path)

    def check_dataset(self, method_row, model_row, dataset_row, values) -> None:
        embeddings.check_embedding_pairs(dataset_row, values)


EMBEDDING = register(Embedding())
