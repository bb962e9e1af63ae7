"""The console's billing page (owners only): the plan and where billing stands, upgrades
through Stripe Checkout, card and invoices in Stripe's customer portal, and the pages Checkout
returns to. With no Stripe keys billing is off and the page says so."""

from __future__ import annotations

import logging

import stripe
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import services
from billing.models import BillingStatus, Plan, TenantBilling
from billing.stripe_client import billing_enabled
from tenants.console.access import Workspace, render_page, workspace_view
from tenants.permissions import Scope

logger = logging.getLogger(__name__)


def _page_url(request: HttpRequest, name: str, workspace: Workspace) -> str:
    return request.build_absolute_uri(reverse(name, args=[workspace.tenant.slug]))


def _billing_page(request: HttpRequest, workspace: Workspace, template: str) -> HttpResponse:
    tenant = workspace.tenant
    billing = TenantBilling.objects.filter(tenant=tenant).first()
    current = Plan.objects.get(code=tenant.plan_id)
    upgrades = [
        plan
        for plan in Plan.objects.exclude(stripe_price_id="")
        if plan.sort_order > current.sort_order
    ]
    context = {
        "billing_enabled": billing_enabled(),
        "billing": billing,
        "plan": current,
        "upgrades": upgrades if billing_enabled() else [],
        "past_due": billing is not None and billing.status == BillingStatus.PAST_DUE,
        "has_customer": billing is not None and bool(billing.stripe_customer_id),
    }
    return render_page(request, workspace, template, context)


@workspace_view(Scope.BILLING)
def billing(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    return _billing_page(request, workspace, "billing/billing.html")


@require_POST
@workspace_view(Scope.BILLING)
def checkout(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    back = redirect("console:billing", workspace.tenant.slug)
    success = _page_url(request, "console:billing_success", workspace)
    try:
        url = services.start_checkout(
            workspace.tenant,
            request.POST.get("plan", ""),
            actor=request.user,  # type: ignore[arg-type]
            success_url=f"{success}?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=_page_url(request, "console:billing_cancel", workspace),
        )
    except services.BillingUnavailable as error:
        messages.error(request, str(error))
        return back
    except stripe.StripeError:
        logger.exception("Stripe refused a checkout session")
        messages.error(request, "Stripe could not start the checkout; please try again.")
        return back
    return redirect(url)


@require_POST
@workspace_view(Scope.BILLING)
def portal(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    back = redirect("console:billing", workspace.tenant.slug)
    try:
        url = services.portal_url(
            workspace.tenant, return_url=_page_url(request, "console:billing", workspace)
        )
    except services.BillingUnavailable as error:
        messages.error(request, str(error))
        return back
    except stripe.StripeError:
        logger.exception("Stripe refused a customer portal session")
        messages.error(request, "Stripe could not open the customer portal; please try again.")
        return back
    return redirect(url)


@workspace_view(Scope.BILLING)
def success(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    return _billing_page(request, workspace, "billing/success.html")


@workspace_view(Scope.BILLING)
def cancel(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    return _billing_page(request, workspace, "billing/cancel.html")
