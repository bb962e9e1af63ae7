"""Engram's 20 tools over POST /v1/mcp: what each does, and that wrong arguments get a readable
`isError` result (never a 500)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import jsonschema
import pytest
from django.utils import timezone

from billing import usage
from billing.models import Plan, UsageEvent
from billing.plans import plans
from mcp import schema, tools
from mcp.protocol import TOOLS
from memories.access import access_counter
from memories.models import Memory, MemoryLink
from memories.tenant_db import bind_tenant_database
from tests.test_mcp_protocol import MODERN, Mcp, post, rpc


@pytest.fixture(autouse=True)
def fresh_plans_and_usage():
    """Plans are cached per process and usage buffered: neither may carry over between tests."""
    plans.clear()
    usage.local_buffer.remove(len(usage.local_buffer))
    yield
    plans.clear()
    usage.local_buffer.remove(len(usage.local_buffer))


@pytest.fixture
def alice(acme) -> Mcp:
    return Mcp(acme.key)


def create(client: Mcp, content: str, **fields) -> int:
    return client.call("memory_create", content=content, **fields)["id"]


def in_tenant(fixture, function):
    with bind_tenant_database(fixture.tenant.id):
        return function()


# --- Every tool: valid and wrong arguments -------------------------------------------------------

# Arguments each tool accepts, run against a tenant holding memories 1, 2 and 3.
VALID = {
    "memory_create": [
        {"content": "a note"},
        {
            "content": "everything",
            "memory_type": "decision",
            "tags": ["a", "b"],
            "metadata": {"k": 1},
            "importance": 0.9,
            "workspace": "work",
            "tier": "daily",
            "ttl_seconds": 3600,
            "defer_embedding": True,
            "dedup_mode": "allow",
            "event_time": "2026-01-02T03:04:05Z",
            "event_duration_seconds": 60,
            "trigger_pattern": "on deploy",
            "summary_of_id": 1,
            "media_url": "https://example.com/a.png",
        },
    ],
    "memory_get": [{"id": 1}, {"id": 1, "strip_private": True}],
    "memory_update": [{"id": 1, "content": "changed"}, {"id": 2, "event_time": None}],
    "memory_delete": [{"id": 3}],
    "memory_list": [
        {},
        {
            "limit": 5,
            "offset": 1,
            "tags": ["seed"],
            "type": "note",
            "workspaces": ["default"],
            "tier": "permanent",
            "sort_by": "importance",
            "sort_order": "asc",
            "filter": {"AND": [{"workspace": {"eq": "default"}}]},
            "metadata_filter": {"n": 1},
        },
    ],
    "memory_search": [
        {"query": "seed"},
        {
            "query": "seed memory",
            "limit": 3,
            "min_score": 0,
            "strategy": "keyword_only",
            "explain": True,
            "rerank": False,
            "rerank_strategy": "none",
            "include_transcripts": True,
            "tags": ["seed"],
            "filter": {"metadata.n": 1},
        },
    ],
    "memory_search_compact": [{"query": "seed", "limit": 2, "workspace": "default"}],
    "memory_expand": [{"ids": [1, 2, 999]}],
    "memory_stats": [{}],
    "memory_tags": [{}],
    "memory_create_batch": [{"memories": [{"content": "one"}, {"content": "two", "tags": ["t"]}]}],
    "memory_delete_batch": [{"ids": [2, 999]}],
    "memory_link": [
        {"from_id": 1, "to_id": 2},
        {"from_id": 1, "to_id": 2, "edge_type": "blocks", "strength": 0.5, "pinned": True},
    ],
    "memory_unlink": [{"from_id": 1, "to_id": 3, "edge_type": "references"}],
    "memory_related": [{"id": 1}, {"id": 1, "depth": 3, "edge_type": "references"}],
    "memory_versions": [{"id": 1}],
    "workspace_list": [{}],
    "recent_activity": [{}, {"workspace": "default", "timeframe": "7d", "include_types": ["note"]}],
    "memory_export": [{}, {"workspace": "default", "include_embeddings": False}],
    "memory_import": [
        {"data": {"version": "1.0", "memories": [{"content": "imported"}]}},
        {"data": {"version": "1.0", "memories": []}, "skip_duplicates": False},
    ],
}

# Arguments each tool refuses: each gets `isError: true` with a message naming the problem.
WRONG = {
    "memory_create": [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": "x", "importance": 2},
        {"content": "x", "memory_type": "poem"},
        {"content": "x", "tags": "a"},
        {"content": "x", "tags": [""]},
        {"content": "x", "nope": 1},
        {"content": "x", "workspace": "Bad Space"},
        {"content": "x", "type": "todo", "memory_type": "note"},
        {"content": "x", "ttl_seconds": 60, "tier": "permanent"},
        {"content": "x", "event_time": "yesterday"},
        {"content": "x", "metadata": "not an object"},
        {"content": "x", "dedup_mode": "sometimes"},
    ],
    "memory_get": [{}, {"id": "1"}, {"id": 0}, {"id": 1.5}, {"id": True}, {"id": 999}],
    "memory_update": [
        {"content": "x"},
        {"id": 1},
        {"id": 1, "content": ""},
        {"id": 1, "workspace": "w"},
        {"id": 999, "content": "x"},
        {"id": 999, "media_url": "x"},
    ],
    "memory_delete": [{}, {"id": -1}, {"id": 999}],
    "memory_list": [
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
        {"offset": 2**63},
        {"sort_by": "content"},
        {"sort_order": "up"},
        {"filter": {"content": "x"}},
        {"filter": {"OR": []}},
        {"filter": {"type": {"gt": "a"}}},
        {"filter": {"type": "poem"}},
        {"filter": {"workspace": "a"}, "workspace": "b"},
        {"metadata_filter": {"k": [1]}},
        {"workspaces": ["Bad"]},
    ],
    "memory_search": [
        {},
        {"query": ""},
        {"query": " "},
        {"query": "x", "limit": 0},
        {"query": "x", "strategy": "magic"},
        {"query": "x", "min_score": 2},
        {"query": "x" * 1001},
    ],
    "memory_search_compact": [{}, {"query": "x", "limit": 1000}, {"query": "x", "strategy": "x"}],
    "memory_expand": [{}, {"ids": []}, {"ids": ["a"]}, {"ids": list(range(1, 102))}],
    "memory_stats": [{"verbose": True}],
    "memory_tags": [{"x": 1}],
    "memory_create_batch": [
        {},
        {"memories": []},
        {"memories": "x"},
        {"memories": [{"content": "ok"}, {"content": ""}]},
        {"memories": [{"content": "ok", "dedup_mode": "skip"}]},
    ],
    "memory_delete_batch": [{}, {"ids": [0]}, {"ids": 5}],
    "memory_link": [
        {"from_id": 1},
        {"from_id": 1, "to_id": 1},
        {"from_id": 1, "to_id": 999},
        {"from_id": 1, "to_id": 2, "edge_type": "loves"},
        {"from_id": 1, "to_id": 2, "strength": 5},
    ],
    "memory_unlink": [
        {"to_id": 1},
        {"from_id": 1, "to_id": 2, "edge_type": "x"},
        {"from_id": 2, "to_id": 1},
    ],
    "memory_related": [{}, {"id": 1, "depth": 0}, {"id": 1, "depth": 9}, {"id": 999}],
    "memory_versions": [{}, {"id": "one"}, {"id": 999}],
    "workspace_list": [{"all": True}],
    "recent_activity": [{"timeframe": "1y"}, {"include_types": ["poem"]}, {"limit": -5}],
    "memory_export": [{"workspace": "Not Valid"}, {"include_embeddings": "yes"}],
    "memory_import": [
        {},
        {"data": []},
        {"data": {"version": "9.9", "memories": []}},
        {"data": {"version": "1.0", "memories": "x"}},
        {"data": {"memories": []}},
    ],
}

# Whatever an agent sends, the answer is never a 500.
JUNK = [
    None,
    {"id": "x"},
    {"id": 10**30},
    {"id": None},
    {"ids": [[1]]},
    {"query": {"$ne": 1}},
    {"content": {"a": 1}},
    {"content": "x" * 100_001},
    {"memories": [1, None]},
    {"data": {"version": "1.0", "memories": [1, "x", None, {"content": 5}]}},
    {"filter": {"AND": [{"AND": [{"AND": [{"AND": [{"AND": [{"AND": [{}]}]}]}]}]}]}},
    {"filter": {"tags": [1, 2]}},
    {"metadata_filter": {"": None}},
    {"workspace": "\u0000"},
    {"from_id": 1, "to_id": 2, "source_context": "\ud800"},
]


@pytest.fixture
def seeded(acme, alice):
    """Memories 1-3 in acme, 1 -references-> 3, and memory 1 updated once."""
    for number in (1, 2, 3):
        create(alice, f"seed memory {number}", tags=["seed"], metadata={"n": number})
    alice.call("memory_link", from_id=1, to_id=3, edge_type="references")
    alice.call("memory_update", id=1, importance=0.8)
    return alice


def test_every_tool_has_valid_and_wrong_examples():
    assert set(VALID) == set(TOOLS)
    assert set(WRONG) == set(TOOLS)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_schema_is_valid_json_schema_and_judges_like_the_tool(tool):
    """The published inputSchema and the server's validator agree on every example."""
    input_schema = TOOLS[tool].input_schema
    jsonschema.Draft202012Validator.check_schema(input_schema)
    validator = jsonschema.Draft202012Validator(input_schema)
    for arguments in [*VALID[tool], *WRONG[tool], *(junk for junk in JUNK if junk is not None)]:
        try:
            schema.validate(input_schema, arguments)
            ours = True
        except schema.SchemaError:
            ours = False
        assert validator.is_valid(arguments) == ours, (tool, arguments)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [(tool, arguments) for tool in sorted(VALID) for arguments in VALID[tool]],
)
def test_every_tool_succeeds_with_arguments_it_accepts(seeded, tool, arguments):
    seeded.call(tool, **arguments)


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", MODERN])
@pytest.mark.parametrize("tool", sorted(VALID))
def test_every_tool_answers_in_every_protocol_version(acme, seeded, tool, version):
    Mcp(acme.key, version).call(tool, **VALID[tool][0])


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [(tool, arguments) for tool in sorted(WRONG) for arguments in WRONG[tool]],
)
def test_every_tool_refuses_wrong_arguments_with_a_readable_error(seeded, tool, arguments):
    message = seeded.fails(tool, arguments)
    assert message and "Traceback" not in message


