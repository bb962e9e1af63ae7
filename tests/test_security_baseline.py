"""The security baseline of the API: chunked bodies, CORS. Production settings (`check
--deploy`) and the rest of the hardening: tests/security/test_api_hardening.py."""

from __future__ import annotations

import io


def chunked_post(api, path: str, body: bytes):
    """A POST without Content-Length, as a chunked request reaches Django from gunicorn."""
    return api.client.generic(
        "POST",
        path,
        headers=api.headers,
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body)},
    )


def test_a_chunked_body_over_the_limit_gets_413_and_changes_nothing(alice_api, settings):
    settings.ENGRAM_MAX_BODY_BYTES = 100
    response = chunked_post(alice_api, "/v1/memories", b'{"content": "' + b"x" * 200 + b'"}')
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert alice_api.get("/v1/stats").json()["total_memories"] == 0


def test_a_chunked_body_within_the_limit_is_read(alice_api):
    response = chunked_post(alice_api, "/v1/memories", b'{"content": "sent in chunks"}')
    assert response.status_code == 201
    assert response.json()["content"] == "sent in chunks"


def test_cors_answers_only_configured_origins(alice_api, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = alice_api.client.options("/v1/memories", headers=preflight)
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    refused = alice_api.client.options(
        "/v1/memories", headers={**preflight, "Origin": "https://evil.example.com"}
    )
    assert "Access-Control-Allow-Origin" not in refused
    response = alice_api.get("/v1/memories", Origin="https://app.example.com")
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "X-Request-Id" in response["Access-Control-Expose-Headers"]
