"""The official MCP Python SDK (pinned in requirements-test.txt) against a live server, in both
protocol eras: connect, list tools, create, search, update, link, read a resource, delete.

The SDK's top-level package is called `mcp`, like this project's Django app, so within the test
process one would hide the other. The client therefore runs as its own process (`python -I`:
the project is not on its path), which is what a real agent is anyway; it prints what it saw
as JSON and the test judges that.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tenants.permissions import Scope
from tests.conftest import make_tenant

# A live server needs committed data. Each test starts from the migrated database (the plans
# are data), restored by serialized rollback since an earlier transactional test flushes it.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    url, key, mode = sys.argv[1:4]


    def payload(result):
        return {
            "is_error": result.is_error,
            "text": result.content[0].text,
            "structured": result.structured_content,
        }


    async def main():
        seen = {}
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=mode) as client:
                seen["protocol_version"] = client.protocol_version
                seen["server_name"] = client.server_info.name if client.server_info else None
                tools = (await client.list_tools()).tools
                seen["tools"] = {
                    tool.name: {
                        "read_only": tool.annotations.read_only_hint,
                        "destructive": tool.annotations.destructive_hint,
                        "required": tool.input_schema.get("required", []),
                    }
                    for tool in tools
                }
                first = await client.call_tool(
                    "memory_create",
                    {"content": "Deploys go out with the blue-green script", "tags": ["ops"]},
                )
                seen["create"] = payload(first)
                first_id = first.structured_content["id"]
                second = await client.call_tool(
                    "memory_create",
                    {"content": "Rollbacks use the same script", "memory_type": "procedural"},
                )
                second_id = second.structured_content["id"]
                seen["search"] = payload(
                    await client.call_tool("memory_search", {"query": "blue-green script"})
                )
                seen["update"] = payload(
                    await client.call_tool("memory_update", {"id": first_id, "importance": 0.9})
                )
                seen["link"] = payload(
                    await client.call_tool(
                        "memory_link",
                        {"from_id": second_id, "to_id": first_id, "edge_type": "depends_on"},
                    )
                )
                seen["related"] = payload(
                    await client.call_tool("memory_related", {"id": first_id})
                )
                resource = await client.read_resource(f"engram://memory/{first_id}")
                seen["resource"] = json.loads(resource.contents[0].text)
                seen["wrong"] = payload(await client.call_tool("memory_get", {"id": "one"}))
                seen["delete"] = payload(
                    await client.call_tool("memory_delete", {"id": first_id})
                )
                seen["after_delete"] = payload(
                    await client.call_tool("memory_related", {"id": second_id})
                )
                try:
                    await client.call_tool("memory_teleport", {})
                except MCPError as error:
                    seen["unknown_tool"] = error.error.code
        print(json.dumps(seen))


    asyncio.run(main())
    """
)

READ_ONLY_SCRIPT_TAIL = textwrap.dedent(
    """
    import asyncio, json, sys

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    url, key, mode = sys.argv[1:4]


    async def main():
        seen = {}
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                seen["tools"] = sorted(tool.name for tool in (await client.list_tools()).tools)
                try:
                    await client.call_tool("memory_create", {"content": "not allowed"})
                except MCPError as error:
                    seen["create"] = {"code": error.error.code, "message": error.error.message}
        print(json.dumps(seen))


    asyncio.run(main())
    """
)


def run_client(script: str, url: str, key: str, mode: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-I", "-c", script, url, key, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def result(seen: dict, step: str) -> dict:
    assert seen[step]["is_error"] is False, seen[step]
    return seen[step]["structured"]


# mode: "legacy" is the initialize handshake, "auto" probes server/discover and adopts the
# 2026-07-28 era when the server offers it, "2026-07-28" pins it.
@pytest.mark.parametrize(
    ("mode", "version"),
    [("legacy", "2025-11-25"), ("auto", "2026-07-28"), ("2026-07-28", "2026-07-28")],
)
@pytest.mark.parametrize("path", ["/v1/mcp", "/mcp"])
def test_the_official_sdk_client_uses_the_memory_tools(live_server, mode, version, path):
    acme = make_tenant("acme", "alice@example.com")
    seen = run_client(CLIENT_SCRIPT, live_server.url + path, acme.key, mode)

    assert seen["protocol_version"] == version
    assert len(seen["tools"]) == 20
    assert seen["tools"]["memory_get"] == {
        "read_only": True,
        "destructive": False,
        "required": ["id"],
    }
    assert seen["tools"]["memory_delete"]["destructive"] is True

    created = result(seen, "create")
    assert created["content"] == "Deploys go out with the blue-green script"
    assert json.loads(seen["create"]["text"]) == created
    hits = result(seen, "search")["results"]
    assert hits[0]["memory"]["id"] == created["id"]
    assert result(seen, "update")["version"] == 2
    assert result(seen, "link")["edge_type"] == "depends_on"
    related = result(seen, "related")["related"]
    assert [(item["direction"], item["link"]["edge_type"]) for item in related] == [
        ("incoming", "depends_on")
    ]
    assert seen["resource"]["importance"] == 0.9
    assert seen["wrong"]["is_error"] is True
    assert "id: must be integer" in seen["wrong"]["text"]
    assert result(seen, "delete") == {"deleted": created["id"]}
    assert result(seen, "after_delete")["related"] == []
    assert seen["unknown_tool"] == -32602


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_the_sdk_client_of_a_read_only_key_is_refused_writes(live_server, mode):
    acme = make_tenant("acme", "alice@example.com")
    key = acme.issue_key(scopes=[Scope.MEMORIES_READ])
    seen = run_client(READ_ONLY_SCRIPT_TAIL, live_server.url + "/v1/mcp", key, mode)
    assert "memory_create" not in seen["tools"]
    assert "memory_get" in seen["tools"]
    assert seen["create"]["code"] == -32001
    assert "memories:write" in seen["create"]["message"]
