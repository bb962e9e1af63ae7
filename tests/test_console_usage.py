"""The usage dashboard and its chart endpoint: this period against the plan, 30 days per day."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from billing.models import DailyUsage
from billing.usage import flush_usage
from tenants import services
from tests.conftest import ApiClient
from tests.console_cast import Cast, make_cast


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


def test_the_dashboard_counts_api_calls_searches_memories_and_storage(cast: Cast) -> None:
    _, secret = services.create_api_key(tenant=cast.tenant, name="agent 2")
    api = ApiClient(secret)
    assert (
        api.post("/v1/memories", {"content": "The deploy runbook lives in ops/"}).status_code == 201
    )
    assert api.post("/v1/search", {"query": "runbook"}).status_code == 200
    flush_usage()
    page = cast.client("vic").get("/console/w/acme/").content.decode()
    figures = {
        label: value for label, value in re.findall(r'data-metric="([a-z-]+)">([^<]+)<', page)
    }
    assert figures["memories-stored"] == "2"  # the cast's and the API's
    assert figures["searches-this-month"] == "1"
    assert figures["api-calls-this-month"] == "2"
    assert figures["storage-used"].endswith("KB")
    assert "of 500,000" in page  # the Team plan's memories
    assert 'data-src="/console/api/w/acme/usage/daily"' in page


def test_the_chart_endpoint_gives_30_days_with_zeros(cast: Cast) -> None:
    today = timezone.now().astimezone(dt.UTC).date()
    DailyUsage.objects.create(tenant=cast.tenant, day=today, api_calls=7, searches=3)
    DailyUsage.objects.create(tenant=cast.tenant, day=today - dt.timedelta(days=40), api_calls=99)
    body = cast.client("vic").get("/console/api/w/acme/usage/daily").json()
    assert body["workspace"] == "acme" and len(body["days"]) == 30
    assert body["days"][-1] == {
        "day": today.isoformat(),
        "api_calls": 7,
        "searches": 3,
        "memories_created": 0,
    }
    assert sum(day["api_calls"] for day in body["days"]) == 7
    assert body["days"][0]["day"] == (today - dt.timedelta(days=29)).isoformat()


def test_the_chart_endpoint_is_404_for_outsiders(cast: Cast) -> None:
    DailyUsage.objects.create(tenant=cast.tenant, day=timezone.now().date(), api_calls=5)
    response = cast.client("charlie").get("/console/api/w/acme/usage/daily")
    assert response.status_code == 404
    assert "api_calls" not in response.content.decode()


def test_the_chart_endpoint_bounds_days(cast: Cast) -> None:
    client = cast.client("vic")
    assert len(client.get("/console/api/w/acme/usage/daily?days=1000").json()["days"]) == 90
    assert client.get("/console/api/w/acme/usage/daily?days=abc").status_code == 422
