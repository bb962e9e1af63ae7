"""Celery tasks of billing. Tasks take ids, not objects, and are safe to run twice."""

from __future__ import annotations

import datetime as dt

from celery import shared_task

from billing import metering, services, usage


@shared_task(name="billing.tasks.flush_usage")
def flush_usage() -> int:
    """Move buffered usage events into the control plane (idempotent; see billing/usage.py)."""
    return usage.flush_usage()


@shared_task(name="billing.tasks.end_billing_grace")
def end_billing_grace(now: str | None = None) -> int:
    """Hourly: tenants whose grace period after a failed payment is over drop to Free."""
    return services.end_expired_grace(dt.datetime.fromisoformat(now) if now else None)


@shared_task(name="billing.tasks.report_usage_to_stripe")
def report_usage_to_stripe() -> dict[str, int]:
    """Hourly: closed hours of usage to Stripe's meters (each hour once; billing/metering.py)."""
    result = metering.report_usage()
    return {"reported": result.reported, "failed": result.failed}


@shared_task(name="billing.tasks.reconcile_stripe_usage")
def reconcile_stripe_usage(day: str | None = None) -> int:
    """Daily: yesterday's totals against what was reported; logs and counts differences."""
    when = dt.date.fromisoformat(day) if day else dt.datetime.now(dt.UTC).date() - dt.timedelta(1)
    return len(metering.reconcile(when))
