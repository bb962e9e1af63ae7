"""/v1/memories CRUD and list, through HTTP."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from django.db import connections
from django.utils import timezone

from memories.models import Memory, MemoryTag, MemoryVersion
from memories.tenant_db import (
    DATA_PLANE_ALIAS,
    TenantDatabaseMissing,
    bind_tenant_database,
    tenant_database_path,
)


def create(api, **fields):
    response = api.post("/v1/memories", {"content": "a memory", **fields})
    assert response.status_code == 201, response.json()
    return response.json()


def test_it_creates_a_memory_with_every_field(alice_api):
    memory = create(
        alice_api,
        content="Deploy with the blue-green script",
        type="procedural",
        tags=["deploy", "ops"],
        metadata={"repo": "infra", "steps": 3},
        importance=0.9,
        workspace="platform",
    )
    assert memory["id"] == 1
    assert memory["content"] == "Deploy with the blue-green script"
    assert memory["type"] == "procedural"
    assert memory["tags"] == ["deploy", "ops"]
    assert memory["metadata"] == {"repo": "infra", "steps": 3}
    assert memory["importance"] == 0.9
    assert memory["workspace"] == "platform"
    assert memory["tier"] == "permanent"
    assert memory["expires_at"] is None
    assert memory["version"] == 1
    assert len(memory["content_hash"]) == 64
    assert memory["access_count"] == 0
    assert memory["created_at"] == memory["updated_at"]
    assert memory["last_accessed_at"] is None


def test_it_applies_engram_defaults(alice_api):
    memory = create(alice_api, content="just text")
    assert (memory["type"], memory["importance"], memory["workspace"], memory["tags"]) == (
        "note",
        0.5,
        "default",
        [],
    )


def test_it_accepts_engrams_memory_type_name(alice_api):
    assert create(alice_api, memory_type="decision")["type"] == "decision"


def test_it_reads_a_memory_and_counts_the_access(alice_api):
    memory = create(alice_api)
    first = alice_api.get(f"/v1/memories/{memory['id']}").json()
    second = alice_api.get(f"/v1/memories/{memory['id']}").json()
    assert (first["access_count"], second["access_count"]) == (1, 2)
    assert second["last_accessed_at"] is not None


def test_it_updates_partially_bumps_version_and_keeps_the_previous_one(alice_api, acme):
    memory = create(alice_api, content="first", tags=["a"], importance=0.2)
    response = alice_api.patch(f"/v1/memories/{memory['id']}", {"content": "second"})
    assert response.status_code == 200
    updated = response.json()
    assert updated["content"] == "second"
    assert updated["tags"] == ["a"]
    assert updated["importance"] == 0.2
    assert updated["version"] == 2
    assert updated["content_hash"] != memory["content_hash"]
    with bind_tenant_database(acme.tenant.id):
        previous = MemoryVersion.objects.get(memory_id=memory["id"])
        assert (previous.version, previous.content, previous.tags) == (1, "first", ["a"])


def test_it_replaces_tags_on_update_so_tag_filters_follow(alice_api):
    memory = create(alice_api, tags=["old"])
    alice_api.patch(f"/v1/memories/{memory['id']}", {"tags": ["new"]})
    assert alice_api.get("/v1/memories", {"tag": "old"}).json()["data"] == []
    assert [m["id"] for m in alice_api.get("/v1/memories", {"tag": "new"}).json()["data"]] == [
        memory["id"]
    ]


def test_it_deletes_and_the_memory_is_gone_at_once(alice_api, acme):
    memory = create(alice_api, tags=["x"])
    alice_api.patch(f"/v1/memories/{memory['id']}", {"content": "v2"})
    response = alice_api.delete(f"/v1/memories/{memory['id']}")
    assert response.status_code == 204
    assert alice_api.get(f"/v1/memories/{memory['id']}").status_code == 404
    assert alice_api.get("/v1/memories").json()["data"] == []
    assert alice_api.delete(f"/v1/memories/{memory['id']}").status_code == 404
    with bind_tenant_database(acme.tenant.id):
        assert not MemoryTag.objects.exists()
        assert not MemoryVersion.objects.exists()


def test_it_gives_404_for_a_missing_memory_in_the_envelope(alice_api):
    response = alice_api.get("/v1/memories/999")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert body["request_id"] == response["X-Request-Id"]


def test_daily_memories_expire_after_their_ttl(alice_api, acme):
    memory = create(alice_api, tier="daily", ttl_seconds=60)
    expires_at = dt.datetime.fromisoformat(memory["expires_at"])
    created_at = dt.datetime.fromisoformat(memory["created_at"])
    assert expires_at - created_at == dt.timedelta(seconds=60)
    assert alice_api.get(f"/v1/memories/{memory['id']}").status_code == 200
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.filter(pk=memory["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
    assert alice_api.get(f"/v1/memories/{memory['id']}").status_code == 404
    assert alice_api.get("/v1/memories").json()["data"] == []
    assert alice_api.patch(f"/v1/memories/{memory['id']}", {"content": "x"}).status_code == 404
    assert alice_api.get("/v1/stats").json()["total_memories"] == 0


def test_daily_tier_defaults_to_a_day(alice_api, settings):
    memory = create(alice_api, tier="daily")
    expires_at = dt.datetime.fromisoformat(memory["expires_at"])
    created_at = dt.datetime.fromisoformat(memory["created_at"])
    assert expires_at - created_at == dt.timedelta(seconds=settings.ENGRAM_DAILY_TTL_SECONDS)


def test_a_ttl_makes_a_memory_daily_and_a_permanent_one_refuses_it(alice_api):
    assert create(alice_api, ttl_seconds=30)["tier"] == "daily"
    response = alice_api.post(
        "/v1/memories", {"content": "x", "tier": "permanent", "ttl_seconds": 30}
    )
    assert response.status_code == 400
    assert "ttl_seconds" in response.json()["fields"]


def test_list_filters_by_workspace_type_tags_tier_and_dates(alice_api):
    a = create(alice_api, workspace="w1", type="note", tags=["x", "y"])
    b = create(alice_api, workspace="w1", type="todo", tags=["x"])
    c = create(alice_api, workspace="w2", type="note", tags=["y"], tier="daily")

    def ids(**params):
        response = alice_api.get("/v1/memories", params)
        assert response.status_code == 200, response.json()
        return {m["id"] for m in response.json()["data"]}

    assert ids(workspace="w1") == {a["id"], b["id"]}
    assert ids(type="note") == {a["id"], c["id"]}
    assert ids(tag="x") == {a["id"], b["id"]}
    assert ids(tag=["x", "y"]) == {a["id"]}
    assert ids(tier="daily") == {c["id"]}
    assert ids(created_after=b["created_at"]) == {c["id"]}
    assert ids(created_before=b["created_at"]) == {a["id"]}


def test_list_paginates_with_a_cursor_in_any_sort(alice_api):
    made = [create(alice_api, importance=i / 10) for i in range(7)]
    for sort, expected in [
        ("-created_at", [m["id"] for m in reversed(made)]),
        ("created_at", [m["id"] for m in made]),
        ("-importance", [m["id"] for m in reversed(made)]),
        ("importance", [m["id"] for m in made]),
    ]:
        seen, cursor = [], None
        while True:
            params = {"sort": sort, "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = alice_api.get("/v1/memories", params).json()
            seen += [m["id"] for m in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, sort


def test_stats_count_by_type_workspace_and_tier_with_plan_limits(alice_api):
    create(alice_api, type="note", workspace="a")
    create(alice_api, type="todo", workspace="a", tier="daily")
    stats = alice_api.get("/v1/stats").json()
    assert stats["total_memories"] == 2
    assert stats["by_type"] == {"note": 1, "todo": 1}
    assert stats["by_workspace"] == {"a": 2}
    assert stats["by_tier"] == {"daily": 1, "permanent": 1}
    assert stats["storage_bytes"] > 0
    assert stats["plan"]["code"] == "free"
    assert stats["plan"]["limits"]["memories"] == 1000
    assert stats["usage"]["memories"] == 2


def test_reads_count_as_accesses_written_in_batches_not_per_read(alice_api, acme, monkeypatch):
    from memories import access

    memory = create(alice_api)
    for _ in range(3):
        alice_api.get(f"/v1/memories/{memory['id']}")
    with bind_tenant_database(acme.tenant.id):
        stored = Memory.objects.get(pk=memory["id"])
        assert (stored.access_count, stored.last_accessed_at) == (0, None)
    monkeypatch.setattr(access, "FLUSH_SECONDS", 0.0)
    assert alice_api.get(f"/v1/memories/{memory['id']}").json()["access_count"] == 4
    with bind_tenant_database(acme.tenant.id):
        stored = Memory.objects.get(pk=memory["id"])
        assert stored.access_count == 4
        assert stored.last_accessed_at is not None


def test_an_exiting_process_writes_every_tenants_counts_but_not_a_restoring_ones(
    alice_api, bob_api, acme, globex
):
    from backups.services import maintenance
    from memories.access import access_counter

    alices, bobs = create(alice_api), create(bob_api)
    for _ in range(2):
        alice_api.get(f"/v1/memories/{alices['id']}")
        bob_api.get(f"/v1/memories/{bobs['id']}")
    with maintenance(globex.tenant):
        assert access_counter.flush_all() == 1
    for tenant, memory, stored in ((acme, alices, 2), (globex, bobs, 0)):
        with bind_tenant_database(tenant.tenant.id):
            assert Memory.objects.get(pk=memory["id"]).access_count == stored
    assert access_counter.flush_all() == 1  # the restore over, the kept counts are written
    with bind_tenant_database(globex.tenant.id):
        assert Memory.objects.get(pk=bobs["id"]).access_count == 2


def test_the_hourly_purge_deletes_expired_memories_of_every_tenant_and_nothing_else(
    alice_api, bob_api, acme, globex
):
    from backups.services import maintenance
    from memories.tasks import purge_expired_memories

    expired = create(alice_api, tier="daily", ttl_seconds=60)
    kept = create(alice_api, tier="daily", ttl_seconds=60)
    permanent = create(alice_api)
    other = create(bob_api, tier="daily", ttl_seconds=60)
    for tenant, memory_id in ((acme, expired["id"]), (globex, other["id"])):
        with bind_tenant_database(tenant.tenant.id):
            Memory.objects.filter(pk=memory_id).update(
                expires_at=timezone.now() - dt.timedelta(seconds=1)
            )

    with maintenance(globex.tenant):  # a tenant being restored is left for the next pass
        assert purge_expired_memories() == 1
    with bind_tenant_database(acme.tenant.id):
        assert sorted(Memory.objects.values_list("pk", flat=True)) == sorted(
            [kept["id"], permanent["id"]]
        )
        assert not MemoryVersion.objects.filter(memory_id=expired["id"]).exists()
    assert purge_expired_memories() == 1
    with bind_tenant_database(globex.tenant.id):
        assert not Memory.objects.exists()
    assert purge_expired_memories() == 0


def test_counts_of_a_tenant_deleted_meanwhile_are_dropped_not_retried(alice_api, acme):
    from memories.access import access_counter

    memory = create(alice_api)
    alice_api.get(f"/v1/memories/{memory['id']}")
    path = tenant_database_path(acme.tenant.id)
    connections[DATA_PLANE_ALIAS].close()
    shutil.rmtree(path.parent)
    access_counter.flush_tenant(path)  # no error: there is nothing left to count for
    with pytest.raises(TenantDatabaseMissing), bind_tenant_database(acme.tenant.id):
        pass
    assert path not in access_counter._pending  # not kept (and retried) for ever
