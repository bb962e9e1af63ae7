"""Billing operations. `change_plan` is the only code that changes a tenant's plan.

The plan follows the tenant's Stripe subscription: `apply_subscription` reads its *current*
state (never the state an event carried, which may be stale or arrive out of order) and
derives the plan and billing status from it. A failed payment keeps the plan for a grace
period (ENGRAM_BILLING_GRACE_DAYS), after which `end_expired_grace` drops the tenant to Free.
Nothing is deleted on a downgrade: over-limit writes are refused, reads keep working.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import stripe
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from billing.models import BillingStatus, Plan, TenantBilling
from billing.plans import plans
from billing.stripe_client import as_dict, billing_enabled, options
from tenants.models import Tenant, User
from tenants.services import record_audit

logger = logging.getLogger(__name__)

# Subscription statuses at Stripe, and what each means here.
PAYING = frozenset({"active", "trialing"})
PAYMENT_FAILING = frozenset({"past_due", "unpaid"})
ENDED = frozenset({"canceled", "incomplete_expired"})


class BillingUnavailable(Exception):
    """Billing is switched off (no Stripe keys) or the plan has no Stripe price."""


def billing_of(tenant: Tenant) -> TenantBilling:
    billing, _ = TenantBilling.objects.get_or_create(tenant=tenant)
    return billing


def change_plan(
    tenant: Tenant,
    plan_code: str,
    *,
    reason: str,
    actor: User | None = None,
    actor_label: str = "",
) -> bool:
    """Put the tenant on `plan_code`; audited. Returns whether the plan changed."""
    if not Plan.objects.filter(code=plan_code).exists():
        raise ValidationError({"plan": f"Unknown plan {plan_code!r}."})
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        previous = locked.plan_id
        if previous == plan_code:
            return False
        locked.plan_id = plan_code
        # save(), not update(): its post_save tells every process's key cache of the change.
        locked.save(update_fields=["plan_id"])
        record_audit(
            tenant=locked,
            action="billing.plan_changed",
            target=locked.slug,
            actor=actor,
            actor_label=actor_label or ("" if actor else "stripe"),
            metadata={"from": previous, "to": plan_code, "reason": reason},
        )
    tenant.plan_id = plan_code
    plans.clear()
    return True


def set_plan_override(tenant: Tenant, plan_code: str | None, *, actor: User) -> None:
    """Staff pin a plan by hand (None: follow the subscription again); audited."""
    with transaction.atomic():
        billing = billing_of(tenant)
        billing.plan_override_id = plan_code
        billing.save(update_fields=["plan_override", "updated_at"])
        record_audit(
            tenant=tenant,
            action="billing.plan_override",
            target=tenant.slug,
            actor=actor,
            metadata={"plan": plan_code},
        )
        change_plan(tenant, derived_plan(billing), reason="staff_override", actor=actor)


def plan_for_price(price_id: str) -> str | None:
    return Plan.objects.filter(stripe_price_id=price_id).values_list("code", flat=True).first()


def subscription_plan(subscription: dict[str, Any]) -> str | None:
    """The plan the subscription's price stands for, if it is one of ours."""
    for item in subscription.get("items", {}).get("data", []):
        price = item.get("price") or {}
        price_id = price if isinstance(price, str) else price.get("id", "")
        code = plan_for_price(price_id)
        if code:
            return code
    return None


def derived_plan(billing: TenantBilling, now: dt.datetime | None = None) -> str:
    """The plan the tenant should be on, from what is known of its subscription."""
    if billing.plan_override_id:
        return billing.plan_override_id
    if billing.status == BillingStatus.ACTIVE:
        return billing.subscribed_plan_id or Plan.FREE
    if billing.status == BillingStatus.PAST_DUE:
        in_grace = billing.grace_until is not None and (now or timezone.now()) < billing.grace_until
        return (billing.subscribed_plan_id or Plan.FREE) if in_grace else Plan.FREE
    return Plan.FREE


def retrieve_subscription(subscription_id: str) -> dict[str, Any]:
    return as_dict(stripe.Subscription.retrieve(subscription_id, **options()))


def apply_subscription(
    tenant: Tenant, subscription: dict[str, Any], *, reason: str
) -> TenantBilling:
    """Make the tenant's billing follow the subscription's current state (idempotent)."""
    now = timezone.now()
    with transaction.atomic():
        billing = TenantBilling.objects.select_for_update().get(pk=billing_of(tenant).pk)
        replaced = billing.stripe_subscription_id not in ("", subscription["id"])
        if replaced and subscription.get("status") in ENDED:
            # An older subscription ending says nothing about the current one.
            return billing
        status = subscription.get("status", "")
        billing.stripe_subscription_id = subscription["id"]
        billing.subscription_status = status
        if subscription.get("customer") and not billing.stripe_customer_id:
            billing.stripe_customer_id = subscription["customer"]
        plan = subscription_plan(subscription)
        if plan:
            billing.subscribed_plan_id = plan
        previous_status = billing.status
        if status in PAYING:
            billing.status, billing.grace_until = BillingStatus.ACTIVE, None
        elif status in PAYMENT_FAILING:
            billing.status = BillingStatus.PAST_DUE
            if billing.grace_until is None:
                billing.grace_until = now + dt.timedelta(days=settings.ENGRAM_BILLING_GRACE_DAYS)
        elif status in ENDED:
            billing.status, billing.grace_until = BillingStatus.CANCELED, None
        billing.save()
        if billing.status != previous_status:
            record_audit(
                tenant=tenant,
                action="billing.status_changed",
                target=tenant.slug,
                actor_label="stripe",
                metadata={
                    "from": previous_status,
                    "to": billing.status,
                    "subscription": subscription["id"],
                    "grace_until": billing.grace_until.isoformat() if billing.grace_until else None,
                },
            )
        if billing.status != BillingStatus.NONE:  # an incomplete first checkout decides nothing
            change_plan(tenant, derived_plan(billing, now), reason=reason)
    return billing


