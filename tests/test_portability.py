"""Export and import: GET /v1/export, POST /v1/import, export_tenant and import_tenant."""

from __future__ import annotations

import datetime as dt
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone
from rest_framework import serializers

from billing.models import Plan
from memories import portability, services
from memories.models import (
    Memory,
    MemoryEmbedding,
    MemoryLink,
    MemoryTag,
    MemoryType,
    MemoryVersion,
)
from memories.tenant_db import DATA_PLANE_ALIAS, bind_tenant_database

# --- helpers -------------------------------------------------------------------------------------


def create(api, **fields):
    response = api.post("/v1/memories", {"content": "a memory", **fields})
    assert response.status_code == 201, response.json()
    return response.json()


def export(api, **params):
    response = api.get("/v1/export", params)
    assert response.status_code == 200
    assert response.streaming
    return json.loads(b"".join(response.streaming_content))


def import_body(api, document, **params):
    """POST the export file as the JSON body; `document` may be raw bytes."""
    body = document if isinstance(document, bytes) else json.dumps(document)
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return api.post(f"/v1/import?{query}" if query else "/v1/import", body)


def imported(api, document, **params):
    response = import_body(api, document, **params)
    assert response.status_code == 200, response.json()
    return response.json()


def upload(api, data: bytes, **form):
    file = SimpleUploadedFile("export.json", data, content_type="application/json")
    return api.client.post("/v1/import", {"file": file, **form}, headers=api.headers)


def export_file(*records, version="1.0"):
    return {
        "version": version,
        "exported_at": "2025-05-03T10:00:00Z",
        "memory_count": len(records),
        "memories": list(records),
    }


def stored(tenant):
    with bind_tenant_database(tenant.tenant.id):
        return list(Memory.objects.order_by("pk"))


def without_exported_at(document):
    return {name: value for name, value in document.items() if name != "exported_at"}


def fill_every_field(api, tenant):
    """Memories of all 17 types, both tiers, tags, metadata, versions, reads, an id gap."""
    ids = []
    for number, memory_type in enumerate(MemoryType.values):
        memory = create(
            api,
            content=f'Memory {number} about {memory_type}: ünïcode ✓ and "quotes"',
            type=memory_type,
            tags=[f"tag-{number % 3}", "shared"],
            metadata={"n": number, "nested": {"list": [1, 2.5, None, True]}, "s": "x"},
            importance=round(number / 20, 2),
            workspace="platform" if number % 2 else "default",
            tier="daily" if number % 4 == 0 else "permanent",
        )
        ids.append(memory["id"])
    updated = ids[3]
    api.patch(f"/v1/memories/{updated}", {"content": "Edited once", "tags": ["edited"]})
    api.patch(f"/v1/memories/{updated}", {"importance": 0.99, "metadata": {"edits": 2}})
    api.patch(f"/v1/memories/{ids[4]}", {"tier": "daily", "ttl_seconds": 600})
    with bind_tenant_database(tenant.tenant.id):
        Memory.objects.filter(pk=ids[5]).update(
            access_count=2, last_accessed_at=timezone.now() - dt.timedelta(minutes=5)
        )
    assert api.delete(f"/v1/memories/{ids[6]}").status_code == 204
    return ids


def oss_file():
    """A file as Engram OSS (engram-core) writes it: chrono's RFC 3339 with nanoseconds,
    no Engram Cloud fields, newer releases' scope fields."""
    return export_file(
        {
            "id": 12,
            "content": "Use blue-green deploys for the billing service",
            "memory_type": "decision",
            "tags": ["deploy", "billing"],
            "metadata": {"source": "retro", "confidence": 0.9},
            "importance": 0.8,
            "workspace": "platform",
            "tier": "permanent",
            "created_at": "2025-05-01T10:00:00.123456789+00:00",
            "updated_at": "2025-05-02T10:00:00+00:00",
        },
        {
            "id": 13,
            "content": "Standup moved to 9:30 today",
            "memory_type": "context",
            "tags": [],
            "metadata": {},
            "importance": 0.3,
            "workspace": "default",
            "scope_type": "global",
            "scope_id": None,
            "tier": "daily",
            "created_at": "2025-05-02T08:00:00Z",
            "updated_at": "2025-05-02T08:00:00Z",
        },
        {"id": 40, "content": "Only content: every other field takes Engram's default"},
    )


# --- export --------------------------------------------------------------------------------------


def test_it_streams_the_export_as_an_attachment(alice_api):
    create(alice_api, content="one")
    response = alice_api.get("/v1/export")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="engram-export-acme-')
    document = json.loads(b"".join(response.streaming_content))
    assert document["version"] == "1.0"
    assert document["memory_count"] == 1


