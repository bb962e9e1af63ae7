"""stripe_webhook_endpoint --base-url https://engram.example [--local]

Creates dj-stripe's WebhookEndpoint row, whose secret verifies every webhook signature and
whose uuid is in the endpoint's URL (`/stripe/webhook/<uuid>/`). By default the endpoint is
registered at Stripe (for the events billing/webhooks.py handles) and Stripe's signing secret
is stored; with `--local` nothing is sent to Stripe and STRIPE_WEBHOOK_SECRET (from an endpoint
registered in Stripe's dashboard) is stored instead. Prints the endpoint's URL.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urljoin

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from djstripe.models import WebhookEndpoint
from djstripe.settings import djstripe_settings

from billing.stripe_client import as_dict, billing_enabled, configure_sdk

EVENTS = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
]


class Command(BaseCommand):
    help = "Create the Stripe webhook endpoint (dj-stripe's WebhookEndpoint and its secret)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", required=True, help="https://your.host")
        parser.add_argument(
            "--local",
            action="store_true",
            help="Do not register at Stripe; store STRIPE_WEBHOOK_SECRET instead.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint_uuid = uuid.uuid4()
        path = reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": endpoint_uuid})
        url = urljoin(options["base_url"], path)
        if options["local"]:
            if not settings.STRIPE_WEBHOOK_SECRET:
                raise CommandError("--local needs STRIPE_WEBHOOK_SECRET.")
            WebhookEndpoint.objects.create(
                id=f"we_local_{endpoint_uuid.hex[:16]}",
                url=url,
                enabled_events=EVENTS,
                metadata={"djstripe_uuid": str(endpoint_uuid)},
                status="enabled",
                api_version=djstripe_settings.STRIPE_API_VERSION,
                secret=settings.STRIPE_WEBHOOK_SECRET,
                djstripe_uuid=endpoint_uuid,
                livemode=settings.STRIPE_SECRET_KEY.startswith("sk_live_"),
            )
        else:
            if not billing_enabled():
                raise CommandError("Billing is off: set STRIPE_SECRET_KEY (or use --local).")
            configure_sdk()
            data = as_dict(
                WebhookEndpoint._api_create(
                    url=url,
                    api_version=djstripe_settings.STRIPE_API_VERSION,
                    enabled_events=EVENTS,
                    metadata={"djstripe_uuid": str(endpoint_uuid)},
                    api_key=settings.STRIPE_SECRET_KEY,
                )
            )
            endpoint = WebhookEndpoint.sync_from_stripe_data(
                data, api_key=settings.STRIPE_SECRET_KEY
            )
            if endpoint.secret != data["secret"]:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret=data["secret"])
        self.stdout.write(url)
