"""Celery tasks of billing. Tasks take ids, not objects, and are safe to run twice."""

from __future__ import annotations

import datetime as dt

from celery import shared_task

from billing import services, usage


@shared_task(name="billing.tasks.flush_usage")
def flush_usage() -> int:
    """Move buffered usage events into the control plane (idempotent; see billing/usage.py)."""
    return usage.flush_usage()


@shared_task(name="billing.tasks.end_billing_grace")
def end_billing_grace(now: str | None = None) -> int:
    """Hourly: tenants whose grace period after a failed payment is over drop to Free."""
    return services.end_expired_grace(dt.datetime.fromisoformat(now) if now else None)
