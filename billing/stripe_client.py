"""How the product talks to Stripe: whether billing is on, and the SDK's key and base URL.

With no STRIPE_SECRET_KEY billing is off: nothing calls Stripe, every tenant stays on Free or
on the plan staff set, and the console says so.
"""

from __future__ import annotations

from typing import Any

import stripe
from django.conf import settings


def billing_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def configure_sdk() -> None:
    """Point the SDK at STRIPE_API_BASE when set (tests: a fake Stripe on loopback)."""
    stripe.api_base = settings.STRIPE_API_BASE or stripe.DEFAULT_API_BASE


def options() -> dict[str, Any]:
    """Keyword arguments every SDK call takes: the secret key, per call (never global)."""
    configure_sdk()
    return {"api_key": settings.STRIPE_SECRET_KEY}


def as_dict(obj: Any) -> dict[str, Any]:
    """A Stripe object (or a webhook's plain dict) as a plain dict."""
    if isinstance(obj, dict):
        return obj
    return obj.to_dict(for_json=True)