@pytest.mark.parametrize("arguments", JUNK)
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_no_arguments_make_a_tool_fail_with_a_server_error(seeded, tool, arguments):
    params = {"name": tool} if arguments is None else {"name": tool, "arguments": arguments}
    response = seeded.send("tools/call", params)
    assert response.status_code == 200, response.content
    assert "result" in response.json()


def test_wrong_arguments_name_every_problem(alice):
    message = alice.fails("memory_create", {"importance": "high", "tags": [1], "extra": True})
    assert "content: is required" in message
    assert "importance: must be number" in message
    assert "tags[0]: must be string" in message
    assert "extra: is not an argument of this tool" in message


# --- memory_create -------------------------------------------------------------------------------


def test_memory_create_stores_what_the_rest_api_reads(alice, alice_api):
    created = alice.call(
        "memory_create",
        content="Prefer tabs",
        memory_type="preference",
        tags=["style"],
        importance=0.7,
        workspace="editor",
    )
    stored = alice_api.get(f"/v1/memories/{created['id']}").json()
    assert stored["content"] == "Prefer tabs"
    assert (stored["type"], stored["tags"], stored["workspace"]) == (
        "preference",
        ["style"],
        "editor",
    )
    assert stored["importance"] == 0.7


def test_memory_create_keeps_engrams_extra_fields_in_metadata(alice):
    created = alice.call(
        "memory_create",
        content="Standup",
        metadata={"team": "core"},
        event_time="2026-03-01T09:00:00+01:00",
        event_duration_seconds=900,
        trigger_pattern="daily 9am",
        media_url="https://example.com/standup.mp3",
    )
    assert created["metadata"] == {
        "team": "core",
        "event_time": "2026-03-01T08:00:00Z",
        "event_duration_seconds": 900,
        "trigger_pattern": "daily 9am",
        "media_url": "https://example.com/standup.mp3",
    }


