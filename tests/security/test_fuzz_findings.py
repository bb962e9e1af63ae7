"""What fuzzing /v1 found, pinned as plain tests so it stays fixed in the normal suite."""

from __future__ import annotations

import pytest

from tests.test_bad_input import assert_error, nothing_changes
from tests.test_mcp_protocol import Mcp


@pytest.mark.parametrize("strategy", ["semantic", "hybrid", "auto", "keyword", "fuzzy"])
def test_searching_a_tenant_with_no_memories_finds_nothing(alice_api, strategy):
    response = alice_api.post("/v1/search", {"query": "anything at all", "strategy": strategy})
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    "query", ["workspace=", "tag=", "cursor=", "limit=", "sort=", "tier=", "created_after="]
)
def test_an_empty_query_parameter_is_refused_not_ignored(alice_api, query):
    alice_api.post("/v1/memories", {"content": "in the default workspace"})
    name = query.rstrip("=")
    assert_error(
        alice_api.client.get(f"/v1/memories?{query}", headers=alice_api.headers),
        400,
        "validation_error",
        name,
    )
    if name == "workspace":
        response = alice_api.client.get("/v1/export?workspace=", headers=alice_api.headers)
        assert_error(response, 400, "validation_error", "workspace")


def test_a_padded_workspace_is_refused_as_the_document_says(alice_api):
    response = alice_api.get("/v1/memories", {"workspace": " default"})
    assert_error(response, 400, "validation_error", "workspace")
    with nothing_changes(alice_api):
        response = alice_api.post("/v1/memories", {"content": "x", "workspace": "default "})
        assert_error(response, 400, "validation_error", "workspace")


def test_a_tag_is_measured_as_sent(alice_api):
    """65 characters are too many even when the first is whitespace a trim would drop."""
    tag = "\f" + "t" * 64
    with nothing_changes(alice_api):
        assert_error(
            alice_api.post("/v1/memories", {"content": "x", "tags": [tag]}),
            400,
            "validation_error",
            "tags",
        )
    response = alice_api.post("/v1/search", {"query": "x", "tags": [tag]})
    assert_error(response, 400, "validation_error", "tags")


def test_search_refuses_type_and_memory_type_that_disagree(alice_api):
    response = alice_api.post("/v1/search", {"query": "x", "type": "note", "memory_type": "todo"})
    assert_error(response, 400, "validation_error", "memory_type")
    agreeing = alice_api.post("/v1/search", {"query": "x", "type": "todo", "memory_type": "todo"})
    assert agreeing.status_code == 200


def test_a_number_too_large_for_a_float_is_invalid_json_everywhere(alice_api):
    body = '{"version": "1.0", "memories": [{"content": "x", "importance": 1e999}]}'
    assert_error(alice_api.post("/v1/import", body), 400, "invalid_json")
    assert_error(
        alice_api.post("/v1/search", '{"query": "x", "min_score": 1e999}'), 400, "invalid_json"
    )
    mcp = alice_api.post(
        "/v1/mcp",
        '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"n": 1e999}}',
        headers={"Accept": "application/json"},
    )
    assert mcp.status_code == 400
    assert mcp.json()["error"]["code"] == -32700  # JSON-RPC parse error


def test_an_integer_past_64_bits_in_metadata_is_refused_over_rest_and_mcp(alice_api, acme):
    """Stored, it would be exported into a file that no import reads back."""
    create = alice_api.post("/v1/memories", {"content": "x", "metadata": {"n": 2**63}})
    assert_error(create, 400, "validation_error", "metadata")
    message = Mcp(acme.key).fails("memory_create", {"content": "x", "metadata": {"n": 2**63}})
    assert "metadata" in message
    assert alice_api.get("/v1/memories").json()["data"] == []


def test_the_openapi_document_describes_every_error_answer(client):
    document = client.get("/v1/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "404", "413", "429", "503"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            # Either credential header will do: one requirement naming both would demand both.
            assert all(len(requirement) == 1 for requirement in operation["security"])
    assert document["components"]["schemas"]["Error"]["required"] == [
        "error",
        "message",
        "request_id",
    ]
