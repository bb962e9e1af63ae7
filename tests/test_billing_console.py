"""The console's billing page: owners only; upgrades go through Stripe Checkout and the
customer portal (the fake Stripe); with no Stripe keys billing is off and the page says so."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from billing import services
from billing.models import Plan, TenantBilling
from tenants.models import AuditEvent, Tenant
from tests.console_cast import Cast, make_cast
from tests.fake_stripe import FakeStripe


@pytest.fixture
def team_cast(db: None) -> Cast:
    """acme on Team: alice (owner), adam (admin), mia (member), vic (viewer); charlie outside."""
    return make_cast()


@pytest.fixture
def cast(team_cast: Cast) -> Cast:
    """The same workspace after it dropped to Free."""
    services.change_plan(team_cast.tenant, "free", reason="test", actor_label="test")
    return team_cast


def page(name: str, slug: str = "acme") -> str:
    return reverse(f"console:{name}", args=[slug])


def sessions(fake: FakeStripe) -> list[dict[str, Any]]:
    return fake.calls("POST", "/v1/checkout/sessions")


def test_with_billing_off_the_page_says_so_and_offers_no_upgrade(cast: Cast) -> None:
    html = cast.client("alice").get(page("billing")).content.decode()
    assert "Billing is switched off" in html
    assert "Upgrade to" not in html
    response = cast.client("alice").post(page("billing_checkout"), {"plan": "pro"}, follow=True)
    assert "Billing is switched off" in response.content.decode()
    assert Tenant.objects.get(slug="acme").plan_id == "free"


def test_a_free_owner_sees_the_upgrade_buttons(cast: Cast, stripe_prices: FakeStripe) -> None:
    html = cast.client("alice").get(page("billing")).content.decode()
    assert 'id="upgrade-pro"' in html and 'id="upgrade-team"' in html
    assert "Enterprise" not in html  # custom price: no checkout
    assert "Manage card and invoices" not in html  # no Stripe customer yet
    assert "$29 / month" in html


def test_upgrading_starts_a_checkout_session_for_this_workspace(
    cast: Cast, stripe_prices: FakeStripe
) -> None:
    response = cast.client("alice").post(page("billing_checkout"), {"plan": "pro"})
    assert response.status_code == 302
    assert response["Location"].startswith(f"{stripe_prices.url}/checkout/cs_test_")
    [session] = sessions(stripe_prices)
    pro = Plan.objects.get(code="pro")
    assert session["mode"] == "subscription"
    assert session["line_items"] == [{"price": pro.stripe_price_id, "quantity": "1"}]
    assert session["client_reference_id"] == str(cast.tenant.id)
    assert session["success_url"].startswith("http://testserver/console/w/acme/billing/success")
    assert session["cancel_url"] == "http://testserver/console/w/acme/billing/cancel"
    [customer] = stripe_prices.calls("POST", "/v1/customers")
    assert customer["metadata"] == {"tenant_id": str(cast.tenant.id), "tenant_slug": "acme"}
    assert customer["email"] == "alice@example.com"
    billing = TenantBilling.objects.get(tenant=cast.tenant)
    assert billing.stripe_customer_id == session["customer"]
    assert AuditEvent.objects.filter(action="billing.checkout_started", tenant=cast.tenant).exists()
    # The plan changes only when Stripe confirms (webhooks), not when checkout starts.
    assert Tenant.objects.get(pk=cast.tenant.pk).plan_id == "free"

    # A second checkout reuses the customer.
    cast.client("alice").post(page("billing_checkout"), {"plan": "team"})
    assert len(stripe_prices.calls("POST", "/v1/customers")) == 1


def test_a_plan_that_cannot_be_bought_online_is_refused_clearly(
    cast: Cast, stripe_prices: FakeStripe
) -> None:
    for plan in ["enterprise", "free", "nonsense", ""]:
        response = cast.client("alice").post(page("billing_checkout"), {"plan": plan}, follow=True)
        assert response.status_code == 200
        assert "cannot be bought online" in response.content.decode()
    assert sessions(stripe_prices) == []


def test_a_stripe_failure_sends_the_owner_back_with_a_message(
    cast: Cast, stripe_prices: FakeStripe
) -> None:
    Plan.objects.filter(code="pro").update(stripe_price_id="price_gone")
    response = cast.client("alice").post(page("billing_checkout"), {"plan": "pro"}, follow=True)
    assert response.status_code == 200
    assert "Stripe could not start the checkout" in response.content.decode()


def test_a_paying_owner_gets_the_customer_portal(
    cast: Cast, stripe_prices: FakeStripe, webhook_path: str
) -> None:
    cast.client("alice").post(page("billing_checkout"), {"plan": "pro"})
    stripe_prices.complete_checkout(_session_id(stripe_prices))
    html = cast.client("alice").get(page("billing")).content.decode()
    assert "<strong>Pro</strong>" in html
    assert 'id="upgrade-team"' in html and 'id="upgrade-pro"' not in html
    response = cast.client("alice").post(page("billing_portal"))
    assert response.status_code == 302
    assert response["Location"].startswith(f"{stripe_prices.url}/portal/")
    [portal] = stripe_prices.calls("POST", "/v1/billing_portal/sessions")
    assert portal["customer"] == TenantBilling.objects.get(tenant=cast.tenant).stripe_customer_id
    assert portal["return_url"] == "http://testserver/console/w/acme/billing"


def _session_id(fake: FakeStripe) -> str:
    return next(o["id"] for o in fake.objects.values() if o.get("object") == "checkout.session")


def test_a_failed_payment_is_announced_with_its_deadline(
    cast: Cast, stripe_prices: FakeStripe, webhook_path: str
) -> None:
    cast.client("alice").post(page("billing_checkout"), {"plan": "pro"})
    subscription = stripe_prices.complete_checkout(_session_id(stripe_prices))
    stripe_prices.fail_payment(subscription["id"])
    deadline = TenantBilling.objects.get(tenant=cast.tenant).grace_until
    html = cast.client("alice").get(page("billing")).content.decode()
    assert "Your last payment failed" in html
    assert f"{deadline:%Y-%m-%d %H:%M}" in html


def test_the_success_and_cancel_pages(cast: Cast, stripe_prices: FakeStripe) -> None:
    success = cast.client("alice").get(page("billing_success"), {"session_id": "cs_x"})
    assert "Thank you" in success.content.decode()
    cancel = cast.client("alice").get(page("billing_cancel")).content.decode()
    assert "Nothing was charged" in cancel and "<strong>Free</strong>" in cancel


@pytest.mark.parametrize("who", ["adam", "mia", "vic"])
def test_only_the_owner_may_see_or_act_on_billing(
    team_cast: Cast, stripe_prices: FakeStripe, who: str
) -> None:
    cast = team_cast
    client = cast.client(who)
    assert client.get(page("billing")).status_code == 403
    assert client.post(page("billing_checkout"), {"plan": "pro"}).status_code == 403
    assert client.post(page("billing_portal")).status_code == 403
    assert "Billing</a>" not in client.get(page("usage")).content.decode()
    assert sessions(stripe_prices) == []
    assert "Billing</a>" in cast.client("alice").get(page("usage")).content.decode()


def test_an_outsider_cannot_see_or_act_on_another_workspaces_billing(
    cast: Cast, stripe_prices: FakeStripe
) -> None:
    charlie = cast.client("charlie")
    for name in ["billing", "billing_success", "billing_cancel"]:
        assert charlie.get(page(name)).status_code == 404
    assert charlie.post(page("billing_checkout"), {"plan": "pro"}).status_code == 404
    assert charlie.post(page("billing_portal")).status_code == 404
    assert sessions(stripe_prices) == [] and not stripe_prices.calls("POST", "/v1/customers")
    # His own workspace's page works.
    assert charlie.get(page("billing", "charlies")).status_code == 200
    assert not services.billing_of(cast.tenant).stripe_customer_id