def test_a_daily_memory_expires_after_its_ttl(alice):
    created = alice.call("memory_create", content="today only", ttl_seconds=60)
    assert created["tier"] == "daily"
    expires = dt.datetime.fromisoformat(created["expires_at"])
    assert dt.timedelta(seconds=50) < expires - timezone.now() <= dt.timedelta(seconds=60)


def test_dedup_reject_refuses_content_the_workspace_already_holds(alice):
    first = create(alice, "Use UTC everywhere")
    message = alice.fails(
        "memory_create", {"content": "Use UTC everywhere", "dedup_mode": "reject"}
    )
    assert f"Memory {first}" in message
    elsewhere = alice.call(
        "memory_create", content="Use UTC everywhere", dedup_mode="reject", workspace="other"
    )
    assert elsewhere["id"] != first


def test_dedup_skip_answers_the_existing_memory_without_storing_another(acme, alice):
    first = create(alice, "Use UTC everywhere")
    again = alice.call("memory_create", content="Use UTC everywhere", dedup_mode="skip")
    assert again["id"] == first
    assert in_tenant(acme, Memory.objects.count) == 1


def test_dedup_merge_adds_tags_and_metadata_to_the_existing_memory(alice):
    first = create(alice, "Use UTC", tags=["time"], metadata={"a": 1}, importance=0.3)
    merged = alice.call(
        "memory_create",
        content="Use UTC",
        dedup_mode="merge",
        tags=["ops"],
        metadata={"b": 2},
        importance=0.9,
    )
    assert merged["id"] == first
    assert merged["tags"] == ["time", "ops"]
    assert merged["metadata"] == {"a": 1, "b": 2}
    assert merged["importance"] == 0.9
    assert merged["version"] == 2


