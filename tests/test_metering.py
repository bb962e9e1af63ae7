"""Usage metering: one event per request, flushed in batches, never lost or counted twice."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command

from billing import usage
from billing.models import DailyUsage, UsageEvent
from tests.conftest import ApiClient


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def make_requests(api, count: int) -> list[str]:
    """`count` requests of every kind that is metered differently, with known request ids."""
    ids = []
    for number in range(count):
        rid = request_id()
        if number % 3 == 0:
            response = api.post(
                "/v1/memories", {"content": f"m{number}"}, headers={"X-Request-Id": rid}
            )
        elif number % 3 == 1:
            response = api.post("/v1/search", {"query": "m"}, headers={"X-Request-Id": rid})
        else:
            response = api.get("/v1/memories", **{"X-Request-Id": rid})
        assert response["X-Request-Id"] == rid
        ids.append(rid)
    return ids


def totals(tenant) -> dict[str, int]:
    rows = DailyUsage.objects.filter(tenant=tenant)
    return {name: sum(getattr(row, name) for row in rows) for name in usage.METRICS}


def test_each_request_is_one_event_with_the_right_counters(alice_api, acme):
    ids = make_requests(alice_api, 9)
    assert UsageEvent.objects.count() == 0  # nothing written while serving
    assert usage.flush_usage() == 9
    assert set(UsageEvent.objects.values_list("request_id", flat=True)) == set(ids)
    assert totals(acme.tenant) == {"api_calls": 9, "searches": 3, "memories_created": 3}


def test_a_repeated_flush_counts_nothing_twice(alice_api, acme):
    make_requests(alice_api, 6)
    raw = usage.buffer().peek(100)
    usage.flush_usage()
    for item in raw:  # the same events buffered again, as after a crash before removal
        usage.buffer().push(item)
    assert usage.flush_usage() == 0
    assert UsageEvent.objects.count() == 6
    assert totals(acme.tenant)["api_calls"] == 6


def test_a_flush_killed_after_writing_loses_nothing_and_the_rerun_counts_once(
    alice_api, acme, monkeypatch
):
    make_requests(alice_api, 5)

    def killed(count: int) -> None:
        raise SystemExit("flusher killed between commit and buffer removal")

    with monkeypatch.context() as patch:
        patch.setattr(usage.buffer(), "remove", killed)
        with pytest.raises(SystemExit):
            usage.flush_usage()
    make_requests(alice_api, 4)
    usage.flush_usage()
    assert UsageEvent.objects.count() == 9
    assert totals(acme.tenant)["api_calls"] == 9


def test_a_failed_flush_keeps_the_batch(alice_api, acme, monkeypatch):
    make_requests(alice_api, 3)
    with monkeypatch.context() as patch:
        patch.setattr(usage, "_add_to_rollups", lambda events: 1 / 0)
        assert usage.flush_usage() == 0
    assert UsageEvent.objects.count() == 0  # the transaction rolled back
    assert len(usage.buffer()) == 3
    assert usage.flush_usage() == 3


def test_refused_requests_are_not_metered(alice_api, acme):
    ApiClient("ek_live_nope").get("/v1/memories")
    alice_api.post("/v1/memories", {"content": ""})  # handled: a 400 is still an API call
    usage.flush_usage()
    assert list(UsageEvent.objects.values_list("status_code", flat=True)) == [400]


def test_the_flush_usage_command_runs_one_flush(alice_api):
    make_requests(alice_api, 2)
    out = io.StringIO()
    call_command("flush_usage", stdout=out)
    assert "Stored 2 new usage events; 0 still buffered." in out.getvalue()


def test_the_usage_endpoint_shows_this_month_against_the_plan(alice_api, acme):
    make_requests(alice_api, 6)
    usage.flush_usage()
    body = alice_api.get("/v1/usage").json()
    assert body["plan"] == "free"
    # This call is metered once it is answered, so it is not in its own figures.
    assert body["metrics"]["api_calls"] == {"used": 6, "limit": 50_000}
    assert body["metrics"]["searches"]["used"] == 2
    assert body["metrics"]["memories"] == {"used": 2, "limit": 1000}
    assert body["days"][0]["api_calls"] == 6


def test_an_outsider_sees_only_their_own_usage(alice_api, bob_api):
    make_requests(alice_api, 6)
    usage.flush_usage()
    body = bob_api.get("/v1/usage").json()
    assert body["metrics"]["api_calls"]["used"] == 0
    assert body["days"] == []


def test_an_import_counts_the_memories_it_created(alice_api, acme):
    """As memory_import over MCP does: the memories an import adds are billed as created."""
    file = {"version": "1.0", "memories": [{"content": "one"}, {"content": "two"}]}
    assert alice_api.post("/v1/import", file).json()["imported"] == 2
    assert alice_api.post("/v1/import", file).json()["skipped"] == 2
    usage.flush_usage()
    assert totals(acme.tenant)["memories_created"] == 2