def test_it_exports_every_field_of_engram_and_engram_cloud(alice_api):
    memory = create(alice_api, content="first", tags=["a"], metadata={"k": 1}, importance=0.7)
    current = alice_api.patch(f"/v1/memories/{memory['id']}", {"content": "second"}).json()
    (record,) = export(alice_api)["memories"]
    assert list(record) == [
        "id",
        "content",
        "memory_type",
        "tags",
        "metadata",
        "importance",
        "workspace",
        "tier",
        "created_at",
        "updated_at",
        "type",
        "expires_at",
        "version",
        "access_count",
        "last_accessed_at",
        "versions",
        "links",
    ]
    for name in record.keys() - {"memory_type", "versions", "links"}:
        assert record[name] == current[name], name
    assert record["memory_type"] == record["type"] == "note"
    assert record["links"] == []
    (previous,) = record["versions"]
    assert previous["version"] == 1
    assert previous["content"] == "first"
    assert previous["created_at"] == memory["updated_at"]
    assert set(previous) == {
        "version",
        "content",
        "type",
        "tags",
        "metadata",
        "importance",
        "workspace",
        "tier",
        "expires_at",
        "created_at",
    }


def test_export_leaves_out_expired_memories_as_reads_do(alice_api, acme):
    kept = create(alice_api, content="still here", tier="daily")
    gone = create(alice_api, content="already expired", tier="daily")
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.filter(pk=gone["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
    document = export(alice_api)
    assert [record["id"] for record in document["memories"]] == [kept["id"]]
    assert document["memory_count"] == 1


def test_export_filters_by_workspace(alice_api):
    create(alice_api, content="in platform", workspace="platform")
    create(alice_api, content="in default")
    document = export(alice_api, workspace="platform")
    assert [record["content"] for record in document["memories"]] == ["in platform"]
    assert document["memory_count"] == 1
    response = alice_api.get("/v1/export", {"workspace": "Not Valid"})
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"


def test_export_pages_through_many_memories_in_id_order(alice_api, monkeypatch):
    monkeypatch.setattr(portability, "PAGE_SIZE", 2)
    ids = [create(alice_api, content=f"memory {n}")["id"] for n in range(5)]
    document = export(alice_api)
    assert [record["id"] for record in document["memories"]] == ids
    assert document["memory_count"] == 5


def test_export_works_as_the_first_query_of_a_thread(alice_api, acme):
    """A fresh worker thread has never connected to the data plane before its first export."""
    create(alice_api, content="exported from a new thread")

    def export_in_this_thread():
        with bind_tenant_database(acme.tenant.id):
            try:
                return json.loads("".join(portability.export_memories()))
            finally:
                connections[DATA_PLANE_ALIAS].close()

    with ThreadPoolExecutor(1) as pool:
        document = pool.submit(export_in_this_thread).result()
    assert [record["content"] for record in document["memories"]] == ["exported from a new thread"]


def test_export_of_an_empty_tenant_is_a_valid_file(alice_api):
    document = export(alice_api)
    assert document["memories"] == []
    assert document["memory_count"] == 0


def test_export_includes_only_the_callers_tenant(alice_api, bob_api):
    create(alice_api, content="acme secret")
    create(bob_api, content="globex note")
    assert [record["content"] for record in export(bob_api)["memories"]] == ["globex note"]


def test_a_key_cannot_export_another_tenant(globex, acme):
    response = globex.client(**{"X-Engram-Tenant": "acme"}).get("/v1/export")
    assert response.status_code == 403
    assert response.json()["error"] == "tenant_mismatch"


def test_export_does_not_count_as_an_access(alice_api):
    create(alice_api)
    export(alice_api)
    (record,) = export(alice_api)["memories"]
    assert (record["access_count"], record["last_accessed_at"]) == (0, None)


# --- round trip ----------------------------------------------------------------------------------


def test_round_trip_into_an_empty_tenant_reproduces_the_file(alice_api, bob_api, acme):
    fill_every_field(alice_api, acme)
    original = export(alice_api)
    assert original["memory_count"] == 16
    types = {record["type"] for record in original["memories"]}
    assert len(types) == 16  # the seventeenth was deleted: its id is the gap
    assert {record["tier"] for record in original["memories"]} == {"daily", "permanent"}
    assert any(len(record["versions"]) == 2 for record in original["memories"])
    assert any(record["access_count"] == 2 for record in original["memories"])

    result = imported(bob_api, original)
    assert result == {"imported": 16, "skipped": 0, "failed": 0, "errors": []}
    copy = export(bob_api)
    assert without_exported_at(copy) == without_exported_at(original)


def test_the_largest_integers_a_memory_may_hold_survive_a_round_trip(alice_api, bob_api):
    metadata = {"largest": 2**63 - 1, "smallest": -(2**63 - 1)}
    created = alice_api.post("/v1/memories", {"content": "big numbers", "metadata": metadata})
    assert created.status_code == 201
    assert imported(bob_api, export(alice_api))["imported"] == 1
    assert bob_api.get("/v1/memories").json()["data"][0]["metadata"] == metadata


def link(tenant, from_id, to_id, **fields):
    with bind_tenant_database(tenant.tenant.id):
        services.link_memories(
            from_id, to_id, edge_type=fields.pop("edge_type", "related_to"), **fields
        )


def links_of(tenant):
    with bind_tenant_database(tenant.tenant.id):
        return sorted(
            MemoryLink.objects.values_list("from_memory_id", "to_memory_id", "edge_type", "pinned")
        )


def test_links_are_exported_and_reproduced_by_a_round_trip(alice_api, bob_api, acme, globex):
    ids = [create(alice_api, content=f"linked {n}")["id"] for n in range(3)]
    link(acme, ids[0], ids[1], edge_type="depends_on", strength=0.5, pinned=True)
    link(acme, ids[1], ids[2], source_context="follow-up")
    original = export(alice_api)
    first = next(record for record in original["memories"] if record["id"] == ids[0])
    assert first["links"][0]["to_id"] == ids[1]
    assert (first["links"][0]["edge_type"], first["links"][0]["strength"]) == ("depends_on", 0.5)
    imported(bob_api, original)
    assert links_of(globex) == links_of(acme)
    assert without_exported_at(export(bob_api)) == without_exported_at(original)


def test_links_follow_renumbered_ids_and_drop_targets_not_imported(
    alice_api, bob_api, acme, globex
):
    ids = [create(alice_api, content=f"acme {n}")["id"] for n in range(2)]
    link(acme, ids[0], ids[1])
    create(bob_api, content="globex already has id 1")
    document = export(alice_api)
    document["memories"][1]["links"] = [{"to_id": 999}]  # a target outside the file
    imported(bob_api, document)
    by_content = {memory.content: memory.pk for memory in stored(globex)}
    assert links_of(globex) == [(by_content["acme 0"], by_content["acme 1"], "related_to", False)]


def test_a_bad_link_fails_its_record(bob_api, globex):
    document = export_file(
        {"id": 1, "content": "fine"},
        {"id": 2, "content": "bad link", "links": [{"to_id": 1, "edge_type": "loves"}]},
    )
    result = imported(bob_api, document)
    assert (result["imported"], result["failed"]) == (1, 1)
    assert "links" in result["errors"][0]["errors"]


def test_round_trip_covers_all_seventeen_types(alice_api, bob_api):
    for memory_type in MemoryType.values:
        create(alice_api, content=f"a {memory_type}", type=memory_type)
    original = export(alice_api)
    imported(bob_api, original)
    copy = export(bob_api)
    assert sorted(record["type"] for record in copy["memories"]) == sorted(MemoryType.values)
    assert without_exported_at(copy) == without_exported_at(original)


def test_imported_memories_keep_tag_rows_and_versions(alice_api, bob_api, globex):
    memory = create(alice_api, content="v1", tags=["x", "y"])
    alice_api.patch(f"/v1/memories/{memory['id']}", {"content": "v2"})
    imported(bob_api, export(alice_api))
    with bind_tenant_database(globex.tenant.id):
        assert sorted(MemoryTag.objects.values_list("tag", flat=True)) == ["x", "y"]
        version = MemoryVersion.objects.get()
        assert (version.memory_id, version.version, version.content) == (memory["id"], 1, "v1")
    listed = bob_api.get("/v1/memories", {"tag": "x"}).json()["data"]
    assert [item["id"] for item in listed] == [memory["id"]]


def test_ids_taken_in_the_target_are_renumbered_and_the_rest_kept(alice_api, bob_api, globex):
    for number in range(3):
        create(alice_api, content=f"acme {number}")
    create(bob_api, content="globex already has id 1")
    result = imported(bob_api, export(alice_api))
    assert result["imported"] == 3
    by_content = {memory.content: memory.pk for memory in stored(globex)}
    assert by_content["globex already has id 1"] == 1
    assert by_content["acme 1"] == 2
    assert by_content["acme 2"] == 3
    assert by_content["acme 0"] == 4  # above every id of the file, not just the tenant's


def test_the_service_reports_renumbered_ids(globex):
    with bind_tenant_database(globex.tenant.id):
        Memory.objects.create(content="taken", content_hash="x")
        result = portability.import_memories(
            [{"id": 1, "content": "wants one"}, {"id": 7, "content": "wants seven"}]
        )
        assert result.renumbered == {1: 8}
        assert sorted(Memory.objects.values_list("pk", flat=True)) == [1, 7, 8]


def test_ids_repeated_inside_a_file_get_new_ids(bob_api, globex):
    result = imported(
        bob_api, export_file({"id": 5, "content": "first five"}, {"id": 5, "content": "second"})
    )
    assert result["imported"] == 2
    assert {memory.content: memory.pk for memory in stored(globex)} == {
        "first five": 5,
        "second": 6,
    }


# --- Engram OSS files ----------------------------------------------------------------------------


def test_an_engram_oss_file_imports_with_every_field_mapped(bob_api, globex):
    before = timezone.now()
    result = imported(bob_api, oss_file())
    assert result == {"imported": 3, "skipped": 0, "failed": 0, "errors": []}

    decision = bob_api.get("/v1/memories/12").json()
    assert decision["content"] == "Use blue-green deploys for the billing service"
    assert decision["type"] == "decision"
    assert decision["tags"] == ["deploy", "billing"]
    assert decision["metadata"] == {"source": "retro", "confidence": 0.9}
    assert decision["importance"] == 0.8
    assert decision["workspace"] == "platform"
    assert decision["tier"] == "permanent"
    assert decision["expires_at"] is None
    assert decision["created_at"] == "2025-05-01T10:00:00.123456Z"
    assert decision["updated_at"] == "2025-05-02T10:00:00Z"
    assert decision["version"] == 1

    daily = bob_api.get("/v1/memories/13").json()
    assert (daily["type"], daily["tier"], daily["workspace"]) == ("context", "daily", "default")
    expires_at = dt.datetime.fromisoformat(daily["expires_at"])
    assert before + dt.timedelta(hours=23) < expires_at <= timezone.now() + dt.timedelta(hours=24)

    bare = bob_api.get("/v1/memories/40").json()
    assert (bare["type"], bare["tags"], bare["metadata"], bare["importance"]) == (
        "note",
        [],
        {},
        0.5,
    )
    assert (bare["workspace"], bare["tier"], bare["version"]) == ("default", "permanent", 1)
    assert bare["created_at"] == bare["updated_at"]


def test_an_engram_oss_file_reexported_carries_its_fields(bob_api):
    imported(bob_api, oss_file())
    records = {record["id"]: record for record in export(bob_api)["memories"]}
    original = oss_file()["memories"][0]
    for name in ("content", "memory_type", "tags", "metadata", "importance", "workspace", "tier"):
        assert records[12][name] == original[name], name


def test_a_memory_type_engram_cloud_does_not_know_fails_that_record(bob_api):
    result = imported(
        bob_api,
        export_file({"content": "fine"}, {"content": "from the future", "memory_type": "hologram"}),
    )
    assert (result["imported"], result["failed"]) == (1, 1)
    assert result["errors"][0]["index"] == 1
    assert "memory_type" in result["errors"][0]["errors"]


# --- duplicates ----------------------------------------------------------------------------------


def test_importing_the_same_file_twice_adds_nothing_the_second_time(bob_api, globex):
    first = imported(bob_api, oss_file())
    second = imported(bob_api, oss_file())
    assert first["imported"] == 3
    assert second == {"imported": 0, "skipped": 3, "failed": 0, "errors": []}
    assert len(stored(globex)) == 3


def test_skip_duplicates_false_imports_duplicates(bob_api, globex):
    imported(bob_api, oss_file())
    again = imported(bob_api, oss_file(), skip_duplicates="false")
    assert (again["imported"], again["skipped"]) == (3, 0)
    contents = [memory.content for memory in stored(globex)]
    assert len(contents) == 6
    assert len(set(contents)) == 3


def test_duplicates_inside_one_file_are_skipped(bob_api, globex):
    result = imported(
        bob_api,
        export_file({"content": "same"}, {"content": "other"}, {"content": "same"}),
    )
    assert (result["imported"], result["skipped"]) == (2, 1)
    assert [memory.content for memory in stored(globex)] == ["same", "other"]


def test_a_memory_already_in_the_tenant_is_skipped(bob_api):
    create(bob_api, content="Standup moved to 9:30 today")
    result = imported(bob_api, oss_file())
    assert (result["imported"], result["skipped"]) == (2, 1)


def test_an_already_expired_record_is_skipped(bob_api, globex):
    past = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    result = imported(
        bob_api,
        export_file({"content": "gone", "tier": "daily", "expires_at": past}, {"content": "ok"}),
    )
    assert (result["imported"], result["skipped"]) == (1, 1)
    assert [memory.content for memory in stored(globex)] == ["ok"]


# --- bad records and bad files -------------------------------------------------------------------


def test_a_bad_record_is_reported_with_its_index_and_the_others_imported(bob_api, globex):
    result = imported(
        bob_api,
        export_file(
            {"content": "good one"},
            {"content": "too important", "importance": 2},
            {"content": "good two"},
            "not an object",
            {"content": "  "},
            {"content": "permanent with expiry", "expires_at": "2099-01-01T00:00:00Z"},
            {
                "content": "v",
                "version": 1,
                "versions": [{"version": 1, "content": "x", "created_at": "2025-01-01T00:00:00Z"}],
            },
        ),
    )
    assert (result["imported"], result["failed"], result["skipped"]) == (2, 5, 0)
    assert [(error["index"], sorted(error["errors"])) for error in result["errors"]] == [
        (1, ["importance"]),
        (3, ["non_field_errors"]),
        (4, ["content"]),
        (5, ["expires_at"]),
        (6, ["versions"]),
    ]
    assert [memory.content for memory in stored(globex)] == ["good one", "good two"]


def test_only_the_first_errors_are_described_but_all_are_counted(bob_api, monkeypatch):
    monkeypatch.setattr(portability, "MAX_REPORTED_ERRORS", 2)
    result = imported(bob_api, export_file(*[{"content": 5}] * 4))
    assert result["failed"] == 4
    assert [error["index"] for error in result["errors"]] == [0, 1]


def valid_file_bytes():
    return json.dumps(export_file(*oss_file()["memories"])).encode()


MALFORMED = {
    "not json": (b"this is not json", "invalid_json"),
    "empty body": (b"", "invalid_json"),
    "truncated": (valid_file_bytes()[:-40], "invalid_json"),
    "trailing garbage": (valid_file_bytes() + b" {}", "invalid_json"),
    "a JSON list": (json.dumps(oss_file()["memories"]).encode(), "validation_error"),
    "no memories": (b'{"version": "1.0", "exported_at": "x"}', "validation_error"),
    "memories not a list": (b'{"version": "1.0", "memories": {"id": 1}}', "validation_error"),
    "wrong version": (json.dumps(export_file({"content": "x"}, version="2.0")).encode(), None),
    "no version": (b'{"memories": [{"content": "x"}]}', "validation_error"),
    "version after memories": (b'{"memories": [{"content": "x"}], "version": "9"}', None),
}


@pytest.mark.parametrize("body, code", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_file_is_refused_and_nothing_is_written(bob_api, globex, body, code):
    response = import_body(bob_api, body)
    assert response.status_code == 400
    assert response.json()["error"] == (code or "validation_error")
    if code is None:
        assert "version" in response.json()["fields"]
    assert stored(globex) == []


def test_a_malformed_upload_is_refused_and_nothing_is_written(bob_api, globex):
    response = upload(bob_api, valid_file_bytes()[:-40])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert stored(globex) == []


def test_it_refuses_bodies_that_are_neither_json_nor_multipart(bob_api):
    response = bob_api.client.post(
        "/v1/import", "x", content_type="text/plain", headers=bob_api.headers
    )
    assert response.status_code == 415


def test_unknown_options_are_refused(bob_api):
    response = import_body(bob_api, oss_file(), skip_dupes="false")
    assert response.status_code == 400
    assert "skip_dupes" in response.json()["fields"]


# --- multipart -----------------------------------------------------------------------------------


def test_a_multipart_upload_imports_the_file(bob_api, globex):
    response = upload(bob_api, valid_file_bytes())
    assert response.status_code == 200, response.json()
    assert response.json()["imported"] == 3
    assert len(stored(globex)) == 3


def test_a_multipart_upload_takes_skip_duplicates_as_a_form_field(bob_api, globex):
    upload(bob_api, valid_file_bytes())
    response = upload(bob_api, valid_file_bytes(), skip_duplicates="false")
    assert response.json()["imported"] == 3
    assert len(stored(globex)) == 6


def test_a_multipart_request_without_the_file_is_a_validation_error(bob_api):
    response = bob_api.client.post("/v1/import", {"other": "x"}, headers=bob_api.headers)
    assert response.status_code == 400
    assert "file" in response.json()["fields"]


def test_unknown_form_fields_are_refused(bob_api, globex):
    response = upload(bob_api, valid_file_bytes(), skip_dupes="false")
    assert response.status_code == 400
    assert "skip_dupes" in response.json()["fields"]
    assert stored(globex) == []


# --- quota and permissions -----------------------------------------------------------------------


def test_an_import_over_the_quota_is_refused_whole(bob_api, globex):
    Plan.objects.filter(code="free").update(max_memories=5)
    for number in range(3):
        create(bob_api, content=f"existing {number}")
    response = import_body(bob_api, oss_file())
    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "quota_exceeded"
    assert (body["metric"], body["current"], body["limit"]) == ("memories", 3, 5)
    assert body["upgrade_url"] == "/console/w/globex/billing"
    assert len(stored(globex)) == 3


def test_the_quota_counts_only_what_would_be_imported(bob_api, globex):
    Plan.objects.filter(code="free").update(max_memories=5)
    create(bob_api, content="Standup moved to 9:30 today")
    create(bob_api, content="Only content: every other field takes Engram's default")
    result = imported(bob_api, export_file(*oss_file()["memories"], {"content": 1}))
    assert (result["imported"], result["skipped"], result["failed"]) == (1, 2, 1)


def test_an_unlimited_plan_imports_anything(bob_api, globex):
    Plan.objects.filter(code="free").update(max_memories=None)
    assert imported(bob_api, oss_file())["imported"] == 3


def test_a_read_only_key_cannot_import_but_can_export(acme):
    key = acme.issue_key(scopes=["memories:read"])
    api = acme.client()
    api.headers["Authorization"] = f"Bearer {key}"
    response = import_body(api, oss_file())
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert stored(acme) == []
    assert api.get("/v1/export").status_code == 200


def test_a_key_cannot_import_into_another_tenant(globex, acme):
    api = globex.client(**{"X-Engram-Tenant": "acme"})
    response = import_body(api, oss_file())
    assert response.status_code == 403
    assert response.json()["error"] == "tenant_mismatch"
    assert stored(acme) == []
    assert stored(globex) == []


# --- imported memories are searchable ------------------------------------------------------------


def test_imported_memories_are_in_the_keyword_index_and_have_embeddings(bob_api, globex):
    imported(bob_api, oss_file())
    with bind_tenant_database(globex.tenant.id):
        with connections[DATA_PLANE_ALIAS].cursor() as cursor:
            cursor.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH 'billing'")
            assert [row[0] for row in cursor.fetchall()] == [12]
            cursor.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH 'retro'")
            assert [row[0] for row in cursor.fetchall()] == [12]
        assert sorted(MemoryEmbedding.objects.values_list("memory_id", flat=True)) == [12, 13, 40]


def index_rows(tenant):
    """Both FTS indexes of a tenant, by memory content: what each memory is findable by."""
    with bind_tenant_database(tenant.tenant.id), connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(
            "CREATE VIRTUAL TABLE temp.memories_words_instance "
            "USING fts5vocab(main, memories_words, 'instance')"
        )
        cursor.execute(
            "SELECT m.content, f.tags, f.metadata FROM memories_fts f "
            "JOIN memories_memory m ON m.id = f.rowid ORDER BY m.content"
        )
        fts = cursor.fetchall()
        cursor.execute(
            "SELECT m.content, v.term, v.col FROM memories_words_instance v "
            "JOIN memories_memory m ON m.id = v.doc ORDER BY m.content, v.term, v.col, v.offset"
        )
        words = cursor.fetchall()
        cursor.execute("INSERT INTO memories_words(memories_words) VALUES ('integrity-check')")
        cursor.execute("INSERT INTO memories_fts(memories_fts) VALUES ('integrity-check')")
    return fts, words


def test_an_import_indexes_memories_as_writes_through_the_api_do(alice_api, acme, bob_api, globex):
    fill_every_field(alice_api, acme)
    result = imported(bob_api, export(alice_api))
    assert result["imported"] == 16
    fts, words = index_rows(acme)
    assert len(fts) == 16 and words
    assert index_rows(globex) == (fts, words)
    # The insert trigger is back: a memory written after the import is indexed as usual.
    create(bob_api, content="written after the import: zanzibar", tags=["later"])
    with bind_tenant_database(globex.tenant.id), connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'zanzibar later'"
        )
        assert cursor.fetchone()[0] == 1


def test_imports_write_in_batches(bob_api, globex, monkeypatch):
    monkeypatch.setattr(portability, "BATCH_SIZE", 2)
    records = [{"content": f"memory number {n}", "id": n + 1} for n in range(5)]
    result = imported(bob_api, export_file(*records, {"content": "memory number 0"}))
    assert (result["imported"], result["skipped"]) == (5, 1)
    assert [memory.pk for memory in stored(globex)] == [1, 2, 3, 4, 5]
    with bind_tenant_database(globex.tenant.id):
        assert MemoryEmbedding.objects.count() == 5


# --- commands ------------------------------------------------------------------------------------


def run(command, *args):
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_export_tenant_writes_the_same_file_as_the_api(alice_api, acme, tmp_path):
    fill_every_field(alice_api, acme)
    output = tmp_path / "acme.json"
    out, _ = run("export_tenant", "acme", "--output", str(output))
    assert "Exported acme" in out
    from_command = json.loads(output.read_text())
    assert without_exported_at(from_command) == without_exported_at(export(alice_api))
    assert not (tmp_path / "acme.json.partial").exists()


def test_import_tenant_reads_what_export_tenant_wrote(alice_api, acme, bob_api, tmp_path):
    fill_every_field(alice_api, acme)
    output = tmp_path / "acme.json"
    run("export_tenant", "acme", "--output", str(output))
    out, _ = run("import_tenant", "globex", "--input", str(output))
    assert out.strip() == "Imported 16, skipped 0, failed 0 memories into globex."
    assert without_exported_at(export(bob_api)) == without_exported_at(export(alice_api))
    out, _ = run("import_tenant", "globex", "--input", str(output))
    assert "Imported 0, skipped 16" in out
    out, _ = run("import_tenant", "globex", "--input", str(output), "--no-skip-duplicates")
    assert "Imported 16, skipped 0" in out


def test_import_tenant_reports_bad_records(globex, tmp_path):
    path = tmp_path / "oss.json"
    path.write_text(json.dumps(export_file({"content": "fine"}, {"content": ""})))
    out, err = run("import_tenant", "globex", "--input", str(path))
    assert "Imported 1, skipped 0, failed 1" in out
    assert err.startswith("record 1: ")


@pytest.mark.parametrize("command", ["export_tenant", "import_tenant"])
def test_commands_refuse_an_unknown_slug(db, command, tmp_path):
    option = "--output" if command == "export_tenant" else "--input"
    with pytest.raises(CommandError, match="No tenant"):
        run(command, "nobody", option, str(tmp_path / "file.json"))


def test_import_tenant_refuses_a_bad_file_and_writes_nothing(globex, tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(valid_file_bytes()[:-40])
    with pytest.raises(CommandError, match="Not a usable export file"):
        run("import_tenant", "globex", "--input", str(path))
    with pytest.raises(CommandError, match="Cannot read"):
        run("import_tenant", "globex", "--input", str(tmp_path / "missing.json"))
    assert stored(globex) == []


def test_import_tenant_respects_the_quota(globex, tmp_path):
    Plan.objects.filter(code="free").update(max_memories=2)
    path = tmp_path / "oss.json"
    path.write_text(json.dumps(oss_file()))
    with pytest.raises(CommandError, match="limit of 2"):
        run("import_tenant", "globex", "--input", str(path))
    assert stored(globex) == []


# --- the validation fast path --------------------------------------------------------------------

CLOUD_RECORD = {
    "id": 3,
    "content": "Every field set",
    "memory_type": "summary",
    "tags": ["a", "b"],
    "metadata": {"k": [1, {"x": None}], "n": 2.5},
    "importance": 1,
    "workspace": "ws_1-a",
    "tier": "daily",
    "created_at": "2025-05-01T10:00:00.123456Z",
    "updated_at": "2025-05-01T12:00:00+02:00",
    "type": "summary",
    "expires_at": "2099-01-01T00:00:00Z",
    "version": 4,
    "access_count": 0,
    "last_accessed_at": None,
    "versions": [],
    "links": [],
}
PLAIN_RECORDS = [
    *oss_file()["memories"],
    CLOUD_RECORD,
    {"content": "no id", "id": None},
    {"content": "tags cleaned", "tags": [" a ", "a", "b "], "importance": 0.0},
    {"content": "x", "expires_at": None, "last_accessed_at": None, "tier": "permanent"},
    {
        **CLOUD_RECORD,
        "versions": [
            {
                "version": 1,
                "content": "first draft",
                "type": "note",
                "tags": ["a"],
                "metadata": {},
                "importance": 0.5,
                "workspace": "default",
                "tier": "permanent",
                "expires_at": None,
                "created_at": "2025-04-01T10:00:00Z",
            },
            {"version": 3, "content": "third", "created_at": "2025-04-02T10:00:00+02:00"},
            {
                "version": 2,
                "content": "x",
                "expires_at": "2025-04-03T00:00:00Z",
                "created_at": "2025-04-02T00:00:00Z",
                "memory_type": "todo",
                "unknown": 1,
            },
        ],
    },
    {
        "content": "numbered after its versions",
        "versions": [{"version": 2, "content": "y", "created_at": "2025-04-02T10:00:00Z"}],
    },
]
UNUSUAL_BUT_VALID = [
    {"content": "naive time", "created_at": "2025-05-01T10:00:00"},
    {**CLOUD_RECORD, "workspace": " padded "},
    {**CLOUD_RECORD, "versions": [{"version": 1, "content": "x", "created_at": "2025-01-01"}]},
]
INVALID = [
    "text",
    None,
    {},
    {"content": ""},
    {"content": " "},
    {"content": 5},
    {"content": "x" * 100_001},
    {"content": "nul \x00"},
    {"content": "x", "tags": "a"},
    {"content": "x", "tags": [""]},
    {"content": "x", "tags": ["t" * 65]},
    {"content": "x", "tags": [str(n) for n in range(51)]},
    {"content": "x", "tags": [1]},
    {"content": "x", "tags": ["\ud800"]},
    {"content": "x", "metadata": []},
    {"content": "x", "metadata": {"big": "y" * 70_000}},
    {"content": "x", "metadata": json.loads("[" * 40 + "]" * 40)},
    {"content": "x", "importance": True},
    {"content": "x", "importance": "0.5"},
    {"content": "x", "importance": 1.5},
    {"content": "x", "workspace": "Bad!"},
    {"content": "x", "workspace": ["a"]},
    {"content": "x", "tier": "weekly"},
    {"content": "x", "tier": ["daily"]},
    {"content": "x", "type": "note", "memory_type": "todo"},
    {"content": "x", "type": ["note"]},
    {"content": "x", "id": 0},
    {"content": "x", "id": "12"},
    {"content": "x", "id": 2**63},
    {"content": "x", "version": 0},
    {"content": "x", "access_count": -1},
    {"content": "x", "created_at": None},
    {"content": "x", "created_at": "yesterday"},
    {"content": "x", "created_at": "2025-13-01T00:00:00Z"},
    {"content": "x", "created_at": "0001-01-01T00:00:00+01:00"},
    {"content": "x", "updated_at": 1714557600},
    {"content": "x", "tier": "permanent", "expires_at": "2099-01-01T00:00:00Z"},
    {"content": "x", "versions": {}},
    {"content": "x", "versions": [{"content": "no number"}]},
    {"content": "x", "versions": [{"version": 1, "content": "x"}]},
    {
        "content": "x",
        "versions": [{"version": 1, "content": "", "created_at": "2025-01-01T00:00:00Z"}],
    },
    {
        "content": "x",
        "versions": [
            {
                "version": 1,
                "content": "x",
                "created_at": "2025-01-01T00:00:00Z",
                "expires_at": "soon",
            }
        ],
    },
    {
        "content": "x",
        "version": 2,
        "versions": [{"version": 2, "content": "x", "created_at": "2025-01-01T00:00:00Z"}],
    },
    {
        "content": "x",
        "versions": [
            {"version": 1, "content": "a", "created_at": "2025-01-01T00:00:00Z"},
            {"version": 1, "content": "b", "created_at": "2025-01-01T00:00:00Z"},
        ],
    },
    {"content": "x", "versions": ["not a version"]},
]


def serializer_result(record):
    try:
        return portability.MemoryRecordSerializer().run_validation(record)
    except serializers.ValidationError:
        return None


@pytest.mark.parametrize("record", PLAIN_RECORDS)
def test_the_fast_path_returns_what_the_serializer_returns(record):
    fast = portability._plainly_valid(record)
    assert fast is not None
    assert fast == serializer_result(record)


@pytest.mark.parametrize("record", UNUSUAL_BUT_VALID)
def test_the_fast_path_leaves_unusual_records_to_the_serializer(record):
    assert portability._plainly_valid(record) is None
    assert serializer_result(record) is not None


@pytest.mark.parametrize("record", INVALID)
def test_the_fast_path_accepts_nothing_the_serializer_refuses(record):
    assert serializer_result(record) is None
    assert portability._plainly_valid(record) is None