def test_dedup_threshold_catches_content_that_means_the_same(alice):
    first = create(alice, "Deploy the billing service with the blue-green script")
    again = alice.call(
        "memory_create",
        content="deploy the billing service with the blue green script!",
        dedup_mode="skip",
        dedup_threshold=0.8,
    )
    assert again["id"] == first
    unrelated = alice.call(
        "memory_create",
        content="Alice prefers dark roast coffee",
        dedup_mode="skip",
        dedup_threshold=0.8,
    )
    assert unrelated["id"] != first


# --- memory_get, memory_update, memory_delete ----------------------------------------------------


def test_memory_get_counts_the_read(alice):
    memory_id = create(alice, "read me")
    alice.call("memory_get", id=memory_id)
    assert alice.call("memory_get", id=memory_id)["access_count"] == 2


def test_memory_get_can_strip_private_spans(alice):
    memory_id = create(alice, "Login: admin <private>hunter2</private> on staging")
    assert "hunter2" in alice.call("memory_get", id=memory_id)["content"]
    stripped = alice.call("memory_get", id=memory_id, strip_private=True)["content"]
    assert stripped == "Login: admin  on staging"


def test_memory_update_changes_only_what_is_given_and_keeps_the_previous_version(alice):
    memory_id = create(alice, "v1", tags=["a"], metadata={"keep": True})
    updated = alice.call("memory_update", id=memory_id, content="v2")
    assert (updated["content"], updated["tags"], updated["version"]) == ("v2", ["a"], 2)
    versions = alice.call("memory_versions", id=memory_id)
    assert versions["current_version"] == 2
    assert [(v["version"], v["content"]) for v in versions["versions"]] == [(1, "v1")]


def test_memory_update_sets_and_removes_engrams_extra_fields_in_metadata(alice):
    memory_id = create(alice, "meeting", metadata={"room": "A"}, media_url="https://x.example/1")
    updated = alice.call("memory_update", id=memory_id, trigger_pattern="weekly", media_url=None)
    assert updated["metadata"] == {"room": "A", "trigger_pattern": "weekly"}


def test_memory_update_of_a_missing_memory_says_so(alice):
    assert alice.fails("memory_update", {"id": 42, "content": "x"}) == "Memory 42 not found."


def test_memory_delete_removes_the_memory_its_links_and_its_versions(acme, alice, alice_api):
    keep, gone = create(alice, "keep"), create(alice, "gone")
    alice.call("memory_link", from_id=keep, to_id=gone)
    alice.call("memory_link", from_id=gone, to_id=keep, edge_type="supersedes")
    alice.call("memory_update", id=gone, content="gone for good")
    assert alice.call("memory_delete", id=gone) == {"deleted": gone}
    assert alice_api.get(f"/v1/memories/{gone}").status_code == 404
    assert alice.call("memory_related", id=keep)["related"] == []
    assert in_tenant(acme, MemoryLink.objects.count) == 0
    assert alice.fails("memory_delete", {"id": gone}) == f"Memory {gone} not found."


# --- memory_list ---------------------------------------------------------------------------------


def test_memory_list_is_newest_first_and_pages_by_offset(alice):
    ids = [create(alice, f"memory {n}") for n in range(5)]
    listed = [m["id"] for m in alice.call("memory_list", limit=2, offset=1)]
    assert listed == [ids[3], ids[2]]
    oldest_first = [m["id"] for m in alice.call("memory_list", sort_order="asc")]
    assert oldest_first == ids


def test_memory_list_filters_by_workspaces_tags_type_and_metadata(alice):
    a = create(alice, "a", workspace="one", tags=["x"], metadata={"env": "prod"})
    b = create(alice, "b", workspace="two", tags=["x", "y"], memory_type="todo")
    create(alice, "c", workspace="three", tags=["y"])

    def listed(**arguments):
        return sorted(memory["id"] for memory in alice.call("memory_list", **arguments))

    assert listed(workspaces=["one", "two"]) == [a, b]
    assert listed(tags=["x", "y"]) == [b]
    assert listed(type="todo") == [b]
    assert listed(metadata_filter={"env": "prod"}) == [a]
    assert listed(filter={"AND": [{"tags": "x"}, {"metadata.env": {"eq": "prod"}}]}) == [a]


