"""Stripe webhooks through dj-stripe's endpoint: the tenant's plan and billing status follow
the subscription; bad signatures, replays and out-of-order events change nothing they should
not."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing import services
from billing.models import BillingStatus, TenantBilling
from billing.tasks import end_billing_grace
from tenants.models import AuditEvent, Tenant, User
from tests.conftest import TenantFixture
from tests.fake_stripe import FakeStripe, sign

pytestmark = pytest.mark.django_db


def checkout(tenant: Tenant, fake: FakeStripe, plan: str = "pro") -> dict[str, Any]:
    """Start a checkout as the owner would, and pay it at the fake Stripe."""
    owner = User.objects.get(memberships__tenant=tenant, memberships__role="owner")
    services.start_checkout(
        tenant, plan, actor=owner, success_url="http://testserver/ok", cancel_url="http://x/no"
    )
    session_id = fake.calls("POST", "/v1/checkout/sessions")[-1]
    session = next(o for o in fake.objects.values() if o.get("object") == "checkout.session")
    assert session_id["client_reference_id"] == str(tenant.id)
    return fake.complete_checkout(session["id"])


def plan_of(tenant: Tenant) -> str:
    return Tenant.objects.get(pk=tenant.pk).plan_id


def test_paying_for_pro_moves_the_tenant_to_pro(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    assert plan_of(acme.tenant) == "free"
    subscription = checkout(acme.tenant, fake_stripe)
    assert plan_of(acme.tenant) == "pro"
    billing = TenantBilling.objects.get(tenant=acme.tenant)
    assert billing.status == BillingStatus.ACTIVE
    assert billing.stripe_subscription_id == subscription["id"]
    assert billing.stripe_customer_id == subscription["customer"]
    changes = AuditEvent.objects.filter(tenant=acme.tenant, action="billing.plan_changed")
    assert [(e.metadata["from"], e.metadata["to"]) for e in changes] == [("free", "pro")]


def test_a_bad_signature_is_refused_and_changes_nothing(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    checkout(acme.tenant, fake_stripe)
    subscription_id = TenantBilling.objects.get(tenant=acme.tenant).stripe_subscription_id
    fake_stripe.set_status(subscription_id, "canceled")
    event = fake_stripe.event("customer.subscription.deleted", fake_stripe.objects[subscription_id])
    assert fake_stripe.deliver_event(event, secret="whsec_not_the_secret") == 400
    body = json.dumps(event).encode()
    stale = sign(body, fake_stripe.webhook_secret, timestamp=int(time.time()) - 3600)
    assert (
        Client()
        .post(webhook_path, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=stale)
        .status_code
        == 400
    )
    assert Client().post(webhook_path, body, content_type="application/json").status_code == 400
    assert plan_of(acme.tenant) == "pro"
    # The same event, signed with the endpoint's secret, is applied.
    assert fake_stripe.deliver_event(event) == 200
    assert plan_of(acme.tenant) == "free"


def test_a_replayed_event_changes_nothing_the_second_time(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    subscription = checkout(acme.tenant, fake_stripe)
    fake_stripe.set_status(subscription["id"], "canceled")
    deleted = fake_stripe.send("customer.subscription.deleted", subscription)
    assert plan_of(acme.tenant) == "free"
    # Staff put the tenant back on Pro by hand; the old event, delivered again, is not re-run.
    fake_stripe.set_status(subscription["id"], "active")
    services.change_plan(acme.tenant, "pro", reason="test", actor_label="staff")
    audits = AuditEvent.objects.count()
    assert fake_stripe.deliver_event(deleted) == 200
    assert plan_of(acme.tenant) == "pro"
    assert AuditEvent.objects.count() == audits


def test_events_out_of_order_leave_the_current_state(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    subscription = checkout(acme.tenant, fake_stripe)
    created = fake_stripe.event("customer.subscription.created", dict(subscription))
    fake_stripe.set_status(subscription["id"], "canceled")
    fake_stripe.send("customer.subscription.deleted", subscription)
    assert plan_of(acme.tenant) == "free"
    # The "created" event arrives late: the subscription is re-read, still canceled.
    assert fake_stripe.deliver_event(created) == 200
    assert plan_of(acme.tenant) == "free"
    assert TenantBilling.objects.get(tenant=acme.tenant).status == BillingStatus.CANCELED


def test_an_upgrade_from_pro_to_team_follows_the_subscription(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    from billing.models import Plan

    subscription = checkout(acme.tenant, fake_stripe)
    team_price = fake_stripe.objects[Plan.objects.get(code="team").stripe_price_id]
    subscription["items"]["data"][0]["price"] = team_price
    fake_stripe.send("customer.subscription.updated", subscription)
    assert plan_of(acme.tenant) == "team"


def test_a_failed_payment_keeps_the_plan_for_the_grace_period_then_drops_to_free(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str, settings: Any
) -> None:
    settings.ENGRAM_BILLING_GRACE_DAYS = 7
    subscription = checkout(acme.tenant, fake_stripe)
    fake_stripe.fail_payment(subscription["id"])
    billing = TenantBilling.objects.get(tenant=acme.tenant)
    assert billing.status == BillingStatus.PAST_DUE
    assert plan_of(acme.tenant) == "pro"
    assert billing.grace_until is not None
    expected = timezone.now() + dt.timedelta(days=7)
    assert abs((billing.grace_until - expected).total_seconds()) < 60
    # A second failure notice does not push the deadline further.
    fake_stripe.fail_payment(subscription["id"])
    assert TenantBilling.objects.get(tenant=acme.tenant).grace_until == billing.grace_until

    before_deadline = billing.grace_until - dt.timedelta(hours=1)
    assert end_billing_grace.apply(kwargs={"now": before_deadline.isoformat()}).get() == 0
    assert plan_of(acme.tenant) == "pro"
    after_deadline = billing.grace_until + dt.timedelta(hours=1)
    assert end_billing_grace.apply(kwargs={"now": after_deadline.isoformat()}).get() == 1
    assert plan_of(acme.tenant) == "free"
    change = AuditEvent.objects.filter(action="billing.plan_changed").first()
    assert change is not None and change.metadata["reason"] == "grace_expired"


def test_paying_the_invoice_after_a_failure_ends_the_grace(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    subscription = checkout(acme.tenant, fake_stripe)
    fake_stripe.fail_payment(subscription["id"])
    fake_stripe.set_status(subscription["id"], "active")
    fake_stripe.send("invoice.paid", fake_stripe.invoice(subscription, paid=True))
    billing = TenantBilling.objects.get(tenant=acme.tenant)
    assert (billing.status, billing.grace_until) == (BillingStatus.ACTIVE, None)
    services.end_expired_grace(now=timezone.now() + dt.timedelta(days=30))
    assert plan_of(acme.tenant) == "pro"


def test_events_of_customers_we_do_not_know_are_ignored(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    customer = fake_stripe.handle("POST", "/v1/customers", {"email": "x@elsewhere.example"})[1]
    stranger = fake_stripe.put(
        {
            "id": "sub_stranger",
            "object": "subscription",
            "customer": customer["id"],
            "status": "active",
            "created": int(time.time()),
            "metadata": {},
            "items": {"object": "list", "data": [], "has_more": False, "url": "/v1/x"},
        }
    )
    event = fake_stripe.event("customer.subscription.updated", stranger)
    assert fake_stripe.deliver_event(event) == 200
    assert plan_of(acme.tenant) == "free"
    assert not AuditEvent.objects.filter(action="billing.plan_changed").exists()


def test_the_beat_schedules_the_billing_tasks(settings: Any) -> None:
    from engram_cloud.celery import app

    app.loader.import_default_modules()
    schedule = {
        entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    assert schedule["billing.tasks.end_billing_grace"] == 3600.0
    assert schedule["billing.tasks.report_usage_to_stripe"] == 3600.0
    assert schedule["billing.tasks.reconcile_stripe_usage"] == 86400.0
    assert set(schedule) <= set(app.tasks)
