"""Tenants never see each other's data: every /v1 endpoint, called with B's key, touches only B.

acme (A) and globex (B) both store memories, so their integer ids overlap (both have 1, 2, 3);
acme also has an id 4 that globex lacks. Both use the same tags, workspace and types, so any
filter that leaked across tenants would show it.
"""

from __future__ import annotations

import sqlite3

import pytest

from memories.models import Memory, MemoryTag, MemoryVersion
from memories.tenant_db import bind_tenant_database, tenant_database_path

ACME_MEMORIES = [
    {"content": "acme: the launch codes are in the blue binder", "tags": ["shared", "secret"]},
    {"content": "acme: renew the TLS certificate", "type": "todo", "tags": ["shared"]},
    {"content": "acme: we chose PostgreSQL", "type": "decision", "importance": 0.9},
    {"content": "acme: only acme has a fourth memory", "tier": "daily"},
]
GLOBEX_MEMORIES = [
    {"content": "globex: lunch is at noon", "tags": ["shared"]},
    {"content": "globex: fix the flaky test", "type": "todo", "tags": ["shared", "secret"]},
    {"content": "globex: we chose SQLite", "type": "decision", "importance": 0.1},
]
ACME_CONTENTS = {m["content"] for m in ACME_MEMORIES}
GLOBEX_CONTENTS = {m["content"] for m in GLOBEX_MEMORIES}


def create_all(api, memories):
    for memory in memories:
        response = api.post("/v1/memories", {"workspace": "team", **memory})
        assert response.status_code == 201, response.json()
    return api


@pytest.fixture
def a(acme):
    create_all(acme.client(), ACME_MEMORIES)
    return acme


@pytest.fixture
def b(globex, a):
    create_all(globex.client(), GLOBEX_MEMORIES)
    return globex


def listed(api, **params):
    response = api.get("/v1/memories", {"limit": 100, **params})
    assert response.status_code == 200, response.json()
    return response.json()["data"]


def state(tenant_fixture):
    """What the tenant sees through its own key, and every row of its own database file."""
    with bind_tenant_database(tenant_fixture.tenant.id):
        rows = (
            list(Memory.objects.order_by("pk").values()),
            list(MemoryTag.objects.order_by("pk").values()),
            list(MemoryVersion.objects.order_by("pk").values()),
        )
    return listed(tenant_fixture.client()), rows


def assert_only_globex(text):
    for content in ACME_CONTENTS:
        assert content not in text
    assert "acme" not in text


def test_ids_overlap_and_each_key_reads_its_own_memory(a, b):
    for memory_id, (acme_memory, globex_memory) in enumerate(
        zip(ACME_MEMORIES, GLOBEX_MEMORIES, strict=False), start=1
    ):
        assert (
            a.client().get(f"/v1/memories/{memory_id}").json()["content"]
            == (acme_memory["content"])
        )
        assert (
            b.client().get(f"/v1/memories/{memory_id}").json()["content"]
            == (globex_memory["content"])
        )


def test_an_outsider_never_sees_another_tenants_memory(a, b):
    for memory_id in range(1, len(ACME_MEMORIES) + 2):
        response = b.client().get(f"/v1/memories/{memory_id}")
        assert_only_globex(response.content.decode())
        if response.status_code == 200:
            assert response.json()["id"] == memory_id
            assert response.json()["content"] in GLOBEX_CONTENTS
        else:
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"


def test_reads_by_b_do_not_count_as_accesses_in_a(a, b):
    before = state(a)
    for memory_id in range(1, 5):
        b.client().get(f"/v1/memories/{memory_id}")
    assert state(a) == before


@pytest.mark.parametrize(
    "params, expected",
    [
        pytest.param({}, GLOBEX_CONTENTS, id="no filter"),
        pytest.param({"workspace": "team"}, GLOBEX_CONTENTS, id="workspace"),
        pytest.param({"tag": "shared"}, {m["content"] for m in GLOBEX_MEMORIES[:2]}, id="tag"),
        pytest.param({"tag": ["shared", "secret"]}, {GLOBEX_MEMORIES[1]["content"]}, id="two tags"),
        pytest.param({"type": "decision"}, {GLOBEX_MEMORIES[2]["content"]}, id="type"),
        pytest.param({"tier": "permanent"}, GLOBEX_CONTENTS, id="tier permanent"),
        pytest.param({"tier": "daily"}, set(), id="tier daily (only acme has one)"),
        pytest.param({"created_after": "2000-01-01T00:00:00Z"}, GLOBEX_CONTENTS, id="after"),
        pytest.param({"created_before": "2999-01-01T00:00:00Z"}, GLOBEX_CONTENTS, id="before"),
        pytest.param({"sort": "-importance"}, GLOBEX_CONTENTS, id="sort"),
        pytest.param({"sort": "access_count"}, GLOBEX_CONTENTS, id="sort by accesses"),
    ],
)
def test_list_with_b_key_returns_only_b_memories(a, b, params, expected):
    before = state(a)
    page = listed(b.client(), **params)
    assert {m["content"] for m in page} == expected
    assert len(page) == len(expected)
    assert_only_globex(str(page))
    assert state(a) == before


