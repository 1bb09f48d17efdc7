"""The optional MiniLM model run in numpy (app/embed.py) against vectors the reference
implementation gave for the same weights (data/minilm_reference.json names how they were made)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.embed import MINILM_DIM, MINILM_NAME, MiniLMEmbedder, model_name
from app.settings import Settings

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_the_vectors_are_the_reference_implementations(minilm: MiniLMEmbedder) -> None:
    # Among them: non-ASCII text, and a text past the model's 256 tokens (truncated alike).
    got = minilm.embed(REFERENCE["texts"])
    want = np.asarray(REFERENCE["vectors"], dtype=np.float32)
    assert got.shape == (len(REFERENCE["texts"]), MINILM_DIM) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_text_embeds_alike_alone_or_in_a_batch_of_other_lengths(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a much longer sentence about the ledger database we chose last week", "mid length text"]
    batch = minilm.embed(texts)
    alone = np.vstack([minilm.embed([t]) for t in texts])
    assert float(np.abs(batch - alone).max()) < 1e-5


def test_an_empty_text_is_a_zero_row_and_a_paraphrase_is_nearer(minilm: MiniLMEmbedder) -> None:
    v = minilm.embed(["", "My dog is a golden retriever", "what kind of puppy do I have", "quarterly tax filing"])
    assert not v[0].any()
    assert float(v[1] @ v[2]) > float(v[3] @ v[2]) + 0.2


def test_the_model_is_named_without_loading_it() -> None:
    assert model_name(Settings(_env_file=None, embed_model="minilm")) == MINILM_NAME
    assert MiniLMEmbedder().name == MINILM_NAME