def test_memory_list_filters_on_metadata_keys_of_digits(alice):
    wanted = create(alice, "a", metadata={"2024": "q1", "-1": "minus"})
    create(alice, "b", metadata={"2024": "q2"})

    def listed(**arguments):
        return [memory["id"] for memory in alice.call("memory_list", **arguments)]

    assert listed(metadata_filter={"2024": "q1"}) == [wanted]
    assert listed(filter={"metadata.-1": "minus"}) == [wanted]


def test_memory_list_sorts_never_accessed_memories_last(acme, alice):
    read, unread = create(alice, "read"), create(alice, "unread")
    alice.call("memory_get", id=read)
    in_tenant(acme, access_counter.flush)
    for order in ("asc", "desc"):
        listed = alice.call("memory_list", sort_by="last_accessed_at", sort_order=order)
        assert [m["id"] for m in listed] == [read, unread]


def test_an_unsupported_filter_says_what_is_supported(alice):
    message = alice.fails("memory_list", {"filter": {"OR": [{"type": "note"}]}})
    assert "workspace, type, tier, tags or metadata.<key>" in message


# --- Search --------------------------------------------------------------------------------------

SEARCHABLE = [
    ("Kubernetes deployment uses the blue-green script", ["ops"]),
    ("Release process: deploy with the blue-green script", ["release"]),
    ("Alice prefers dark roast coffee in the morning", ["personal"]),
]


@pytest.fixture
def searchable(alice):
    return [create(alice, content, tags=tags) for content, tags in SEARCHABLE]


def test_memory_search_finds_what_post_v1_search_finds(alice, alice_api, searchable):
    for strategy in ("keyword", "semantic", "hybrid", "fuzzy"):
        rest = alice_api.post(
            "/v1/search", {"query": "blue green script", "strategy": strategy, "min_score": 0.1}
        ).json()
        results = alice.call("memory_search", query="blue green script", strategy=strategy)
        assert [r["memory"]["id"] for r in results] == [r["memory"]["id"] for r in rest["results"]]
        assert [r["score"] for r in results] == [r["score"] for r in rest["results"]]
        assert {r["match_info"]["strategy"] for r in results} <= {strategy}


def test_memory_search_answers_in_engrams_result_shape(alice, searchable):
    result = alice.call("memory_search", query="coffee", explain=True)[0]
    assert result["memory"]["id"] == searchable[2]
    assert set(result) == {"memory", "score", "match_info"}
    assert result["match_info"]["matched_terms"] == ["coffee"]
    assert "**coffee**" in result["match_info"]["highlights"][0]


def test_memory_search_leaves_transcripts_out_unless_asked(alice):
    note = create(alice, "the quarterly roadmap review")
    chunk = create(
        alice, "transcript: the quarterly roadmap review", memory_type="transcript_chunk"
    )

    def found(**arguments):
        return {
            r["memory"]["id"] for r in alice.call("memory_search", query="roadmap", **arguments)
        }

    assert found() == {note}
    assert found(include_transcripts=True) == {note, chunk}
    assert found(memory_type="transcript_chunk") == {chunk}


def test_memory_search_applies_the_default_minimum_score_of_engram(alice, searchable):
    results = alice.call("memory_search", query="coffee kubernetes", strategy="semantic")
    assert all(result["score"] >= 0.1 for result in results)


def test_memory_search_compact_answers_titles(alice, searchable):
    create(alice, "First line is the title\nand the rest is the body", tags=["t"])
    compact = alice.call("memory_search_compact", query="title body")
    assert compact["count"] == 1
    assert compact["results"][0]["title"] == "First line is the title"
    assert set(compact["results"][0]) == {"id", "title", "created_at", "tags"}


def test_memory_expand_answers_full_memories_in_the_order_asked(alice, searchable):
    expanded = alice.call("memory_expand", ids=[searchable[2], 999, searchable[0]])
    assert [m["id"] for m in expanded] == [searchable[2], searchable[0]]
    assert all(m["access_count"] == 1 for m in expanded)


# --- Stats, tags, workspaces, recent activity ----------------------------------------------------


def test_memory_stats_answers_what_get_v1_stats_answers(alice, alice_api, searchable):
    stats = alice.call("memory_stats")
    rest = alice_api.get("/v1/stats").json()
    assert {k: v for k, v in stats.items() if k != "storage_bytes"} == {
        k: v for k, v in rest.items() if k != "storage_bytes"
    }
    assert stats["total_memories"] == 3


