"""Fixtures for billing tests: a fake Stripe on loopback with the SDK pointed at it, the
paid plans' prices synced, and dj-stripe's webhook endpoint created by its command.

tests/conftest.py makes them available to every test module.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
from django.core.management import call_command
from django.test import Client

from billing.stripe_client import configure_sdk
from tests.fake_stripe import FakeStripe


@pytest.fixture
def fake_stripe(settings: Any) -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_engramfakestripe0000000000"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_engramfakestripe0000000000"
    settings.STRIPE_API_BASE = fake.url
    configure_sdk()
    yield fake
    fake.stop()
    stripe.api_base = stripe.DEFAULT_API_BASE


@pytest.fixture
def stripe_prices(fake_stripe: FakeStripe, db: None) -> FakeStripe:
    call_command("sync_stripe_prices", stdout=io.StringIO())
    return fake_stripe


@pytest.fixture
def webhook_path(stripe_prices: FakeStripe) -> str:
    """dj-stripe's endpoint, made by `stripe_webhook_endpoint`; the fake delivers to it."""
    out = io.StringIO()
    call_command("stripe_webhook_endpoint", base_url="http://testserver", stdout=out)
    path = urlsplit(out.getvalue().strip()).path
    client = Client()

    def deliver(body: bytes, signature: str) -> int:
        response = client.post(
            path, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
        )
        return response.status_code

    stripe_prices.deliver = deliver
    return path
