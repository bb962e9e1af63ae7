"""sync_stripe_prices and stripe_webhook_endpoint against the fake Stripe."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from djstripe.models import Price, WebhookEndpoint

from billing.models import Plan
from tests.fake_stripe import FakeStripe

pytestmark = pytest.mark.django_db

EVENTS = {
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
}


def run(name: str, **options: Any) -> str:
    out = io.StringIO()
    call_command(name, stdout=out, **options)
    return out.getvalue()


def test_each_paid_plan_gets_a_monthly_price(fake_stripe: FakeStripe) -> None:
    run("sync_stripe_prices")
    prices = {p.code: p.stripe_price_id for p in Plan.objects.all()}
    assert prices["free"] == "" and prices["enterprise"] == ""
    for code, cents in [("pro", 2900), ("team", 9900)]:
        price = fake_stripe.objects[prices[code]]
        assert (price["unit_amount"], price["lookup_key"]) == (cents, f"engram_{code}_monthly")
        assert price["recurring"]["interval"] == "month"
        assert Price.objects.get(id=prices[code]).unit_amount == cents  # stored by dj-stripe


def test_running_it_again_changes_nothing(fake_stripe: FakeStripe) -> None:
    run("sync_stripe_prices")
    before = {p.code: p.stripe_price_id for p in Plan.objects.all()}
    run("sync_stripe_prices")
    assert {p.code: p.stripe_price_id for p in Plan.objects.all()} == before
    assert len(fake_stripe.calls("POST", "/v1/prices")) == 2
    assert len(fake_stripe.calls("POST", "/v1/products")) == 2


def test_a_new_amount_gets_a_new_price_that_takes_the_lookup_key(fake_stripe: FakeStripe) -> None:
    run("sync_stripe_prices")
    old = Plan.objects.get(code="pro").stripe_price_id
    Plan.objects.filter(code="pro").update(price_cents_per_month=3900)
    run("sync_stripe_prices")
    new = Plan.objects.get(code="pro").stripe_price_id
    assert new != old
    assert fake_stripe.objects[new]["unit_amount"] == 3900
    assert fake_stripe.objects[new]["product"] == fake_stripe.objects[old]["product"]
    assert fake_stripe.objects[old]["lookup_key"] is None


def test_the_commands_refuse_to_run_with_billing_off(db: None, settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    with pytest.raises(CommandError, match="Billing is off"):
        run("sync_stripe_prices")
    with pytest.raises(CommandError, match="Billing is off"):
        run("stripe_webhook_endpoint", base_url="https://engram.example")


def test_the_webhook_endpoint_is_registered_with_its_secret(fake_stripe: FakeStripe) -> None:
    url = run("stripe_webhook_endpoint", base_url="https://engram.example").strip()
    endpoint = WebhookEndpoint.objects.get()
    assert url == f"https://engram.example/stripe/webhook/{endpoint.djstripe_uuid}/"
    assert endpoint.secret == fake_stripe.webhook_secret and endpoint.secret.startswith("whsec_")
    [registered] = fake_stripe.calls("POST", "/v1/webhook_endpoints")
    assert registered["url"] == url
    assert set(registered["enabled_events"]) == EVENTS


def test_local_stores_the_secret_from_the_settings(db: None, settings: Any) -> None:
    settings.STRIPE_WEBHOOK_SECRET = ""
    with pytest.raises(CommandError, match="STRIPE_WEBHOOK_SECRET"):
        run("stripe_webhook_endpoint", base_url="https://engram.example", local=True)
    settings.STRIPE_WEBHOOK_SECRET = "whsec_from_the_dashboard"
    url = run("stripe_webhook_endpoint", base_url="https://engram.example", local=True).strip()
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret == "whsec_from_the_dashboard"
    assert url.endswith(f"/stripe/webhook/{endpoint.djstripe_uuid}/")
