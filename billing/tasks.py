"""Celery tasks of billing. Tasks take ids, not objects, and are safe to run twice."""

from __future__ import annotations

from celery import shared_task

from billing import usage


@shared_task(name="billing.tasks.flush_usage")
def flush_usage() -> int:
    """Move buffered usage events into the control plane (idempotent; see billing/usage.py)."""
    return usage.flush_usage()
