"""An agent on globex can never reach acme's memories through the MCP endpoint.

Both tenants number their memories from 1, so the same ids exist on both sides: every tool is
called by globex's agent with acme's ids, names and words, and acme's data must come out
unread and unchanged.
"""

from __future__ import annotations

import json

import pytest

from memories.models import Memory, MemoryLink, MemoryVersion
from memories.tenant_db import bind_tenant_database
from tests.test_mcp_protocol import HANDSHAKE, MODERN, Mcp, post, rpc
from tests.test_mcp_tools import TOOLS

ACME_WORDS = "zebracorn secret"

# What an agent on globex sends to aim at acme's memories 1-3 and acme's link 2 -> 3.
AIMED_AT_ACME = {
    "memory_create": {"content": "bob was here", "dedup_mode": "merge", "dedup_threshold": 0.1},
    "memory_get": {"id": 2},
    "memory_update": {"id": 2, "content": "overwritten by bob"},
    "memory_delete": {"id": 3},
    "memory_list": {"limit": 100, "tags": ["acme"]},
    "memory_search": {"query": ACME_WORDS, "min_score": 0, "include_transcripts": True},
    "memory_search_compact": {"query": ACME_WORDS},
    "memory_expand": {"ids": [1, 2, 3]},
    "memory_stats": {},
    "memory_tags": {},
    "memory_create_batch": {"memories": [{"content": "bob batch"}]},
    "memory_delete_batch": {"ids": [1, 2, 3]},
    "memory_link": {"from_id": 2, "to_id": 3},
    "memory_unlink": {"from_id": 2, "to_id": 3},
    "memory_related": {"id": 2, "depth": 5},
    "memory_versions": {"id": 2},
    "workspace_list": {},
    "recent_activity": {"timeframe": "30d", "limit": 100},
    "memory_export": {},
    "memory_import": {"data": {"version": "1.0", "memories": [{"id": 2, "content": "bob's 2"}]}},
}


def snapshot(fixture):
    with bind_tenant_database(fixture.tenant.id):
        return (
            list(Memory.objects.order_by("pk").values()),
            list(MemoryLink.objects.order_by("pk").values()),
            list(MemoryVersion.objects.order_by("pk").values()),
        )


@pytest.fixture
def acme_memories(acme):
    alice = Mcp(acme.key)
    for number in (1, 2, 3):
        alice.call(
            "memory_create",
            content=f"{ACME_WORDS} number {number}",
            tags=["acme"],
            workspace="acme-only",
        )
    alice.call("memory_link", from_id=2, to_id=3)
    alice.call("memory_update", id=2, importance=0.9)
    return snapshot(acme)


@pytest.fixture
def bob(globex, acme_memories):
    client = Mcp(globex.key)
    assert client.call("memory_create", content="globex note", tags=["globex"])["id"] == 1
    return client


def test_every_tool_has_an_attack():
    assert set(AIMED_AT_ACME) == set(TOOLS)


@pytest.mark.parametrize("version", [HANDSHAKE, MODERN])
@pytest.mark.parametrize("tool", sorted(AIMED_AT_ACME))
def test_no_tool_reads_or_changes_another_tenants_memories(acme, globex, bob, tool, version):
    before = snapshot(acme)
    response = Mcp(globex.key, version).send(
        "tools/call", {"name": tool, "arguments": AIMED_AT_ACME[tool]}
    )
    assert response.status_code == 200
    assert "zebracorn" not in response.content.decode()
    assert "acme-only" not in response.content.decode()
    assert snapshot(acme) == before


def test_the_same_id_reads_the_callers_own_memory(bob):
    assert bob.call("memory_get", id=1)["content"] == "globex note"
    assert bob.fails("memory_get", {"id": 2}) == "Memory 2 not found."
    assert [m["id"] for m in bob.call("memory_expand", ids=[1, 2, 3])] == [1]
    assert bob.call("memory_stats")["total_memories"] == 1
    assert bob.call("memory_tags") == [{"tag": "globex", "count": 1}]


def test_resources_read_only_the_callers_tenant(bob):
    contents = bob.result("resources/read", {"uri": "engram://memory/1"})["contents"]
    assert json.loads(contents[0]["text"])["content"] == "globex note"
    assert bob.error("resources/read", {"uri": "engram://memory/2"})[1]["code"] == -32602
    stats = json.loads(
        bob.result("resources/read", {"uri": "engram://stats"})["contents"][0]["text"]
    )
    assert stats["total_memories"] == 1


@pytest.mark.parametrize("path", ["/v1/mcp", "/mcp"])
@pytest.mark.parametrize("headers", [{"X-Engram-Tenant": "acme"}, {"Host": "acme.engram.test"}])
def test_a_globex_key_cannot_name_acme(acme, globex, acme_memories, path, headers):
    call = rpc("tools/call", {"name": "memory_get", "arguments": {"id": 1}})
    response = post(call, globex.key, path, **headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == -32001
    assert "zebracorn" not in response.content.decode()
