"""Upgrading in a real browser (Playwright driving Debian's chromium, headless) against a live
server and the fake Stripe: the owner of a Free workspace clicks "Upgrade to Pro", pays on the
(fake) Stripe Checkout page, comes back to the success page, and the workspace is on Pro as
soon as Stripe's signed webhooks arrived. A member sees no billing at all. Screenshots land in
test-artifacts/billing/.

Fails when chromium is missing, unless ENGRAM_SKIP_BROWSER_TESTS=1.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from django.core.management import call_command

from billing.models import BillingStatus, TenantBilling
from tenants import services
from tenants.models import Membership, Role, Tenant, User
from tests.fake_stripe import FakeStripe
from tests.test_console_browser import PASSWORD, TIMEOUT_MS, browser  # noqa: F401  (a fixture)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "billing"


def sign_in(context: Any, email: str) -> Any:
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/console/")
    return page


def test_an_owner_upgrades_to_pro_through_stripe_checkout(
    request: Any, live_server: Any, stripe_prices: FakeStripe
) -> None:
    chromium = request.getfixturevalue("browser")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    call_command("stripe_webhook_endpoint", base_url=live_server.url, stdout=out)
    stripe_prices.deliver = FakeStripe.post_to(out.getvalue().strip())
    owner = User.objects.create_user("olga@example.com", password=PASSWORD)
    tenant = services.provision_tenant(slug="web-team", name="Web Team", owner=owner)
    member = User.objects.create_user("milo@example.com", password=PASSWORD)
    Membership.objects.create(user=member, tenant=tenant, role=Role.ADMIN)

    context = chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = sign_in(context, "olga@example.com")
    page.goto("/console/w/web-team/")
    page.click("nav.tabs a:text('Billing')")
    page.wait_for_url("**/console/w/web-team/billing")
    assert "Free" in page.locator("#current-plan").inner_text()
    page.screenshot(path=str(ARTIFACTS / "billing-free.png"), full_page=True)

    page.click("#upgrade-pro")
    page.wait_for_url(f"{stripe_prices.url}/checkout/**")
    page.screenshot(path=str(ARTIFACTS / "checkout.png"), full_page=True)
    page.click("#pay")
    page.wait_for_url("**/console/w/web-team/billing/success?session_id=cs_test_*")
    assert "Thank you" in page.content()
    assert "Pro" in page.locator("#current-plan").inner_text()
    page.screenshot(path=str(ARTIFACTS / "success.png"), full_page=True)
    assert Tenant.objects.get(slug="web-team").plan_id == "pro"
    assert TenantBilling.objects.get(tenant=tenant).status == BillingStatus.ACTIVE

    page.goto("/console/w/web-team/billing")
    assert page.locator("#upgrade-pro").count() == 0
    assert page.locator("#upgrade-team").count() == 1
    page.click("#portal")
    page.wait_for_url(f"{stripe_prices.url}/portal/**")
    context.close()

    # Another member of the workspace (an admin) has no billing.
    other = chromium.new_context(base_url=live_server.url)
    other.set_default_timeout(TIMEOUT_MS)
    page = sign_in(other, "milo@example.com")
    page.goto("/console/w/web-team/")
    assert page.locator("nav.tabs a:text('Billing')").count() == 0
    response = page.goto("/console/w/web-team/billing")
    assert response is not None and response.status == 403
    other.close()
