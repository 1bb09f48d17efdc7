"""Embedding models: local, offline, weights from an installed package (never a hub at run time).

`Embedder` is what the embedding agent and the gateway need: a name recorded with every vector,
a dimension, and `embed(texts)` returning L2-normalized float32 rows. The default is WordLlama
(static token embeddings, weights inside the `wordllama` wheel; licence: docs/adr/0008), cut to
`embed_dim` dimensions. `load(settings)` picks the model the settings name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.settings import Settings

Matrix = npt.NDArray[np.float32]


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """Model and dimension, e.g. `wordllama-l2-64`: stored with each vector."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """(len(texts), dim) float32, each row of unit length (zero for an empty text)."""
        ...


class WordLlamaEmbedder:
    """WordLlama's `l2_supercat` model from the wheel's own weights folder."""

    def __init__(self, dim: int = 64) -> None:
        import wordllama
        from wordllama import WordLlama

        # The package's own folder: tokenizer and weights ship there; never download.
        self._model: Any = WordLlama.load(
            dim=256,  # the wheel ships the 256-d weights; cut to `dim`
            trunc_dim=dim if dim != 256 else None,
            cache_dir=os.path.dirname(wordllama.__file__),
            disable_download=True,
        )
        self._dim = dim
        self._lock = threading.Lock()  # the tokenizer is not documented as thread-safe

    @property
    def name(self) -> str:
        return wordllama_name(self._dim)

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            raw = self._model.embed(list(texts), norm=False)
        return normalize(np.asarray(raw, dtype=np.float32))


def wordllama_name(dim: int) -> str:
    return f"wordllama-l2-{dim}"


def model_name(settings: Settings) -> str | None:
    """The name the configured model records with its vectors, without loading it (None: off)."""
    if settings.embed_model == "none":
        return None
    if settings.embed_model == "wordllama":
        return wordllama_name(settings.embed_dim)
    raise ValueError(f"unknown embedding model {settings.embed_model!r}")


def normalize(m: Matrix) -> Matrix:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Matrix = (m / norms).astype(np.float32, copy=False)
    return out


@cache
def _load(model: str, dim: int) -> Embedder:
    if model == "wordllama":
        return WordLlamaEmbedder(dim)
    raise ValueError(f"unknown embedding model {model!r}")


def load(settings: Settings) -> Embedder | None:
    """The configured model (one instance per process), or None when embeddings are off."""
    if settings.embed_model == "none":
        return None
    return _load(settings.embed_model, settings.embed_dim)
