"""Idempotency-Key on POST /v1/memories and POST /v1/import (memories/idempotency.py)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import Client
from django.utils import timezone

from billing.models import Plan
from billing.plans import plans
from billing.ratelimit import local_buckets
from engram_cloud.errors import ApiError
from memories import idempotency, portability, services
from memories.api import views
from memories.models import IdempotencyRecord, Memory
from memories.tenant_db import bind_tenant_database
from tests.conftest import ApiClient, make_tenant

KEY = "5f0c1a4e-7d1b-4c35-9a53-0d6c1f2b9e11"


@pytest.fixture(autouse=True)
def fresh_limits():
    plans.clear()
    local_buckets.clear()
    yield
    plans.clear()
    local_buckets.clear()


def set_plan(code: str = "free", **limits: int | None) -> None:
    Plan.objects.filter(code=code).update(**limits)
    plans.clear()


def post(api, body, key=KEY, path="/v1/memories"):
    return api.post(path, body, headers={"Idempotency-Key": key})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response["X-Request-Id"]
    return body


def replayed(response) -> bool:
    return response.get("Idempotent-Replayed") == "true"


def memories_of(tenant) -> list[Memory]:
    with bind_tenant_database(tenant.tenant.id):
        return list(Memory.objects.order_by("pk"))


def records_of(tenant) -> list[IdempotencyRecord]:
    with bind_tenant_database(tenant.tenant.id):
        return list(IdempotencyRecord.objects.order_by("pk"))


def age_records(tenant, by: dt.timedelta) -> None:
    with bind_tenant_database(tenant.tenant.id):
        IdempotencyRecord.objects.update(created_at=timezone.now() - by)


def export_file(*contents: str) -> dict:
    return {
        "version": "1.0",
        "exported_at": "2025-05-03T10:00:00Z",
        "memory_count": len(contents),
        "memories": [{"content": content, "memory_type": "note"} for content in contents],
    }


# --- Replay and mismatch -------------------------------------------------------------------------


def test_the_same_key_and_body_replay_the_first_response_and_store_one_memory(alice_api, acme):
    first = post(alice_api, {"content": "pay the invoice", "tags": ["billing"]})
    assert first.status_code == 201
    assert not replayed(first)
    second = post(alice_api, {"content": "pay the invoice", "tags": ["billing"]})
    assert second.status_code == 201
    assert replayed(second)
    assert second.content == first.content
    assert second["X-Request-Id"] != first["X-Request-Id"]
    assert [memory.content for memory in memories_of(acme)] == ["pay the invoice"]
    (record,) = records_of(acme)
    assert (record.key, record.status_code) == (KEY, 201)
    assert record.response_body == first.json()


def test_the_body_is_compared_as_json_not_as_bytes(alice_api, acme):
    post(alice_api, '{"content": "same", "importance": 0.7}')
    second = post(alice_api, '{ "importance":0.7,\n "content":"same" }')
    assert second.status_code == 201
    assert replayed(second)
    assert len(memories_of(acme)) == 1


def test_without_a_key_every_post_writes(alice_api, acme):
    for _ in range(2):
        response = alice_api.post("/v1/memories", {"content": "twice"})
        assert response.status_code == 201
        assert not replayed(response)
    assert len(memories_of(acme)) == 2
    assert records_of(acme) == []


def test_the_same_key_with_another_body_is_a_422(alice_api, acme):
    assert post(alice_api, {"content": "first"}).status_code == 201
    assert_error(post(alice_api, {"content": "second"}), 422, "idempotency_mismatch")
    assert [memory.content for memory in memories_of(acme)] == ["first"]
    # The key still replays its own request.
    assert replayed(post(alice_api, {"content": "first"}))


def test_the_same_key_on_another_endpoint_is_a_422(alice_api, acme):
    assert post(alice_api, {"content": "first"}).status_code == 201
    response = post(alice_api, json.dumps(export_file("imported")), path="/v1/import")
    assert_error(response, 422, "idempotency_mismatch")
    assert [memory.content for memory in memories_of(acme)] == ["first"]


def test_another_query_string_is_another_request(alice_api):
    assert post(alice_api, {"content": "x"}).status_code == 201
    response = post(alice_api, {"content": "x"}, path="/v1/memories?source=retry")
    assert_error(response, 422, "idempotency_mismatch")


def test_tenants_use_the_same_key_independently(alice_api, bob_api, acme, globex):
    alices = post(alice_api, {"content": "alice's secret plan"})
    bobs = post(bob_api, {"content": "bob's note"})
    assert (alices.status_code, bobs.status_code) == (201, 201)
    assert not replayed(bobs)
    assert bobs.json()["content"] == "bob's note"
    # And the same body under the same key is still two writes, one per tenant.
    assert not replayed(post(bob_api, {"content": "alice's secret plan"}, key="shared"))
    assert not replayed(post(alice_api, {"content": "alice's secret plan"}, key="shared"))
    assert [memory.content for memory in memories_of(acme)] == ["alice's secret plan"] * 2
    assert [memory.content for memory in memories_of(globex)] == [
        "bob's note",
        "alice's secret plan",
    ]


# --- The key itself ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="too-long"),
        pytest.param("clé", id="not-ascii"),
        pytest.param("tab\there", id="control-character"),
    ],
)
def test_a_malformed_key_is_a_400_and_writes_nothing(alice_api, acme, key):
    body = assert_error(post(alice_api, {"content": "x"}, key=key), 400, "validation_error")
    assert "Idempotency-Key" in body["fields"]
    assert memories_of(acme) == []
    assert records_of(acme) == []


@pytest.mark.parametrize("key", ["k" * 255, "a", "order 42: retry #1 (~!@$%^&*)"])
def test_any_printable_ascii_key_up_to_255_characters_is_accepted(alice_api, key):
    assert post(alice_api, {"content": "x"}, key=key).status_code == 201
    assert replayed(post(alice_api, {"content": "x"}, key=key))


# --- Expiry --------------------------------------------------------------------------------------


def test_a_record_older_than_24_hours_is_ignored_and_the_request_runs_again(alice_api, acme):
    assert post(alice_api, {"content": "daily report"}).status_code == 201
    age_records(acme, dt.timedelta(hours=24, minutes=1))
    again = post(alice_api, {"content": "daily report"})
    assert again.status_code == 201
    assert not replayed(again)
    assert len(memories_of(acme)) == 2
    # The key is fresh again: 24 more hours of replays.
    assert replayed(post(alice_api, {"content": "daily report"}))
    (record,) = records_of(acme)
    assert record.response_body["id"] == again.json()["id"]


def test_a_record_younger_than_24_hours_is_replayed(alice_api, acme):
    assert post(alice_api, {"content": "x"}).status_code == 201
    age_records(acme, dt.timedelta(hours=23, minutes=59))
    assert replayed(post(alice_api, {"content": "x"}))


def test_expired_records_are_purged_by_later_requests_a_bounded_number_at_a_time(
    alice_api, acme, monkeypatch
):
    monkeypatch.setattr(idempotency, "PURGE_BATCH", 2)
    for n in range(3):
        assert post(alice_api, {"content": f"m{n}"}, key=f"old-{n}").status_code == 201
    age_records(acme, dt.timedelta(days=2))
    assert post(alice_api, {"content": "new"}, key="new-1").status_code == 201
    assert sorted(record.key for record in records_of(acme)) == ["new-1", "old-2"]
    assert post(alice_api, {"content": "new"}, key="new-2").status_code == 201
    assert sorted(record.key for record in records_of(acme)) == ["new-1", "new-2"]


def test_a_pending_record_past_its_lease_was_abandoned_and_is_taken_over(alice_api, acme):
    with bind_tenant_database(acme.tenant.id):
        IdempotencyRecord.objects.create(
            key=KEY,
            request_fingerprint="0" * 64,
            created_at=timezone.now() - idempotency.PENDING_LEASE - dt.timedelta(seconds=1),
        )
    response = post(alice_api, {"content": "after a crash"})
    assert response.status_code == 201
    assert not replayed(response)
    (record,) = records_of(acme)
    assert record.status_code == 201


# --- Errors and permissions ----------------------------------------------------------------------


def test_errors_are_not_replayed_a_refused_request_can_be_retried_with_its_key(alice_api, acme):
    set_plan(max_memories=1)
    assert alice_api.post("/v1/memories", {"content": "the only slot"}).status_code == 201
    refused = post(alice_api, {"content": "one too many"})
    assert_error(refused, 402, "quota_exceeded")
    assert records_of(acme) == []
    set_plan(max_memories=2)  # the customer upgrades, and retries with the same key
    retried = post(alice_api, {"content": "one too many"})
    assert retried.status_code == 201
    assert not replayed(retried)
    assert replayed(post(alice_api, {"content": "one too many"}))
    assert len(memories_of(acme)) == 2


def test_a_validation_error_stores_nothing_and_frees_the_key(alice_api, acme):
    assert_error(post(alice_api, {"content": ""}), 400, "validation_error")
    assert records_of(acme) == []
    # Not a 422: the failed request left nothing for the key to match.
    fixed = post(alice_api, {"content": "fixed"})
    assert fixed.status_code == 201
    assert not replayed(fixed)


def test_a_write_rolled_back_after_its_record_was_stored_leaves_the_key_free(
    alice_api, acme, monkeypatch
):
    real_complete = idempotency.Idempotency.complete

    def complete_then_fail(self, response):
        real_complete(self, response)
        raise ApiError(503, "unavailable", "The commit failed.")

    with monkeypatch.context() as patch:
        patch.setattr(idempotency.Idempotency, "complete", complete_then_fail)
        assert_error(post(alice_api, {"content": "x"}), 503, "unavailable")
    assert memories_of(acme) == []
    assert records_of(acme) == []
    retried = post(alice_api, {"content": "x"})
    assert retried.status_code == 201
    assert not replayed(retried)


def test_a_read_only_key_is_refused_before_the_key_is_looked_at(acme):
    reader = ApiClient(acme.issue_key(scopes=["memories:read"]))
    assert_error(post(reader, {"content": "sneaky"}), 403, "forbidden")
    assert records_of(acme) == []
    writer = acme.client()
    assert post(writer, {"content": "sneaky"}).status_code == 201
    # A replay is a write too: still refused to the reader.
    assert_error(post(reader, {"content": "sneaky"}), 403, "forbidden")
    assert_error(post(reader, json.dumps(export_file("x")), path="/v1/import"), 403, "forbidden")
    assert len(memories_of(acme)) == 1


def test_a_replay_does_not_count_as_a_created_memory(alice_api, monkeypatch):
    counted = []
    real = views.MemoryCollectionView.post

    def counting_post(self, request):
        response = real(self, request)
        counted.append(request.usage["memories_created"])
        return response

    monkeypatch.setattr(views.MemoryCollectionView, "post", counting_post)
    post(alice_api, {"content": "x"})
    post(alice_api, {"content": "x"})
    assert counted == [1, 0]


# --- Import --------------------------------------------------------------------------------------


def test_an_import_replayed_imports_nothing_the_second_time(alice_api, acme):
    document = json.dumps(export_file("one", "two", "three"))
    path = "/v1/import?skip_duplicates=false"  # a second run would duplicate everything
    first = post(alice_api, document, path=path)
    assert first.status_code == 200, first.content
    assert first.json()["imported"] == 3
    second = post(alice_api, document, path=path)
    assert second.status_code == 200
    assert replayed(second)
    assert second.content == first.content
    assert [memory.content for memory in memories_of(acme)] == ["one", "two", "three"]
    (record,) = records_of(acme)
    assert (record.status_code, record.response_body["imported"]) == (200, 3)


def test_an_import_of_another_file_under_the_same_key_is_a_422(alice_api, acme):
    assert post(alice_api, json.dumps(export_file("one")), path="/v1/import").status_code == 200
    response = post(alice_api, json.dumps(export_file("two")), path="/v1/import")
    assert_error(response, 422, "idempotency_mismatch")
    assert [memory.content for memory in memories_of(acme)] == ["one"]


def test_an_uploaded_import_is_replayed_too(acme):
    api = acme.client()
    data = json.dumps(export_file("uploaded")).encode()

    def upload(**form):
        file = SimpleUploadedFile("export.json", data, content_type="application/json")
        return api.client.post(
            "/v1/import",
            {"file": file, **form},
            headers={**api.headers, "Idempotency-Key": KEY},
        )

    first = upload(skip_duplicates="false")
    assert first.status_code == 200, first.content
    second = upload(skip_duplicates="false")
    assert replayed(second)
    assert second.content == first.content
    assert_error(upload(skip_duplicates="true"), 422, "idempotency_mismatch")
    assert len(memories_of(acme)) == 1


def test_a_refused_import_stores_nothing(alice_api, acme):
    set_plan(max_memories=1)
    document = json.dumps(export_file("one", "two"))
    assert_error(post(alice_api, document, path="/v1/import"), 402, "quota_exceeded")
    assert records_of(acme) == []
    set_plan(max_memories=None)
    retried = post(alice_api, document, path="/v1/import")
    assert retried.status_code == 200
    assert not replayed(retried)
    assert len(memories_of(acme)) == 2


# --- Concurrent duplicates -----------------------------------------------------------------------


def threaded_tenant():
    """A tenant whose key has been used once: its first use writes the key's last_used_at,
    and concurrent writers of the in-memory SQLite control plane fail instead of waiting."""
    tenant = make_tenant("acme", "alice@example.com")
    assert tenant.client().get("/v1/memories").status_code == 200
    return tenant


def _in_thread(function):
    def run(*args):
        try:
            return function(*args)
        finally:
            connections.close_all()

    return run


def _hold(started: threading.Event, release: threading.Event, calls: list[int]) -> None:
    """Block the first caller until released; later callers pass."""
    calls.append(1)
    if len(calls) == 1:
        started.set()
        assert release.wait(10), "the test never released the first request"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_duplicate_while_the_first_request_runs_is_a_409(monkeypatch):
    acme = threaded_tenant()
    barrier = threading.Barrier(2)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real_validated = views._validated

    def slow_validated(*args, **kwargs):
        _hold(started, release, calls)  # outside the write transaction: nothing is locked
        return real_validated(*args, **kwargs)

    monkeypatch.setattr(views, "_validated", slow_validated)

    @_in_thread
    def first():
        barrier.wait()
        return post(ApiClient(acme.key), {"content": "once"})

    @_in_thread
    def duplicate():
        barrier.wait()
        assert started.wait(10)
        try:
            return post(ApiClient(acme.key), {"content": "once"})
        finally:
            release.set()

    with ThreadPoolExecutor(2) as pool:
        first_response, duplicate_response = pool.submit(first), pool.submit(duplicate)
        first_response, duplicate_response = first_response.result(), duplicate_response.result()
    assert first_response.status_code == 201
    assert_error(duplicate_response, 409, "idempotency_conflict")
    # Once the first has finished, the duplicate's retry is a replay.
    retry = post(ApiClient(acme.key), {"content": "once"})
    assert replayed(retry)
    assert retry.content == first_response.content
    assert len(memories_of(acme)) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_duplicate_during_the_first_ones_write_waits_for_it_and_is_replayed(monkeypatch):
    acme = threaded_tenant()
    barrier = threading.Barrier(2)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real_create = services.create_memory

    def slow_create(**fields):
        _hold(started, release, calls)  # inside the write transaction: the tenant is locked
        return real_create(**fields)

    monkeypatch.setattr(services, "create_memory", slow_create)

    @_in_thread
    def first():
        barrier.wait()
        return post(ApiClient(acme.key), {"content": "once"})

    @_in_thread
    def duplicate():
        barrier.wait()
        assert started.wait(10)
        threading.Timer(0.5, release.set).start()  # while this request waits for the lock
        began = time.monotonic()
        response = post(ApiClient(acme.key), {"content": "once"})
        return response, time.monotonic() - began

    with ThreadPoolExecutor(2) as pool:
        first_response, duplicate_response = pool.submit(first), pool.submit(duplicate)
        first_response = first_response.result()
        duplicate_response, waited = duplicate_response.result()
    assert first_response.status_code == 201
    assert duplicate_response.status_code == 201
    assert replayed(duplicate_response)
    assert duplicate_response.content == first_response.content
    assert waited >= 0.4
    assert len(calls) == 1
    assert len(memories_of(acme)) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_duplicate_import_while_the_first_is_staging_is_a_409(monkeypatch):
    acme = threaded_tenant()
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real_stage = portability._stage

    def slow_stage(*args, **kwargs):
        _hold(started, release, calls)
        return real_stage(*args, **kwargs)

    monkeypatch.setattr(portability, "_stage", slow_stage)
    document = json.dumps(export_file("one", "two"))

    @_in_thread
    def first():
        return post(ApiClient(acme.key), document, path="/v1/import")

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(first)
        assert started.wait(10)
        try:
            duplicate = post(ApiClient(acme.key), document, path="/v1/import")
        finally:
            release.set()
        first_response = running.result()
    assert first_response.status_code == 200
    assert_error(duplicate, 409, "idempotency_conflict")
    retry = post(ApiClient(acme.key), document, path="/v1/import")
    assert replayed(retry)
    assert len(calls) == 1
    assert len(memories_of(acme)) == 2


# --- OpenAPI -------------------------------------------------------------------------------------


def test_the_openapi_document_names_the_header_on_both_operations(db):
    document = Client().get("/v1/openapi.json").json()
    for path in ("/v1/memories", "/v1/import"):
        parameters = document["paths"][path]["post"]["parameters"]
        (header,) = [p for p in parameters if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header"
        assert not header.get("required", False)
        assert "24 hours" in header["description"]
    listing = document["paths"]["/v1/memories"]["get"]["parameters"]
    assert "Idempotency-Key" not in [p["name"] for p in listing]