def sync_subscription(subscription_id: str, *, reason: str) -> TenantBilling | None:
    """Re-read the subscription at Stripe and apply it to its tenant (None: not ours)."""
    subscription = retrieve_subscription(subscription_id)
    tenant = tenant_for(subscription)
    if tenant is None:
        logger.warning("subscription %s belongs to no tenant; ignored", subscription_id)
        return None
    return apply_subscription(tenant, subscription, reason=reason)


def tenant_for(stripe_object: dict[str, Any]) -> Tenant | None:
    """The tenant a customer, subscription or session belongs to: by customer id, else by
    the tenant id we put in its metadata or client_reference_id."""
    customer = stripe_object.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    if customer:
        billing = TenantBilling.objects.select_related("tenant").filter(stripe_customer_id=customer)
        if billing.exists():
            return billing.get().tenant
    tenant_id = stripe_object.get("client_reference_id") or (
        stripe_object.get("metadata") or {}
    ).get("tenant_id")
    if not tenant_id:
        return None
    try:
        return Tenant.objects.filter(pk=tenant_id).first()
    except (ValueError, ValidationError):
        return None


def link_customer(tenant: Tenant, customer_id: str) -> TenantBilling:
    with transaction.atomic():
        billing = TenantBilling.objects.select_for_update().get(pk=billing_of(tenant).pk)
        if billing.stripe_customer_id != customer_id:
            billing.stripe_customer_id = customer_id
            billing.save(update_fields=["stripe_customer_id", "updated_at"])
    return billing


def end_expired_grace(now: dt.datetime | None = None) -> int:
    """Drop every tenant whose grace period is over to Free; returns how many."""
    now = now or timezone.now()
    ended = 0
    expired = TenantBilling.objects.select_related("tenant").filter(
        status=BillingStatus.PAST_DUE, grace_until__lte=now
    )
    for billing in expired:
        if change_plan(billing.tenant, derived_plan(billing, now), reason="grace_expired"):
            ended += 1
    return ended


# --- Checkout and the customer portal ----------------------------------------------------------


def ensure_customer(tenant: Tenant, *, email: str) -> str:
    """The tenant's Stripe customer id, created at Stripe on first use."""
    billing = billing_of(tenant)
    if billing.stripe_customer_id:
        return billing.stripe_customer_id
    customer = stripe.Customer.create(
        email=email,
        name=tenant.name,
        metadata={"tenant_id": str(tenant.id), "tenant_slug": tenant.slug},
        idempotency_key=f"engram-customer-{tenant.id}",
        **options(),
    )
    link_customer(tenant, customer.id)
    return customer.id


def start_checkout(
    tenant: Tenant, plan_code: str, *, actor: User, success_url: str, cancel_url: str
) -> str:
    """A Stripe Checkout Session subscribing the tenant to the plan; returns its URL."""
    if not billing_enabled():
        raise BillingUnavailable("Billing is switched off on this installation.")
    plan = Plan.objects.filter(code=plan_code).first()
    if plan is None or not plan.stripe_price_id:
        raise BillingUnavailable(f"The plan {plan_code!r} cannot be bought online.")
    customer = ensure_customer(tenant, email=actor.email)
    session = stripe.checkout.Session.create(
        mode="subscription",
        customer=customer,
        client_reference_id=str(tenant.id),
        line_items=[{"price": plan.stripe_price_id, "quantity": 1}],
        subscription_data={"metadata": {"tenant_id": str(tenant.id)}},
        metadata={"tenant_id": str(tenant.id), "plan": plan.code},
        success_url=success_url,
        cancel_url=cancel_url,
        **options(),
    )
    record_audit(
        tenant=tenant,
        action="billing.checkout_started",
        target=tenant.slug,
        actor=actor,
        metadata={"plan": plan.code, "session": session.id},
    )
    return str(session.url)


def portal_url(tenant: Tenant, *, return_url: str) -> str:
    """A Stripe Customer Portal session for the tenant's customer; returns its URL."""
    if not billing_enabled():
        raise BillingUnavailable("Billing is switched off on this installation.")
    billing = billing_of(tenant)
    if not billing.stripe_customer_id:
        raise BillingUnavailable("This workspace has no Stripe customer yet.")
    session = stripe.billing_portal.Session.create(
        customer=billing.stripe_customer_id, return_url=return_url, **options()
    )
    return str(session.url)
