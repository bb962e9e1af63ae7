"""Usage reported to Stripe's Billing Meters: each closed hour once, with a deterministic
identifier, a row only after Stripe accepted it, retried after a 500 without being counted
twice; the daily reconciliation logs any difference with our totals."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import pytest
import stripe

from billing import metering, services, usage
from billing.models import MeterReport
from billing.tasks import reconcile_stripe_usage, report_usage_to_stripe
from tests.conftest import TenantFixture
from tests.fake_stripe import FakeStripe

pytestmark = pytest.mark.django_db

NOW = dt.datetime.now(dt.UTC).replace(minute=30, second=0, microsecond=0)
HOUR_1 = NOW.replace(minute=0) - dt.timedelta(hours=3)
HOUR_2 = HOUR_1 + dt.timedelta(hours=1)


def traffic(tenant: TenantFixture, at: dt.datetime, *, calls: int, searches: int = 0) -> None:
    """`calls` metered requests at `at`, `searches` of them searches, through the pipeline."""
    for number in range(calls):
        usage.record(
            usage.make_event(
                request_id=str(uuid.uuid4()),
                tenant_id=str(tenant.tenant.id),
                route="search" if number < searches else "writes",
                method="POST",
                status_code=200,
                searches=1 if number < searches else 0,
                memories_created=0 if number < searches else 1,
                at=at + dt.timedelta(minutes=number),
            )
        )
    usage.flush_usage()


@pytest.fixture
def billed(acme: TenantFixture, fake_stripe: FakeStripe) -> str:
    """acme has a Stripe customer; globex does not (it is not billed)."""
    return services.ensure_customer(acme.tenant, email=acme.owner_email)


def received(fake: FakeStripe) -> dict[tuple[str, int], tuple[str, int]]:
    """What the fake Stripe counted: (event name, hour) → (customer, value)."""
    return {
        (event["event_name"], event["timestamp"]): (
            event["payload"]["stripe_customer_id"],
            int(event["payload"]["value"]),
        )
        for event in fake.meter_events.values()
    }


def test_each_closed_hour_is_reported_once_per_meter(
    acme: TenantFixture, globex: TenantFixture, billed: str, fake_stripe: FakeStripe
) -> None:
    traffic(acme, HOUR_1, calls=5, searches=2)
    traffic(acme, HOUR_2, calls=1)
    traffic(globex, HOUR_1, calls=4)
    # This hour is still open: not reported yet.
    traffic(acme, NOW.replace(minute=0), calls=2)

    result = metering.report_usage(now=NOW)
    assert (result.reported, result.failed) == (5, 0)
    h1, h2 = int(HOUR_1.timestamp()), int(HOUR_2.timestamp())
    assert received(fake_stripe) == {
        ("engram_api_calls", h1): (billed, 5),
        ("engram_searches", h1): (billed, 2),
        ("engram_memories_created", h1): (billed, 3),
        ("engram_api_calls", h2): (billed, 1),
        ("engram_memories_created", h2): (billed, 1),
    }
    identifiers = set(fake_stripe.meter_events)
    assert f"engram-{acme.tenant.id}-api_calls-{HOUR_1:%Y%m%dT%H}" in identifiers
    assert MeterReport.objects.count() == 5

    sent = len(fake_stripe.calls("POST", "/v1/billing/meter_events"))
    assert metering.report_usage(now=NOW).reported == 0
    assert len(fake_stripe.calls("POST", "/v1/billing/meter_events")) == sent


def test_a_report_stripe_refused_is_retried_and_counted_once(
    acme: TenantFixture, billed: str, fake_stripe: FakeStripe
) -> None:
    traffic(acme, HOUR_1, calls=3)
    # Stripe records the first event but the answer is lost (500), for each of the SDK's
    # attempts.
    fake_stripe.fail_meter_events = stripe.max_network_retries + 1
    fake_stripe.accept_then_fail = True
    first = metering.report_usage(now=NOW)
    assert first.failed == 1 and first.reported == 1
    assert MeterReport.objects.count() == 1  # only the one Stripe accepted

    second = report_usage_to_stripe.apply().get()
    assert second == {"reported": 1, "failed": 0}
    assert MeterReport.objects.count() == 2
    h1 = int(HOUR_1.timestamp())
    assert received(fake_stripe) == {
        ("engram_api_calls", h1): (billed, 3),
        ("engram_memories_created", h1): (billed, 3),
    }
    posts = fake_stripe.calls("POST", "/v1/billing/meter_events")
    identifiers = [call["identifier"] for call in posts]
    assert len(identifiers) > len(set(identifiers))  # sent more than once, counted once


def test_nothing_is_reported_while_stripe_answers_500(
    acme: TenantFixture, billed: str, fake_stripe: FakeStripe
) -> None:
    traffic(acme, HOUR_1, calls=2)
    fake_stripe.fail_meter_events = 100
    result = metering.report_usage(now=NOW)
    assert (result.reported, result.failed) == (0, 2)
    assert not MeterReport.objects.exists() and not fake_stripe.meter_events
    fake_stripe.fail_meter_events = 0
    assert metering.report_usage(now=NOW).reported == 2


def test_reconciliation_logs_what_differs_from_our_totals(
    acme: TenantFixture, billed: str, fake_stripe: FakeStripe, caplog: Any
) -> None:
    traffic(acme, HOUR_1, calls=3)
    metering.report_usage(now=NOW)
    day = HOUR_1.date()
    assert metering.reconcile(day) == []

    # An event of an hour already reported arrives late: our total is one higher.
    traffic(acme, HOUR_1 + dt.timedelta(minutes=50), calls=1)
    with caplog.at_level(logging.WARNING, logger="billing.metering"):
        assert reconcile_stripe_usage.apply(kwargs={"day": day.isoformat()}).get() == 2
    differences = {(d.metric, d.ours, d.reported) for d in metering.reconcile(day)}
    assert differences == {("api_calls", 4, 3), ("memories_created", 4, 3)}
    assert "stripe usage differs" in caplog.text


def test_with_billing_off_nothing_is_reported(
    acme: TenantFixture, billed: str, fake_stripe: FakeStripe, settings: Any
) -> None:
    traffic(acme, HOUR_1, calls=2)
    settings.STRIPE_SECRET_KEY = ""
    assert metering.report_usage(now=NOW).reported == 0
    assert not fake_stripe.calls("POST", "/v1/billing/meter_events")