def test_memory_tags_counts_each_tag_most_used_first(alice):
    create(alice, "a", tags=["x", "y"])
    create(alice, "b", tags=["y"])
    assert alice.call("memory_tags") == [{"tag": "y", "count": 2}, {"tag": "x", "count": 1}]


def test_workspace_list_counts_each_workspace(alice):
    create(alice, "a", workspace="one")
    create(alice, "b", workspace="one")
    create(alice, "c")
    listed = {w["workspace"]: w["memory_count"] for w in alice.call("workspace_list")}
    assert listed == {"default": 1, "one": 2}


def test_recent_activity_answers_what_changed_within_the_timeframe(acme, alice):
    old, new = create(alice, "old"), create(alice, "new", memory_type="todo")
    in_tenant(
        acme,
        lambda: Memory.objects.filter(pk=old).update(
            updated_at=timezone.now() - dt.timedelta(days=2)
        ),
    )
    day = alice.call("recent_activity")
    assert (day["timeframe"], [m["id"] for m in day["memories"]]) == ("24h", [new])
    week = alice.call("recent_activity", timeframe="7d")
    assert [m["id"] for m in week["memories"]] == [new, old]
    todos = alice.call("recent_activity", timeframe="7d", include_types=["todo"])
    assert [m["id"] for m in todos["memories"]] == [new]


# --- Batches -------------------------------------------------------------------------------------


def test_memory_create_batch_stores_every_memory(acme, alice):
    created = alice.call(
        "memory_create_batch", memories=[{"content": "one"}, {"content": "two", "type": "todo"}]
    )
    assert created["count"] == 2
    assert [m["content"] for m in created["created"]] == ["one", "two"]
    assert in_tenant(acme, Memory.objects.count) == 2


def test_memory_create_batch_stores_nothing_when_one_memory_is_invalid(acme, alice):
    message = alice.fails(
        "memory_create_batch",
        {"memories": [{"content": "fine"}, {"content": "x", "importance": 0.5, "tier": "nope"}]},
    )
    assert "memories[1].tier" in message
    assert in_tenant(acme, Memory.objects.count) == 0
    message = alice.fails(
        "memory_create_batch", {"memories": [{"content": "ok"}, {"content": " "}]}
    )
    assert message.startswith("Nothing was stored.")
    assert "memories[1].content" in message


def test_memory_delete_batch_deletes_what_exists_and_names_what_does_not(acme, alice):
    a, b = create(alice, "a"), create(alice, "b")
    assert alice.call("memory_delete_batch", ids=[a, 999, b]) == {
        "deleted": [a, b],
        "not_found": [999],
        "count": 2,
    }
    assert in_tenant(acme, Memory.objects.count) == 0


# --- Links and versions --------------------------------------------------------------------------


def test_memory_link_links_and_relinking_updates_the_link(alice):
    a, b = create(alice, "a"), create(alice, "b")
    link = alice.call("memory_link", from_id=a, to_id=b, edge_type="depends_on", strength=0.4)
    assert (link["from_id"], link["to_id"], link["edge_type"], link["strength"]) == (
        a,
        b,
        "depends_on",
        0.4,
    )
    again = alice.call("memory_link", from_id=a, to_id=b, edge_type="depends_on", pinned=True)
    assert again["id"] == link["id"]
    assert (again["strength"], again["pinned"]) == (0.4, True)


def test_a_memory_cannot_link_to_itself_or_to_a_missing_memory(alice):
    a = create(alice, "a")
    assert "itself" in alice.fails("memory_link", {"from_id": a, "to_id": a})
    assert alice.fails("memory_link", {"from_id": a, "to_id": 77}) == "Memory 77 not found."


def test_memory_related_follows_links_both_ways_up_to_the_depth(alice):
    a, b, c, d = (create(alice, name) for name in "abcd")
    alice.call("memory_link", from_id=a, to_id=b)
    alice.call("memory_link", from_id=c, to_id=b, edge_type="extends")
    alice.call("memory_link", from_id=c, to_id=d)

    def related(**arguments):
        answer = alice.call("memory_related", id=a, **arguments)
        return [(r["memory"]["id"], r["direction"], r["depth"]) for r in answer["related"]]

    assert related() == [(b, "outgoing", 1)]
    assert related(depth=2) == [(b, "outgoing", 1), (c, "incoming", 2)]
    assert related(depth=3) == [(b, "outgoing", 1), (c, "incoming", 2), (d, "outgoing", 3)]
    assert related(depth=3, edge_type="related_to") == [(b, "outgoing", 1)]


