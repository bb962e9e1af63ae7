"""The gateway stages of the /v1 pipeline: rate limits (429) and plan quotas (402)."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading

import pytest
from django.utils import timezone
from django_redis import get_redis_connection

from billing import ratelimit
from billing import services as billing_services
from billing.models import Plan
from billing.plans import plans
from billing.ratelimit import local_buckets, redis_buckets
from engram_cloud.metrics import RATE_LIMIT_BACKEND_ERRORS
from memories.models import Memory
from memories.tenant_db import bind_tenant_database


@pytest.fixture(autouse=True)
def fresh_limits():
    plans.clear()
    local_buckets.clear()
    redis_buckets.clear()
    yield
    plans.clear()
    local_buckets.clear()
    redis_buckets.clear()


def set_plan(code: str = "free", **limits: int | None) -> None:
    Plan.objects.filter(code=code).update(**limits)
    plans.clear()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    return body


# --- Rate limits ---------------------------------------------------------------------------------
# Buckets that must run dry within a test refill at one token a minute: on a loaded machine a
# few requests can take longer than a faster refill.


def test_a_burst_past_the_bucket_gets_429_with_retry_after(alice_api):
    set_plan(requests_per_minute=1, burst=3)
    for _ in range(3):
        assert alice_api.get("/v1/memories").status_code == 200
    response = alice_api.get("/v1/memories")
    body = assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert body["retry_after"] == int(response["Retry-After"])


def test_every_response_says_how_much_of_the_budget_is_left(alice_api):
    set_plan(requests_per_minute=120, burst=30)
    response = alice_api.get("/v1/memories")
    # 30 at once, refilled in 15 s: 120 a minute (q=30;w=60 would say 30 a minute).
    assert response["RateLimit-Policy"] == '"reads";q=30;w=15'
    assert response["RateLimit"] == '"reads";r=29;t=1'
    set_plan(requests_per_minute=600, burst=100)
    assert alice_api.post("/v1/search", {"query": "x"})["RateLimit-Policy"] == (
        '"search";q=100;w=10'
    )


def test_route_groups_have_their_own_buckets(alice_api):
    set_plan(requests_per_minute=1, burst=1)
    assert alice_api.get("/v1/memories").status_code == 200
    assert_error(alice_api.get("/v1/memories"), 429, "rate_limited")
    assert alice_api.post("/v1/memories", {"content": "writes still flow"}).status_code == 201
    assert alice_api.post("/v1/search", {"query": "flow"}).status_code == 200


def test_one_tenant_exhausting_its_bucket_does_not_slow_another(alice_api, bob_api):
    set_plan(requests_per_minute=1, burst=1)
    alice_api.get("/v1/memories")
    assert_error(alice_api.get("/v1/memories"), 429, "rate_limited")
    assert bob_api.get("/v1/memories").status_code == 200


def test_staff_can_override_a_tenants_limit(alice_api, acme):
    set_plan(requests_per_minute=600, burst=100)
    acme.tenant.rate_limit_per_minute, acme.tenant.rate_limit_burst = 1, 1
    acme.tenant.save()
    alice_api.get("/v1/memories")
    assert_error(alice_api.get("/v1/memories"), 429, "rate_limited")


def test_a_plan_change_applies_from_the_next_request(alice_api, acme):
    set_plan("team", requests_per_minute=1, burst=1)
    assert alice_api.get("/v1/memories").status_code == 200  # on Free: a bucket of 30
    billing_services.change_plan(acme.tenant, "team", reason="upgraded")
    assert alice_api.get("/v1/memories").status_code == 200
    assert_error(alice_api.get("/v1/memories"), 429, "rate_limited")


def test_a_plan_without_a_limit_is_never_rate_limited(alice_api):
    set_plan(requests_per_minute=None, burst=None)
    for _ in range(50):
        response = alice_api.get("/v1/memories")
        assert response.status_code == 200
    assert "RateLimit" not in response


def test_redis_down_means_requests_are_served_and_counted(alice_api, settings):
    set_plan(requests_per_minute=60, burst=1)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    from billing import ratelimit

    ratelimit.redis_buckets._script = None
    before = RATE_LIMIT_BACKEND_ERRORS._value.get()
    for _ in range(3):
        assert alice_api.get("/v1/memories").status_code == 200
    assert RATE_LIMIT_BACKEND_ERRORS._value.get() - before == 3
    ratelimit.redis_buckets._script = None


def test_a_large_bucket_lends_tokens_to_a_worker_but_is_never_exceeded(alice_api, monkeypatch):
    # With Redis, a bucket of more than LEASE_SHARE tokens lends a worker several per trip.
    monkeypatch.setattr(ratelimit, "LEASE_SHARE", 10)
    set_plan(requests_per_minute=1, burst=50)
    statuses = [alice_api.get("/v1/memories").status_code for _ in range(60)]
    assert statuses == [200] * 50 + [429] * 10


def test_with_a_large_bucket_the_quota_still_stops_at_exactly_its_limit(alice_api, monkeypatch):
    monkeypatch.setattr(ratelimit, "LEASE_SHARE", 10)
    set_plan(requests_per_minute=60_000, burst=500, max_api_calls_per_month=40)
    for n in range(40):
        assert alice_api.post("/v1/memories", {"content": f"m{n}"}).status_code == 201
    body = assert_error(alice_api.post("/v1/memories", {"content": "no"}), 402, "quota_exceeded")
    assert (body["metric"], body["current"], body["limit"]) == ("api_calls_per_month", 40, 40)


# --- Quotas --------------------------------------------------------------------------------------


def test_the_memories_quota_refuses_the_next_memory_and_stores_nothing(alice_api):
    set_plan(max_memories=3)
    ids = [alice_api.post("/v1/memories", {"content": f"m{n}"}).json()["id"] for n in range(3)]
    body = assert_error(
        alice_api.post("/v1/memories", {"content": "one too many"}), 402, "quota_exceeded"
    )
    assert (body["metric"], body["current"], body["limit"]) == ("memories", 3, 3)
    assert body["upgrade_url"]
    assert alice_api.get("/v1/stats").json()["total_memories"] == 3
    assert alice_api.delete(f"/v1/memories/{ids[0]}").status_code == 204
    assert alice_api.post("/v1/memories", {"content": "a freed slot"}).status_code == 201


def test_the_monthly_api_call_quota_is_a_402_never_a_429(alice_api):
    set_plan(max_api_calls_per_month=4, requests_per_minute=None, burst=None)
    for _ in range(4):
        assert alice_api.get("/v1/memories").status_code == 200
    body = assert_error(alice_api.post("/v1/memories", {"content": "x"}), 402, "quota_exceeded")
    assert (body["metric"], body["current"], body["limit"]) == ("api_calls_per_month", 4, 4)
    assert body["upgrade_url"] == "/console/w/acme/billing"


def test_reads_and_exports_are_never_refused_by_the_api_call_quota(alice_api):
    """Over the quota (after a downgrade, say) a workspace can still read and take its data."""
    set_plan(max_api_calls_per_month=1, requests_per_minute=None, burst=None)
    assert alice_api.post("/v1/memories", {"content": "kept"}).status_code == 201
    assert_error(alice_api.post("/v1/memories", {"content": "x"}), 402, "quota_exceeded")
    assert alice_api.get("/v1/memories").json()["data"][0]["content"] == "kept"
    assert alice_api.request("HEAD", "/v1/memories").status_code == 200
    assert alice_api.get("/v1/stats").status_code == 200
    assert alice_api.get("/v1/export").status_code == 200


def test_with_a_rate_limit_too_the_quotas_stop_at_exactly_their_limit(alice_api):
    # The token bucket's trip to Redis also reads the month's counters: both stay exact.
    set_plan(
        max_api_calls_per_month=5, max_searches_per_month=2, requests_per_minute=600, burst=100
    )
    for n in range(2):
        assert alice_api.post("/v1/search", {"query": "x"}).status_code == 200
        assert alice_api.post("/v1/memories", {"content": f"m{n}"}).status_code == 201
    body = assert_error(alice_api.post("/v1/search", {"query": "x"}), 402, "quota_exceeded")
    assert (body["metric"], body["current"], body["limit"]) == ("searches_per_month", 2, 2)
    assert alice_api.post("/v1/memories", {"content": "the fifth call"}).status_code == 201
    body = assert_error(
        alice_api.post("/v1/memories", {"content": "one too many"}), 402, "quota_exceeded"
    )
    assert (body["metric"], body["current"], body["limit"]) == ("api_calls_per_month", 5, 5)
    assert "RateLimit" in alice_api.post("/v1/memories", {"content": "again"})


def test_the_monthly_search_quota_stops_searches_but_not_reads(alice_api):
    set_plan(max_searches_per_month=2)
    for _ in range(2):
        assert alice_api.post("/v1/search", {"query": "x"}).status_code == 200
    body = assert_error(alice_api.post("/v1/search", {"query": "x"}), 402, "quota_exceeded")
    assert body["metric"] == "searches_per_month"
    assert alice_api.get("/v1/memories").status_code == 200


def test_expired_memories_give_back_their_room_under_the_memories_quota(alice_api, acme):
    """Expired memories cannot be read, listed or deleted: they must not hold the quota."""
    set_plan(max_memories=3)
    for n in range(3):
        scratch = {"content": f"scratch {n}", "ttl_seconds": 60}
        assert alice_api.post("/v1/memories", scratch).status_code == 201
    assert_error(alice_api.post("/v1/memories", {"content": "x"}), 402, "quota_exceeded")
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert alice_api.get("/v1/stats").json()["total_memories"] == 0
    assert alice_api.get("/v1/usage").json()["metrics"]["memories"]["used"] == 0
    assert alice_api.post("/v1/memories", {"content": "room again"}).status_code == 201
    assert alice_api.get("/v1/usage").json()["metrics"]["memories"]["used"] == 1


def storage_used(api) -> int:
    return api.get("/v1/usage").json()["metrics"]["storage_bytes"]["used"]


def fill(api, count: int) -> list[int]:
    """`count` memories of 50 KB each; their ids."""
    return [
        api.post("/v1/memories", {"content": f"{n} " + "word " * 10_000}).json()["id"]
        for n in range(count)
    ]


def test_the_storage_quota_refuses_whatever_adds_data_and_deleting_makes_room(alice_api):
    set_plan(requests_per_minute=None, burst=None)
    kept = alice_api.post("/v1/memories", {"content": "kept"}).json()["id"]
    ids = fill(alice_api, 20)
    used = storage_used(alice_api)
    set_plan(max_storage_bytes=used, requests_per_minute=None, burst=None)
    file = {"version": "1.0", "memories": [{"content": "imported"}]}
    for refused in (
        alice_api.post("/v1/memories", {"content": "x"}),
        alice_api.patch(f"/v1/memories/{kept}", {"tags": ["new"]}),  # keeps a version
        alice_api.post("/v1/import", file),
    ):
        body = assert_error(refused, 402, "quota_exceeded")
        assert (body["metric"], body["current"], body["limit"]) == ("storage_bytes", used, used)
    assert alice_api.get("/v1/stats").json()["total_memories"] == 21
    assert alice_api.get(f"/v1/memories/{kept}").json()["version"] == 1
    for memory_id in ids:
        assert alice_api.delete(f"/v1/memories/{memory_id}").status_code == 204
    assert storage_used(alice_api) < used - 1_000_000  # the 1 MB of content is freed
    assert alice_api.post("/v1/memories", {"content": "room again"}).status_code == 201
    assert alice_api.patch(f"/v1/memories/{kept}", {"tags": ["new"]}).status_code == 200
    assert alice_api.post("/v1/import", file).json()["imported"] == 1


def test_quotas_are_per_tenant(alice_api, bob_api):
    set_plan(max_searches_per_month=1)
    alice_api.post("/v1/search", {"query": "x"})
    assert_error(alice_api.post("/v1/search", {"query": "x"}), 402, "quota_exceeded")
    assert bob_api.post("/v1/search", {"query": "x"}).status_code == 200


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the usage outbox needs Redis")
def test_a_usage_send_racing_the_quota_read_is_counted_exactly_once(acme, monkeypatch):
    """The rate limiter reads the month's counter in Redis, and adds what this process has
    counted but not sent. Were the process's sender thread to send between those two reads,
    its increments would be in neither and the quota would let a request past its limit."""
    from billing import usage

    month = usage._month(timezone.now())
    tenant_id = str(acme.tenant.id)
    counter = usage.quota_counters(tenant_id, [("api_calls", 100)])
    usage.redis_buffer.add(json.dumps({"seed": True}), {(tenant_id, "api_calls", month): 2})
    usage.redis_buffer.send()  # the counter exists in Redis: 2
    usage.redis_buffer.add(json.dumps({"later": True}), {(tenant_id, "api_calls", month): 3})

    script = redis_buckets._script or get_redis_connection("default").register_script(
        ratelimit.TOKEN_BUCKET_LUA
    )
    sender = threading.Thread(target=usage.redis_buffer.send)

    def read_then_let_the_sender_run(*args, **kwargs):
        result = script(*args, **kwargs)
        sender.start()  # the sender thread wakes up right after the counter was read
        sender.join(timeout=0.2)
        return result

    monkeypatch.setattr(redis_buckets, "_script", read_then_let_the_sender_run)
    limit = ratelimit.Limit(per_minute=6000, burst=100)
    decision = ratelimit.take_token(tenant_id, "writes", limit, counter)
    sender.join()
    assert decision.read == (5,)
    assert usage.month_usage(tenant_id, "api_calls") == 5
