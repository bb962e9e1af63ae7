"""Embedding providers, the vectors stored on write, and re-embedding."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from django.core.management import call_command

from memories.embeddings import EmbeddingError, HashedProvider, OpenAIProvider, get_provider
from memories.models import Memory, MemoryEmbedding
from memories.tenant_db import bind_tenant_database


@pytest.fixture
def configure_embeddings(settings) -> Iterator[object]:
    """Change embedding settings for one test; the provider is rebuilt each time."""

    def configure(**values: object) -> None:
        for name, value in values.items():
            setattr(settings, name, value)
        get_provider.cache_clear()

    yield configure
    get_provider.cache_clear()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_hashed_vectors_are_deterministic_normalised_and_wide_enough():
    provider = HashedProvider()
    first, second = provider.embed(["Deploy with the blue-green script"] * 2)
    assert provider.dimension >= 256
    assert first.shape == (provider.dimension,)
    assert np.array_equal(first, second)
    assert abs(np.linalg.norm(first) - 1.0) < 1e-5


def test_hashed_vectors_catch_shared_words_and_word_forms():
    provider = HashedProvider()
    deployment, deploying, coffee = provider.embed(
        ["kubernetes deployment", "deploying to kubernetes", "dark roast coffee"]
    )
    assert cosine(deployment, deploying) > 0.4
    assert cosine(deployment, coffee) < 0.15


class FakeEmbeddings(BaseHTTPRequestHandler):
    """Speaks the OpenAI embeddings API: {"data": [{"index", "embedding"}]}."""

    dimension = 8
    delay = 0.0
    status = 200
    requests: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"body": body, "auth": self.headers.get("Authorization")})
        time.sleep(self.delay)
        data = [
            {"index": index, "embedding": [float(len(text) + i) for i in range(self.dimension)]}
            for index, text in enumerate(body["input"])
        ]
        payload = json.dumps({"data": list(reversed(data))}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai() -> Iterator[str]:
    FakeEmbeddings.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/embeddings"
    server.shutdown()
    server.server_close()
    FakeEmbeddings.dimension, FakeEmbeddings.delay, FakeEmbeddings.status = 8, 0.0, 200


def test_openai_provider_sends_model_key_and_texts_and_normalises(fake_openai):
    provider = OpenAIProvider(fake_openai, "text-embed", "sk-test", dimension=8, timeout=2)
    vectors = provider.embed(["one", "three"])
    assert vectors.shape == (2, 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    request = FakeEmbeddings.requests[0]
    assert request["body"] == {"model": "text-embed", "input": ["one", "three"]}
    assert request["auth"] == "Bearer sk-test"
    # Answers are put back in input order, whatever order the server sent them in.
    expected = np.arange(8, dtype=np.float32) + 3
    assert np.allclose(vectors[0], expected / np.linalg.norm(expected))


def test_openai_provider_refuses_vectors_of_the_wrong_dimension(fake_openai):
    provider = OpenAIProvider(fake_openai, "text-embed", "", dimension=16, timeout=2)
    with pytest.raises(EmbeddingError, match="shape"):
        provider.embed(["x"])


def test_openai_provider_gives_up_after_its_timeout(fake_openai):
    FakeEmbeddings.delay = 1.5
    provider = OpenAIProvider(fake_openai, "m", "", dimension=8, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(EmbeddingError):
        provider.embed(["x"])
    assert time.monotonic() - started < 1.4


def test_openai_provider_reports_errors_and_unreachable_servers(fake_openai):
    FakeEmbeddings.status = 500
    with pytest.raises(EmbeddingError):
        OpenAIProvider(fake_openai, "m", "", dimension=8, timeout=2).embed(["x"])
    with pytest.raises(EmbeddingError):
        OpenAIProvider("http://127.0.0.1:9/none", "m", "", dimension=8, timeout=2).embed(["x"])


def test_a_write_stores_a_vector_of_the_configured_model(alice_api, acme):
    memory = alice_api.post("/v1/memories", {"content": "vectors on write"}).json()
    with bind_tenant_database(acme.tenant.id):
        embedding = MemoryEmbedding.objects.get(memory_id=memory["id"])
        assert embedding.model == get_provider().name
        assert len(embedding.vector) == 4 * get_provider().dimension


def test_a_provider_outage_keeps_the_write_and_reembed_fills_the_vector_in(
    alice_api, acme, configure_embeddings, fake_openai
):
    configure_embeddings(
        ENGRAM_EMBEDDING_PROVIDER="openai",
        ENGRAM_OPENAI_EMBEDDINGS_URL=fake_openai,
        ENGRAM_OPENAI_EMBEDDINGS_MODEL="m",
        ENGRAM_OPENAI_EMBEDDINGS_DIMENSION=8,
    )
    FakeEmbeddings.status = 503
    response = alice_api.post("/v1/memories", {"content": "kept despite the outage"})
    assert response.status_code == 201
    with bind_tenant_database(acme.tenant.id):
        assert not MemoryEmbedding.objects.exists()
    FakeEmbeddings.status = 200
    out = io.StringIO()
    call_command("reembed_memories", stdout=out)
    assert "1 memories embedded with openai:m:8" in out.getvalue()
    with bind_tenant_database(acme.tenant.id):
        assert MemoryEmbedding.objects.get().model == "openai:m:8"


def test_changing_provider_and_reembedding_replaces_every_vector(
    alice_api, acme, configure_embeddings
):
    for number in range(3):
        alice_api.post("/v1/memories", {"content": f"memory {number}"})
    configure_embeddings(ENGRAM_HASHED_EMBEDDING_DIMENSION=512)
    call_command("reembed_memories", "acme", stdout=io.StringIO())
    with bind_tenant_database(acme.tenant.id):
        assert set(MemoryEmbedding.objects.values_list("model", flat=True)) == {"hashed-v2-512"}
        assert MemoryEmbedding.objects.count() == Memory.objects.count() == 3
    body = alice_api.post("/v1/search", {"query": "memory 2", "strategy": "semantic"}).json()
    assert body["results"][0]["memory"]["content"] == "memory 2"


def test_minilm_finds_paraphrases_offline_from_the_installed_package(configure_embeddings):
    configure_embeddings(ENGRAM_EMBEDDING_PROVIDER="minilm")
    provider = get_provider()
    assert (provider.name, provider.dimension) == ("all-minilm-l6-v2", 384)
    question, answer, other = provider.embed(
        [
            "how do we ship to prod",
            "Release process: deploy with the blue-green script",
            "Alice prefers dark roast coffee",
        ]
    )
    assert cosine(question, answer) > cosine(question, other) + 0.1
