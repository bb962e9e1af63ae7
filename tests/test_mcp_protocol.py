"""POST /v1/mcp over raw HTTP: both protocol eras, the transport's rules, every error path,
credentials and scopes.

Every successful result is checked against the official MCP schema of the version it was
sent in (mcp_types, the SDK's generated wire types), so a result a real client would reject
fails here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from django.test import Client
from mcp_types import methods as mcp_methods

from engram_cloud.errors import ApiError
from mcp.protocol import TOOLS
from memories.models import Memory
from memories.tenant_db import bind_tenant_database, tenant_database_path
from tenants.authentication import Principal
from tenants.models import TenantStatus
from tenants.permissions import Scope

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
HANDSHAKE_VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
NAME_PARAMS = {"tools/call": "name", "resources/read": "uri"}


def post(body: Any, key: str | None = None, path: str = "/v1/mcp", **headers: str) -> Any:
    """One raw POST; `body` is JSON-encoded unless it is already text."""
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    content_type = headers.pop("content_type", "application/json")
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return Client().post(path, data, content_type=content_type, headers=headers)


def rpc(method: str, params: dict[str, Any] | None = None, request_id: Any = 1) -> dict:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


class Mcp:
    """An MCP client of one tenant's key, in one protocol version, over the test client."""

    def __init__(self, key: str, version: str = HANDSHAKE, path: str = "/v1/mcp") -> None:
        self.key = key
        self.version = version
        self.path = path

    @property
    def modern(self) -> bool:
        return self.version == MODERN

    def send(self, method: str, params: dict[str, Any] | None = None, **headers: str) -> Any:
        params = dict(params or {})
        if self.modern:
            params["_meta"] = {PROTOCOL_VERSION: self.version, CLIENT_CAPABILITIES: {}}
            headers.setdefault("Mcp-Method", method)
            if method in NAME_PARAMS:
                headers.setdefault("Mcp-Name", params[NAME_PARAMS[method]])
        if self.modern or method != "initialize":
            headers.setdefault("MCP-Protocol-Version", self.version)
        return post(rpc(method, params), self.key, self.path, **headers)

    def result(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.send(method, params)
        assert response.status_code == 200, response.content
        body = response.json()
        assert "result" in body, body
        mcp_methods.validate_server_result(method, self.version, body["result"])
        return body["result"]

    def error(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, dict]:
        response = self.send(method, params)
        body = response.json()
        assert "error" in body, body
        return response.status_code, body["error"]

    def call_result(self, tool: str, arguments: Any = None) -> dict[str, Any]:
        params = {"name": tool}
        if arguments is not None:
            params["arguments"] = arguments
        return self.result("tools/call", params)

    def call(self, tool: str, **arguments: Any) -> Any:
        """The tool's Engram result (the JSON of its text item), which must not be an error."""
        result = self.call_result(tool, arguments)
        assert result.get("isError") is False, result
        payload = json.loads(result["content"][0]["text"])
        if "structuredContent" in result:
            structured = result["structuredContent"]
            assert structured == (payload if isinstance(payload, dict) else structured)
        return payload

    def fails(self, tool: str, arguments: Any = None) -> str:
        """The readable message of a tool call that failed on its input."""
        result = self.call_result(tool, arguments)
        assert result["isError"] is True, result
        return result["content"][0]["text"]


@pytest.fixture
def alice(acme) -> Mcp:
    return Mcp(acme.key)


@pytest.fixture
def bob(globex) -> Mcp:
    return Mcp(globex.key)


# --- Handshake era -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
def test_initialize_answers_with_the_clients_version_when_it_is_supported(alice, version):
    alice.version = version
    result = alice.result(
        "initialize",
        {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    assert result["protocolVersion"] == version
    assert set(result["capabilities"]) == {"tools", "resources"}
    assert result["serverInfo"]["name"] == "engram-cloud"


def test_initialize_offers_the_latest_handshake_version_for_one_it_does_not_know(alice):
    result = alice.result("initialize", {"protocolVersion": "2024-01-01", "capabilities": {}})
    assert result["protocolVersion"] == "2025-11-25"


def test_initialize_without_a_protocol_version_is_invalid_params(alice):
    status, error = alice.error("initialize", {"capabilities": {}})
    assert (status, error["code"]) == (200, -32602)


def test_the_initialized_notification_is_accepted_with_202_and_no_body(acme):
    response = post({"jsonrpc": "2.0", "method": "notifications/initialized"}, acme.key)
    assert response.status_code == 202
    assert response.content == b""


def test_a_response_posted_by_the_client_is_accepted_with_202(acme):
    response = post({"jsonrpc": "2.0", "id": 7, "result": {}}, acme.key)
    assert response.status_code == 202


def test_ping_answers_an_empty_result(alice):
    assert alice.result("ping") == {}


def test_no_session_is_kept_or_required(acme, alice):
    response = post(rpc("initialize", {"protocolVersion": HANDSHAKE, "capabilities": {}}), acme.key)
    assert "Mcp-Session-Id" not in response.headers
    response = alice.send("tools/list", **{"Mcp-Session-Id": "a-session-we-never-gave"})
    assert response.status_code == 200


def test_an_unsupported_protocol_version_header_is_refused_with_400(acme):
    response = post(rpc("tools/list"), acme.key, **{"MCP-Protocol-Version": "2000-01-01"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32022
    assert error["data"]["requested"] == "2000-01-01"
    assert "2025-11-25" in error["data"]["supported"]
    assert MODERN in error["data"]["supported"]


def test_a_request_without_a_version_header_is_served_as_2025_03_26(acme):
    """The spec's assumption for clients that send no header: no structuredContent (2025-06-18)
    but tool annotations (2025-03-26)."""
    tools = post(rpc("tools/list"), acme.key).json()["result"]["tools"]
    assert all("annotations" in tool for tool in tools)
    call = rpc("tools/call", {"name": "memory_create", "arguments": {"content": "no header"}})
    result = post(call, acme.key).json()["result"]
    assert result["isError"] is False
    assert "structuredContent" not in result


def test_2024_11_05_gets_tools_without_annotations(alice):
    alice.version = "2024-11-05"
    tools = alice.result("tools/list")["tools"]
    assert tools and all("annotations" not in tool for tool in tools)


def test_structured_content_holds_the_same_json_as_the_text_item(alice):
    result = alice.call_result("memory_create", {"content": "structured"})
    assert result["structuredContent"] == json.loads(result["content"][0]["text"])
    result = alice.call_result("memory_list", {})
    listed = json.loads(result["content"][0]["text"])
    assert result["structuredContent"] == {"memories": listed}


def test_2025_03_26_answers_a_batch_with_one_reply_per_request(acme):
    batch = [
        rpc("ping", request_id="a"),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        rpc("tools/call", {"name": "memory_create", "arguments": {"content": "in a batch"}}, 2),
        rpc("no/such/method", request_id=3),
    ]
    response = post(batch, acme.key, **{"MCP-Protocol-Version": "2025-03-26"})
    assert response.status_code == 200
    replies = {reply["id"]: reply for reply in response.json()}
    assert set(replies) == {"a", 2, 3}
    assert replies["a"]["result"] == {}
    assert replies[2]["result"]["isError"] is False
    assert replies[3]["error"]["code"] == -32601


def test_a_batch_of_notifications_only_is_accepted_with_202(acme):
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"}]
    assert post(batch, acme.key, **{"MCP-Protocol-Version": "2025-03-26"}).status_code == 202


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", "2024-11-05"])
def test_batches_are_refused_in_versions_without_them(acme, version):
    response = post([rpc("ping")], acme.key, **{"MCP-Protocol-Version": version})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_initialize_cannot_be_part_of_a_batch(acme):
    batch = [rpc("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}})]
    reply = post(batch, acme.key, **{"MCP-Protocol-Version": "2025-03-26"}).json()[0]
    assert reply["error"]["code"] == -32600


@pytest.mark.parametrize("batch", [[], [rpc("ping", request_id=n) for n in range(101)]])
def test_an_empty_or_oversized_batch_is_an_invalid_request(acme, batch):
    response = post(batch, acme.key, **{"MCP-Protocol-Version": "2025-03-26"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_the_engram_oss_path_serves_the_same_endpoint(acme):
    client = Mcp(acme.key, path="/mcp")
    assert {tool["name"] for tool in client.result("tools/list")["tools"]} == set(TOOLS)


# --- 2026-07-28 era ------------------------------------------------------------------------------


@pytest.fixture
def modern(acme) -> Mcp:
    return Mcp(acme.key, MODERN)


def test_discover_names_every_supported_version_and_the_capabilities(modern):
    result = modern.result("server/discover")
    assert result["supportedVersions"] == [*HANDSHAKE_VERSIONS, MODERN]
    assert set(result["capabilities"]) == {"tools", "resources"}
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "engram-cloud"


def test_modern_results_say_their_type_and_how_long_they_may_be_cached(modern):
    listed = modern.result("tools/list")
    assert (listed["resultType"], listed["cacheScope"]) == ("complete", "private")
    assert listed["ttlMs"] > 0
    read = modern.result("resources/read", {"uri": "engram://stats"})
    assert (read["ttlMs"], read["cacheScope"]) == (0, "private")
    called = modern.call_result("memory_create", {"content": "modern"})
    assert called["resultType"] == "complete"
    assert "ttlMs" not in called


@pytest.mark.parametrize(
    "method", ["initialize", "ping", "notifications/nothing", "logging/setLevel"]
)
def test_handshake_only_methods_do_not_exist_in_the_modern_era(modern, method):
    status, error = modern.error(method)
    assert (status, error["code"]) == (404, -32601)


def test_a_modern_request_without_its_meta_envelope_is_invalid_params(acme):
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
    response = post(rpc("tools/list", {}), acme.key, **headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32602


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Mcp-Method": "tools/list"}, {"name": "memory_stats"}),
        ({"Mcp-Method": ""}, {"name": "memory_stats"}),
        ({"Mcp-Name": "memory_create"}, {"name": "memory_stats"}),
        ({"Mcp-Name": ""}, {"name": "memory_stats"}),
        ({"MCP-Protocol-Version": "2025-11-25"}, {"name": "memory_stats"}),
    ],
)
def test_routing_headers_that_disagree_with_the_body_are_refused(modern, headers, params):
    """An intermediary routes on Mcp-Method / Mcp-Name: the body must say the same."""
    response = modern.send("tools/call", params, **headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32020
    assert response.json()["id"] == 1


def test_the_resource_uri_is_checked_against_mcp_name(modern):
    response = modern.send("resources/read", {"uri": "engram://stats"}, **{"Mcp-Name": "x"})
    assert response.json()["error"]["code"] == -32020


def test_a_modern_body_without_any_header_is_a_header_mismatch(acme):
    params = {"_meta": {PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {}}}
    response = post(rpc("tools/list", params), acme.key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32020


def test_a_modern_version_this_server_does_not_serve_is_named_with_the_supported_ones(acme):
    params = {"_meta": {PROTOCOL_VERSION: "2099-01-01", CLIENT_CAPABILITIES: {}}}
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
    response = post(rpc("tools/list", params), acme.key, **headers)
    assert response.json()["error"]["code"] == -32020
    headers["MCP-Protocol-Version"] = "2099-01-01"
    response = post(rpc("tools/list", params), acme.key, **headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32022
    assert MODERN in response.json()["error"]["data"]["supported"]


def test_mcp_name_may_be_sent_base64_wrapped(modern):
    response = modern.send(
        "tools/call", {"name": "memory_stats"}, **{"Mcp-Name": "=?base64?bWVtb3J5X3N0YXRz?="}
    )
    assert response.status_code == 200
    assert response.json()["result"]["isError"] is False


def test_a_modern_notification_is_accepted_with_202(acme):
    params = {"_meta": {PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {}}}
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "notifications/cancelled"}
    message = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
    assert post(message, acme.key, **headers).status_code == 202


def test_the_modern_era_has_no_batches(acme):
    response = post([rpc("tools/list")], acme.key, **{"MCP-Protocol-Version": MODERN})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_unknown_methods_are_404_in_the_modern_era_and_200_in_the_handshake_era(alice, modern):
    assert modern.error("no/such")[0] == 404
    status, error = alice.error("no/such")
    assert (status, error["code"]) == (200, -32601)


# --- Transport -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "delete", "put"])
def test_methods_other_than_post_are_405_with_allow_post(acme, method):
    response = getattr(Client(), method)("/v1/mcp", headers={"Authorization": f"Bearer {acme.key}"})
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == -32600


def test_a_foreign_origin_is_refused_with_403(acme, alice):
    response = alice.send("tools/list", Origin="https://evil.example")
    assert response.status_code == 403
    assert "error" in response.json()


def test_the_endpoints_own_origin_is_allowed(alice):
    assert alice.send("tools/list", Origin="http://testserver").status_code == 200


def test_origins_allowed_by_setting_are_allowed(alice, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    settings.ENGRAM_MCP_ALLOWED_ORIGINS = "https://ide.example, https://other.example"
    for origin in ("https://app.example", "https://ide.example", "https://other.example"):
        assert alice.send("tools/list", Origin=origin).status_code == 200
    assert alice.send("tools/list", Origin="https://evil.example").status_code == 403


def test_a_client_accepting_only_event_streams_gets_one_sse_event(alice):
    response = alice.send("ping", Accept="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    event = response.content.decode()
    assert event.startswith("event: message\ndata: ") and event.endswith("\n\n")
    assert json.loads(event.split("data: ", 1)[1]) == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_a_client_accepting_both_gets_json(alice):
    response = alice.send("ping", Accept="application/json, text/event-stream")
    assert response["Content-Type"] == "application/json"


def test_a_client_accepting_neither_json_nor_event_streams_gets_406(alice):
    assert alice.send("ping", Accept="text/html").status_code == 406


def test_a_body_that_is_not_json_content_is_415(acme):
    response = post("ping", acme.key, content_type="text/plain")
    assert response.status_code == 415


@pytest.mark.parametrize("body", ["{not json", "", '{"jsonrpc": "2.0", "id": NaN}'])
def test_a_body_that_does_not_parse_is_a_parse_error(acme, body):
    response = post(body, acme.key)
    assert response.status_code == 400
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Parse error: the body is not JSON."},
    }


@pytest.mark.parametrize(
    "message",
    [
        json.dumps("just a string"),
        42,
        {"id": 1, "method": "ping"},
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
        {"jsonrpc": "2.0", "id": None, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
        {"jsonrpc": "2.0", "id": True, "method": "ping"},
    ],
)
def test_what_is_not_a_json_rpc_request_is_an_invalid_request(acme, message):
    response = post(message, acme.key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_params_that_are_not_an_object_are_invalid_params(alice, acme):
    response = post({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": [1]}, acme.key)
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32602, "message": "params must be an object."},
    }


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"name": 5},
        {"name": "memory_stats", "arguments": []},
        {"name": "memory_stats", "arguments": "x"},
    ],
)
def test_a_tool_call_without_a_name_or_with_non_object_arguments_is_invalid_params(alice, params):
    assert alice.error("tools/call", params)[1]["code"] == -32602


def test_an_unknown_tool_is_invalid_params_naming_it(alice):
    status, error = alice.error("tools/call", {"name": "memory_teleport", "arguments": {}})
    assert (status, error["code"]) == (200, -32602)
    assert "memory_teleport" in error["message"]


def test_an_unknown_tool_is_400_in_the_modern_era(modern):
    response = modern.send("tools/call", {"name": "memory_teleport"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32602


def test_a_cursor_this_server_never_gave_is_invalid_params(alice):
    assert alice.error("tools/list", {"cursor": "page-2"})[1]["code"] == -32602


def test_an_unexpected_failure_is_an_internal_error_that_reveals_nothing(alice, monkeypatch):
    def explode(arguments, tenant):
        raise RuntimeError("secret detail")

    monkeypatch.setitem(TOOLS, "memory_stats", replace(TOOLS["memory_stats"], handler=explode))
    response = alice.send("tools/call", {"name": "memory_stats", "arguments": {}})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == -32603
    assert "secret" not in json.dumps(error)
    # What a user quotes to support: the request id, in the body as in the header.
    assert error["data"] == {"error": "internal_error", "request_id": response["X-Request-Id"]}


# --- Credentials and tenants ---------------------------------------------------------------------


def test_no_credentials_is_unauthorized_with_a_bearer_challenge(db):
    response = post(rpc("tools/list"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == -32001
    assert body["error"]["data"]["error"] == "unauthorized"
    assert body["error"]["data"]["request_id"] == response["X-Request-Id"]


def test_an_unknown_key_is_unauthorized_on_the_engram_path_too(db):
    response = post(rpc("tools/list"), "ek_live_" + "x" * 40, path="/mcp")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == -32001


def test_a_revoked_key_is_unauthorized(acme):
    from tenants import services

    services.revoke_api_key(acme.api_key)
    response = post(rpc("tools/list"), acme.key)
    assert (response.status_code, response.json()["error"]["code"]) == (401, -32001)


def test_a_key_naming_another_tenant_is_refused(acme, globex):
    response = post(rpc("tools/list"), acme.key, **{"X-Engram-Tenant": "globex"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == -32001
    assert response.json()["error"]["data"]["error"] == "tenant_mismatch"


def test_a_key_sent_to_another_tenants_host_is_refused(acme, globex):
    response = post(rpc("tools/list"), acme.key, Host="globex.engram.test")
    assert response.status_code == 403


def test_a_tenant_that_does_not_exist_is_tenant_not_found(db, monkeypatch):
    """A credential not bound to a tenant (a member's JWT) naming an unknown tenant."""
    principal = Principal(scopes=frozenset(Scope), tenant=None, user_id=1)
    monkeypatch.setattr("tenants.middleware.authenticate", lambda request: principal)
    response = post(rpc("tools/list"), **{"X-Engram-Tenant": "nowhere"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == -32002


def test_a_suspended_tenant_is_refused(acme):
    acme.tenant.status = TenantStatus.SUSPENDED
    acme.tenant.save()
    response = post(rpc("tools/list"), acme.key)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == -32003


@pytest.mark.parametrize(
    ("error", "code", "header"),
    [
        (
            ApiError(402, "quota_exceeded", "Over quota.", metric="searches", current=5, limit=5),
            -32004,
            None,
        ),
        (
            ApiError(429, "rate_limited", "Slow down.", {"Retry-After": "3"}, retry_after=3),
            -32005,
            ("Retry-After", "3"),
        ),
    ],
)
def test_quota_and_rate_limit_refusals_reach_mcp_clients_as_engram_codes(
    acme, monkeypatch, error, code, header
):
    """Whichever stage of the pipeline refuses the request, an MCP client reads Engram's code
    and the REST error's details, with the same HTTP status."""

    def refuse(tenant):
        raise error

    monkeypatch.setattr("tenants.middleware.check_tenant_status", refuse)
    response = post(rpc("tools/list"), acme.key)
    assert response.status_code == error.status
    body = response.json()["error"]
    assert body["code"] == code
    assert body["message"] == error.message
    assert body["data"]["error"] == error.code
    assert {key: body["data"][key] for key in error.details} == error.details
    if header:
        assert response[header[0]] == header[1]


def test_a_tenant_whose_data_is_missing_is_unavailable(acme):
    tenant_database_path(acme.tenant.id).unlink()
    response = post(rpc("tools/list"), acme.key)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == -32603


def test_rest_errors_keep_the_rest_envelope(acme):
    response = Client().get("/v1/memories")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


# --- Scopes --------------------------------------------------------------------------------------

MUTATING_TOOLS = sorted(name for name, tool in TOOLS.items() if tool.scope == Scope.MEMORIES_WRITE)
READ_TOOLS = sorted(name for name, tool in TOOLS.items() if tool.scope == Scope.MEMORIES_READ)


def test_tool_hints_follow_engrams_table():
    assert MUTATING_TOOLS == [
        "memory_create",
        "memory_create_batch",
        "memory_delete",
        "memory_delete_batch",
        "memory_import",
        "memory_link",
        "memory_unlink",
        "memory_update",
    ]
    destructive = sorted(
        name for name, tool in TOOLS.items() if tool.annotations()["destructiveHint"]
    )
    assert destructive == ["memory_delete", "memory_delete_batch"]
    searching = sorted(name for name, tool in TOOLS.items() if tool.scope == Scope.SEARCH)
    assert searching == ["memory_search", "memory_search_compact"]
    assert len(TOOLS) == 20


def test_a_read_only_key_is_offered_only_what_it_may_call(acme):
    reader = Mcp(acme.issue_key(scopes=[Scope.MEMORIES_READ]))
    offered = {tool["name"] for tool in reader.result("tools/list")["tools"]}
    assert offered == set(READ_TOOLS)
    for tool in reader.result("tools/list")["tools"]:
        assert tool["annotations"]["readOnlyHint"] is True


@pytest.mark.parametrize("tool", MUTATING_TOOLS)
def test_a_read_only_key_cannot_call_a_mutating_tool(acme, tool):
    with bind_tenant_database(acme.tenant.id):
        before = Memory.objects.count()
    reader = Mcp(acme.issue_key(scopes=[Scope.MEMORIES_READ, Scope.SEARCH]))
    arguments = {"content": "x", "id": 1, "ids": [1], "from_id": 1, "to_id": 2}
    response = reader.send("tools/call", {"name": tool, "arguments": arguments})
    assert response.status_code == 403
    assert (
        response["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="memories:write"'
    )
    error = response.json()["error"]
    assert error["code"] == -32001
    assert error["data"]["required_scope"] == "memories:write"
    with bind_tenant_database(acme.tenant.id):
        assert Memory.objects.count() == before


@pytest.mark.parametrize("tool", ["memory_search", "memory_search_compact"])
def test_searching_needs_the_search_scope(acme, tool):
    reader = Mcp(acme.issue_key(scopes=[Scope.MEMORIES_READ]))
    response = reader.send("tools/call", {"name": tool, "arguments": {"query": "x"}})
    assert response.status_code == 403
    assert response.json()["error"]["data"]["required_scope"] == "search"


def test_a_search_only_key_cannot_read_memories_or_resources(acme):
    searcher = Mcp(acme.issue_key(scopes=[Scope.SEARCH]))
    assert searcher.call("memory_search", query="anything") == []
    status, error = searcher.error("tools/call", {"name": "memory_get", "arguments": {"id": 1}})
    assert (status, error["code"]) == (403, -32001)
    assert searcher.result("resources/list")["resources"] == []
    assert searcher.error("resources/read", {"uri": "engram://stats"})[0] == 403


def test_an_admin_key_may_call_everything(acme):
    admin = Mcp(acme.issue_key(scopes=[Scope.ADMIN]))
    assert {tool["name"] for tool in admin.result("tools/list")["tools"]} == set(TOOLS)


def test_a_batch_reports_a_missing_scope_on_its_own_reply(acme):
    reader = acme.issue_key(scopes=[Scope.MEMORIES_READ])
    batch = [
        rpc("tools/call", {"name": "memory_create", "arguments": {"content": "x"}}, 1),
        rpc("tools/call", {"name": "memory_stats", "arguments": {}}, 2),
    ]
    response = post(batch, reader, **{"MCP-Protocol-Version": "2025-03-26"})
    assert response.status_code == 200
    replies = {reply["id"]: reply for reply in response.json()}
    assert replies[1]["error"]["code"] == -32001
    assert replies[2]["result"]["isError"] is False


# --- Resources -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [HANDSHAKE, MODERN])
def test_resources_list_the_stats_and_template_the_memories(acme, version):
    client = Mcp(acme.key, version)
    assert [item["uri"] for item in client.result("resources/list")["resources"]] == [
        "engram://stats"
    ]
    templates = client.result("resources/templates/list")["resourceTemplates"]
    assert [item["uriTemplate"] for item in templates] == ["engram://memory/{id}"]


def test_reading_the_stats_resource_gives_the_tenants_counts(alice):
    alice.call("memory_create", content="one", workspace="work")
    contents = alice.result("resources/read", {"uri": "engram://stats"})["contents"]
    assert contents[0]["mimeType"] == "application/json"
    stats = json.loads(contents[0]["text"])
    assert stats["total_memories"] == 1
    assert stats["by_workspace"] == {"work": 1}


def test_reading_a_memory_resource_gives_the_memory(alice):
    created = alice.call("memory_create", content="as a resource")
    uri = f"engram://memory/{created['id']}"
    contents = alice.result("resources/read", {"uri": uri})["contents"]
    assert contents[0]["uri"] == uri
    assert json.loads(contents[0]["text"])["content"] == "as a resource"


@pytest.mark.parametrize(
    "uri",
    [
        "engram://memory/999",
        "engram://memory/0",
        "engram://memory/abc",
        "engram://memory/99999999999999999999",
        "engram://stats/extra",
        "https://example.com",
    ],
)
def test_reading_a_resource_that_does_not_exist_is_invalid_params(alice, uri):
    status, error = alice.error("resources/read", {"uri": uri})
    assert (status, error["code"]) == (200, -32602)


def test_reading_a_resource_without_a_uri_is_invalid_params(alice):
    assert alice.error("resources/read", {})[1]["code"] == -32602


# --- Observability -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"name": "memory_teleport"}, "invalid_params"),
        ({"name": "memory_create", "arguments": {"content": "x"}}, None),
        ({"name": "memory_get", "arguments": {"id": 99}}, None),
    ],
)
def test_the_request_log_names_the_error_an_mcp_request_ended_with(alice, params, name):
    """A tool's own failure (isError) is a successful request; protocol errors are named."""
    response = alice.send("tools/call", params)
    assert getattr(response.wsgi_request, "error_code", None) == name


def test_the_request_log_names_pipeline_and_transport_refusals(acme):
    assert post(rpc("ping")).wsgi_request.error_code == "unauthorized"
    assert post("{", acme.key).wsgi_request.error_code == "parse_error"
    reader = acme.issue_key(scopes=[Scope.MEMORIES_READ])
    call = rpc("tools/call", {"name": "memory_delete", "arguments": {"id": 1}})
    assert post(call, reader).wsgi_request.error_code == "forbidden"
