"""Liveness, readiness and the public OpenAPI document."""

from __future__ import annotations

import pytest
from django.test import Client


def test_health_is_ok_without_touching_the_database():
    # No django_db mark: any database query here would fail the test.
    response = Client().get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_the_database_answers_and_tenant_files_are_reachable(db):
    response = Client().get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_not_ready_without_the_tenants_directory(db, settings, tmp_path):
    settings.ENGRAM_DATA_DIR = tmp_path / "empty"
    settings.ENGRAM_DATA_DIR.mkdir()
    response = Client().get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["message"]
    assert body["request_id"] == response["X-Request-Id"]
    assert "Traceback" not in response.content.decode()


def test_openapi_document_is_public_and_describes_the_api(db):
    response = Client().get("/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for path in ("/v1/memories", "/v1/memories/{memory_id}", "/v1/stats"):
        assert path in document["paths"], path
    assert {"get", "post"} <= set(document["paths"]["/v1/memories"])
    assert {"get", "patch", "delete"} <= set(document["paths"]["/v1/memories/{memory_id}"])


@pytest.mark.parametrize("path", ["/health", "/ready", "/v1/openapi.json"])
def test_every_answer_carries_a_request_id(db, path):
    client = Client()
    made = client.get(path)["X-Request-Id"]
    assert made
    assert client.get(path)["X-Request-Id"] != made
    echoed = client.get(path, headers={"X-Request-Id": "probe-1234-abcd"})
    assert echoed["X-Request-Id"] == "probe-1234-abcd"
