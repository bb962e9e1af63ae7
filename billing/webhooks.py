"""Stripe webhook handlers, run by dj-stripe's endpoint `/stripe/webhook/<uuid>/`.

dj-stripe verifies the signature and its timestamp tolerance (400 otherwise), stores each
event once by its id (a replayed event reaches no handler) and runs these inside the same
transaction as the event row, so a handler that fails rolls the event back and Stripe's retry
processes it again.

Handlers never trust the state an event carries: events arrive late and out of order, so each
re-reads the subscription at Stripe and applies its current state (billing.services).
"""

from __future__ import annotations

import logging
from typing import Any

from djstripe.event_handlers import djstripe_receiver
from djstripe.models import Event

from billing import services

logger = logging.getLogger(__name__)


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("id")
    return value or None


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """An invoice's subscription: top-level before API 2025-03-31, under `parent` since."""
    direct = _id(invoice.get("subscription"))
    if direct:
        return direct
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id(details.get("subscription"))


@djstripe_receiver("checkout.session.completed")
def checkout_completed(sender: Any, event: Event, **kwargs: Any) -> None:
    session = event.data["object"]
    tenant = services.tenant_for(session)
    if tenant is None:
        logger.warning("checkout session %s belongs to no tenant; ignored", session.get("id"))
        return
    customer = _id(session.get("customer"))
    if customer:
        services.link_customer(tenant, customer)
    subscription = _id(session.get("subscription"))
    if subscription:
        services.sync_subscription(subscription, reason="checkout_completed")


@djstripe_receiver(
    [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    ]
)
def subscription_changed(sender: Any, event: Event, **kwargs: Any) -> None:
    services.sync_subscription(event.data["object"]["id"], reason=event.type)


@djstripe_receiver(["invoice.paid", "invoice.payment_failed"])
def invoice_settled(sender: Any, event: Event, **kwargs: Any) -> None:
    subscription = invoice_subscription(event.data["object"])
    if subscription:
        services.sync_subscription(subscription, reason=event.type)