def test_paging_through_b_list_never_reaches_a(a, b):
    seen, cursor = [], None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        response = b.client().get("/v1/memories", params).json()
        seen += [m["content"] for m in response["data"]]
        cursor = response["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(GLOBEX_CONTENTS)


def test_a_cursor_from_a_list_only_pages_through_b_data_when_b_uses_it(a, b):
    cursor = a.client().get("/v1/memories", {"limit": 1, "sort": "created_at"}).json()
    page = b.client().get(
        "/v1/memories", {"limit": 100, "sort": "created_at", "cursor": cursor["next_cursor"]}
    )
    # A cursor carries a position, never a tenant: B either pages through its own data or is
    # told to start again, and never sees A's.
    assert_only_globex(page.content.decode())
    if page.status_code == 200:
        assert {m["content"] for m in page.json()["data"]} <= GLOBEX_CONTENTS
    else:
        assert (page.status_code, page.json()["error"]) == (400, "validation_error")


def test_stats_with_b_key_count_only_b(a, b):
    stats = b.client().get("/v1/stats").json()
    assert stats["total_memories"] == len(GLOBEX_MEMORIES)
    assert stats["by_type"] == {"decision": 1, "note": 1, "todo": 1}
    assert stats["by_workspace"] == {"team": 3}
    assert stats["by_tier"] == {"permanent": 3}
    assert stats["usage"]["memories"] == 3
    assert a.client().get("/v1/stats").json()["total_memories"] == len(ACME_MEMORIES)


def test_update_with_b_key_changes_only_b(a, b):
    before = state(a)
    response = b.client().patch("/v1/memories/1", {"content": "globex: lunch moved to one"})
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert state(a) == before
    assert b.client().get("/v1/memories/1").json()["content"] == "globex: lunch moved to one"
    assert a.client().get("/v1/memories/1").json()["content"] == ACME_MEMORIES[0]["content"]


def test_delete_with_b_key_deletes_only_b(a, b):
    before = state(a)
    assert b.client().delete("/v1/memories/2").status_code == 204
    assert b.client().get("/v1/memories/2").status_code == 404
    assert state(a) == before
    assert a.client().get("/v1/memories/2").json()["content"] == ACME_MEMORIES[1]["content"]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_an_id_only_a_has_is_404_for_b_and_left_alone(a, b, method):
    before = state(a)
    response = b.client().request(
        method, "/v1/memories/4", {"content": "x"} if method == "PATCH" else None
    )
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert state(a) == before


def test_create_with_b_key_lands_in_b_only(a, b):
    before = state(a)
    response = b.client().post("/v1/memories", {"content": "globex: a new one"})
    assert response.status_code == 201
    assert response.json()["id"] == len(GLOBEX_MEMORIES) + 1
    assert state(a) == before
    assert a.client().get("/v1/memories/4").json()["content"] == ACME_MEMORIES[3]["content"]
    assert "globex: a new one" in {m["content"] for m in listed(b.client())}


def test_alternating_requests_from_both_tenants_stay_apart(a, b):
    for _ in range(10):
        for tenant, memories in ((a, ACME_MEMORIES), (b, GLOBEX_MEMORIES)):
            assert (
                tenant.client().get("/v1/memories/1").json()["content"] == (memories[0]["content"])
            )


ENDPOINTS = [
    ("GET", "/v1/memories/1", None),
    ("PATCH", "/v1/memories/1", {"content": "overwritten"}),
    ("DELETE", "/v1/memories/1", None),
    ("GET", "/v1/memories", None),
    ("GET", "/v1/memories?tag=shared", None),
    ("GET", "/v1/stats", None),
    ("POST", "/v1/memories", {"content": "planted"}),
]


@pytest.mark.parametrize(
    "naming_a", [{"X-Engram-Tenant": "acme"}, {"Host": "acme.engram.test"}], ids=["header", "host"]
)
@pytest.mark.parametrize("method, path, body", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_b_key_naming_a_is_refused_on_every_endpoint(a, b, naming_a, method, path, body):
    before_a, before_b = state(a), state(b)
    response = b.client(**naming_a).request(method, path, body)
    assert response.status_code == 403
    assert response.json()["error"] == "tenant_mismatch"
    assert_only_globex(response.content.decode())
    assert state(a) == before_a
    assert state(b) == before_b


def test_each_tenant_has_its_own_database_file(a, b):
    acme_file = tenant_database_path(a.tenant.id)
    globex_file = tenant_database_path(b.tenant.id)
    assert acme_file != globex_file
    assert acme_file.is_file() and globex_file.is_file()
    for path, expected in ((acme_file, ACME_CONTENTS), (globex_file, GLOBEX_CONTENTS)):
        # Read by SQLite alone (the file and its WAL), not through the bound connection.
        direct = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = direct.execute("SELECT content FROM memories_memory").fetchall()
        finally:
            direct.close()
        assert {content for (content,) in rows} == expected
    with bind_tenant_database(a.tenant.id):
        assert set(Memory.objects.values_list("content", flat=True)) == ACME_CONTENTS
    with bind_tenant_database(b.tenant.id):
        assert set(Memory.objects.values_list("content", flat=True)) == GLOBEX_CONTENTS