def test_memory_unlink_removes_only_the_named_link(alice):
    a, b = create(alice, "a"), create(alice, "b")
    alice.call("memory_link", from_id=a, to_id=b)
    alice.call("memory_link", from_id=a, to_id=b, edge_type="blocks")
    assert alice.call("memory_unlink", from_id=a, to_id=b)["unlinked"] is True
    remaining = alice.call("memory_related", id=a)["related"]
    assert [r["link"]["edge_type"] for r in remaining] == ["blocks"]
    assert "no related_to link" in alice.fails("memory_unlink", {"from_id": a, "to_id": b})


def test_memory_versions_lists_every_previous_version_oldest_first(alice):
    memory_id = create(alice, "first", tags=["a"])
    alice.call("memory_update", id=memory_id, content="second")
    alice.call("memory_update", id=memory_id, tags=["b"])
    versions = alice.call("memory_versions", id=memory_id)
    assert versions["current_version"] == 3
    assert [(v["version"], v["content"], v["tags"]) for v in versions["versions"]] == [
        (1, "first", ["a"]),
        (2, "second", ["a"]),
    ]


# --- Export and import ---------------------------------------------------------------------------


def test_memory_export_answers_the_export_file(alice):
    create(alice, "one", workspace="work")
    create(alice, "two")
    exported = alice.call("memory_export")
    assert (exported["version"], exported["memory_count"]) == ("1.0", 2)
    assert {m["content"] for m in exported["memories"]} == {"one", "two"}
    work = alice.call("memory_export", workspace="work")
    assert [m["content"] for m in work["memories"]] == ["one"]


def test_memory_export_refuses_more_than_a_tool_result_holds(alice, monkeypatch):
    monkeypatch.setattr(tools, "MAX_EXPORT_MEMORIES", 1)
    create(alice, "one")
    create(alice, "two")
    assert "GET /v1/export" in alice.fails("memory_export", {})


def test_an_export_imports_into_another_tenant(alice, globex):
    create(alice, "carried over", tags=["t"], workspace="w")
    exported = alice.call("memory_export")
    bob = Mcp(globex.key)
    result = bob.call("memory_import", data=exported)
    assert result == {"imported": 1, "skipped": 0, "failed": 0, "errors": []}
    assert [m["content"] for m in bob.call("memory_list")] == ["carried over"]
    assert bob.call("memory_import", data=exported)["skipped"] == 1


def test_memory_import_reports_bad_records_and_imports_the_rest(alice):
    data = {"version": "1.0", "memories": [{"content": "good"}, {"content": ""}]}
    result = alice.call("memory_import", data=data)
    assert (result["imported"], result["failed"]) == (1, 1)
    assert result["errors"][0]["index"] == 1


def test_an_import_over_the_plans_memory_limit_is_quota_exceeded(acme, alice):
    set_plan(max_memories=1)
    data = {"version": "1.0", "memories": [{"content": "a"}, {"content": "b"}]}
    response = post(
        rpc("tools/call", {"name": "memory_import", "arguments": {"data": data}}),
        acme.key,
        **{"MCP-Protocol-Version": "2025-11-25"},
    )
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == -32004
    assert (error["data"]["metric"], error["data"]["limit"]) == ("memories", 1)
    assert in_tenant(acme, Memory.objects.count) == 0


def test_at_the_storage_limit_updates_merges_and_imports_are_quota_exceeded(acme, alice):
    memory_id = create(alice, "kept")
    set_plan(max_storage_bytes=1)
    data = {"version": "1.0", "memories": [{"content": "imported"}]}
    for tool, arguments in [
        ("memory_update", {"id": memory_id, "tags": ["new"]}),
        ("memory_create", {"content": "kept", "tags": ["new"], "dedup_mode": "merge"}),
        ("memory_import", {"data": data}),
    ]:
        response = alice.send("tools/call", {"name": tool, "arguments": arguments})
        assert response.status_code == 402, (tool, response.content)
        error = response.json()["error"]
        assert (error["code"], error["data"]["metric"]) == (-32004, "storage_bytes")
    memory = alice.call("memory_get", id=memory_id)
    assert (memory["version"], memory["tags"]) == (1, [])
    assert in_tenant(acme, Memory.objects.count) == 1


def test_tool_results_are_engrams_json_text(alice):
    result = alice.call_result("memory_create", {"content": "json text"})
    assert [item["type"] for item in result["content"]] == ["text"]
    assert json.loads(result["content"][0]["text"])["content"] == "json text"


# --- Metering and quotas, as REST ----------------------------------------------------------------


