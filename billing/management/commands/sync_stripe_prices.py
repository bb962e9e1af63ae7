"""sync_stripe_prices: every paid plan gets a monthly Stripe Price, stored through dj-stripe.

A plan's price is found at Stripe by its lookup key (`engram_<plan>_monthly`); a missing one is
created with its product, and one whose amount no longer matches the plan is replaced (the
lookup key moves to the new price). Free and custom-priced plans (Enterprise) have none.
Safe to run again: it changes nothing when Stripe already matches.
"""

from __future__ import annotations

from typing import Any

import stripe
from django.core.management.base import BaseCommand, CommandError
from djstripe.models import Price

from billing.models import Plan
from billing.stripe_client import as_dict, billing_enabled, options


def lookup_key(plan: Plan) -> str:
    return f"engram_{plan.code}_monthly"


def stripe_price_for(plan: Plan) -> dict[str, Any]:
    key = lookup_key(plan)
    found = stripe.Price.list(lookup_keys=[key], active=True, limit=1, **options())
    current = [as_dict(price) for price in found.data]
    if current and current[0].get("unit_amount") == plan.price_cents_per_month:
        return current[0]
    product = current[0]["product"] if current else None
    if product is None:
        product = stripe.Product.create(
            name=f"Engram Cloud {plan.name}", metadata={"plan": plan.code}, **options()
        ).id
    return as_dict(
        stripe.Price.create(
            product=product,
            currency="usd",
            unit_amount=plan.price_cents_per_month,
            recurring={"interval": "month"},
            lookup_key=key,
            transfer_lookup_key=bool(current),
            metadata={"plan": plan.code},
            **options(),
        )
    )


class Command(BaseCommand):
    help = "Create or update the Stripe Prices of the paid plans and store them via dj-stripe."

    def handle(self, *args: Any, **options_: Any) -> None:
        if not billing_enabled():
            raise CommandError("Billing is off: set STRIPE_SECRET_KEY.")
        for plan in Plan.objects.filter(price_cents_per_month__gt=0):
            price = stripe_price_for(plan)
            Price.sync_from_stripe_data(price, api_key=options()["api_key"])
            if plan.stripe_price_id != price["id"]:
                Plan.objects.filter(pk=plan.pk).update(stripe_price_id=price["id"])
            self.stdout.write(f"{plan.code}: {price['id']} ({plan.price_cents_per_month} cents)")