def set_plan(code: str = "free", **limits: int | None) -> None:
    Plan.objects.filter(code=code).update(**limits)
    plans.clear()


def metered(client: Mcp, params: dict, version: str = "2025-11-25", **headers: str):
    """The usage event of one MCP request."""
    request_id = f"req-{uuid.uuid4()}"
    response = client.send("tools/call", params, **{"X-Request-Id": request_id}, **headers)
    assert response.status_code == 200, response.content
    usage.flush_usage()
    return UsageEvent.objects.get(request_id=request_id)


def test_a_memory_search_is_metered_as_a_search(alice):
    event = metered(alice, {"name": "memory_search", "arguments": {"query": "x"}})
    assert (event.route, event.api_calls, event.searches, event.memories_created) == (
        "mcp",
        1,
        1,
        0,
    )
    assert (
        metered(alice, {"name": "memory_search_compact", "arguments": {"query": "x"}}).searches == 1
    )
    assert metered(alice, {"name": "memory_list", "arguments": {}}).searches == 0


def test_created_memories_are_metered(alice):
    one = {"name": "memory_create", "arguments": {"content": "one"}}
    assert metered(alice, one).memories_created == 1
    skipped = {"name": "memory_create", "arguments": {"content": "one", "dedup_mode": "skip"}}
    assert metered(alice, skipped).memories_created == 0
    batch = {
        "name": "memory_create_batch",
        "arguments": {"memories": [{"content": "a"}, {"content": "b"}]},
    }
    assert metered(alice, batch).memories_created == 2
    data = {"version": "1.0", "memories": [{"content": "c"}, {"content": "a"}]}
    assert (
        metered(alice, {"name": "memory_import", "arguments": {"data": data}}).memories_created == 1
    )


def test_every_search_of_a_batch_is_metered(acme):
    batch = [
        rpc("tools/call", {"name": "memory_search", "arguments": {"query": "x"}}, n)
        for n in range(3)
    ]
    request_id = f"req-{uuid.uuid4()}"
    headers = {"MCP-Protocol-Version": "2025-03-26", "X-Request-Id": request_id}
    assert post(batch, acme.key, **headers).status_code == 200
    usage.flush_usage()
    assert UsageEvent.objects.get(request_id=request_id).searches == 3


def test_the_monthly_search_quota_stops_memory_search_but_not_reads(alice):
    set_plan(max_searches_per_month=1)
    alice.call("memory_search", query="x")
    response = alice.send("tools/call", {"name": "memory_search", "arguments": {"query": "x"}})
    assert response.status_code == 402
    error = response.json()["error"]
    assert (error["code"], error["data"]["metric"]) == (-32004, "searches_per_month")
    alice.call("memory_list")


def test_the_monthly_api_call_quota_stops_mcp_writes_but_not_reads(acme, alice):
    memory_id = create(alice, "kept")
    set_plan(max_api_calls_per_month=1)
    usage.flush_usage()
    response = alice.send(
        "tools/call", {"name": "memory_create", "arguments": {"content": "one too many"}}
    )
    assert response.status_code == 402
    error = response.json()["error"]
    assert (error["code"], error["data"]["metric"]) == (-32004, "api_calls_per_month")
    assert in_tenant(acme, Memory.objects.count) == 1
    # Reads, searches and the protocol itself still answer: the workspace can take its data out.
    assert alice.send("ping").status_code == 200
    assert alice.call_result("memory_get", {"id": memory_id})["isError"] is False
    assert alice.call_result("memory_list", {})["isError"] is False
    assert alice.call_result("memory_search", {"query": "kept"})["isError"] is False


def test_the_plans_memory_limit_holds_for_creates_and_batches(acme, alice):
    set_plan(max_memories=2)
    create(alice, "one")
    batch = {
        "name": "memory_create_batch",
        "arguments": {"memories": [{"content": "a"}, {"content": "b"}]},
    }
    response = alice.send("tools/call", batch)
    assert response.status_code == 402
    error = response.json()["error"]
    assert (error["code"], error["data"]["metric"], error["data"]["limit"]) == (
        -32004,
        "memories",
        2,
    )
    assert in_tenant(acme, Memory.objects.count) == 1
    create(alice, "two")
    response = alice.send(
        "tools/call", {"name": "memory_create", "arguments": {"content": "three"}}
    )
    assert response.json()["error"]["code"] == -32004


def test_the_rate_limit_answers_mcp_clients_with_engrams_code(alice):
    set_plan(requests_per_minute=1, burst=2)
    for _ in range(2):
        assert alice.send("ping").status_code == 200
    response = alice.send("ping")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == -32005
    assert int(response["Retry-After"]) >= 1
