"""Usage reported to Stripe Billing Meters, so invoices match the usage dashboard to the unit.

Each closed hour of a billed tenant's usage (from the usage pipeline's events: API calls,
searches, memories created) becomes one meter event per meter, with a deterministic
identifier (tenant, meter, hour). A MeterReport row is written only once Stripe has accepted
the event; an hour whose report failed, or whose answer was lost, is sent again on the next
run with the same identifier, and Stripe, which enforces identifier uniqueness, counts it once.

A daily reconciliation compares our totals (the daily rollups) with what was reported and logs
every difference (a late event in an hour already reported, a customer linked mid-day).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.models import DailyUsage, MeterReport, TenantBilling, UsageEvent
from billing.stripe_client import billing_enabled, options

logger = logging.getLogger(__name__)

# Hours are reported once closed for this long (usage events reach the rollups in seconds;
# this leaves room for a buffer that waited on Redis).
SETTLE = dt.timedelta(minutes=10)
# How far back unreported hours are looked for (Stripe accepts events up to 35 days old).
LOOKBACK = dt.timedelta(days=7)


def meters() -> dict[str, str]:
    """Our usage metric → the Stripe meter's event name."""
    return {
        "api_calls": settings.ENGRAM_STRIPE_METER_API_CALLS,
        "searches": settings.ENGRAM_STRIPE_METER_SEARCHES,
        "memories_created": settings.ENGRAM_STRIPE_METER_MEMORIES,
    }


def identifier(tenant_id: object, metric: str, hour: dt.datetime) -> str:
    return f"engram-{tenant_id}-{metric}-{hour.astimezone(dt.UTC):%Y%m%dT%H}"


@dataclass
class ReportResult:
    reported: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def hourly_usage(
    tenant_ids: list[Any], since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Per tenant and hour in [since, until): the metered totals."""
    return list(
        UsageEvent.objects.filter(
            tenant_id__in=tenant_ids, created_at__gte=since, created_at__lt=until
        )
        .annotate(hour=TruncHour("created_at", tzinfo=dt.UTC))
        .values("tenant_id", "hour")
        .annotate(**{name: Sum(name) for name in meters()})
        .order_by("hour", "tenant_id")
    )


def report_usage(now: dt.datetime | None = None) -> ReportResult:
    """Send every closed, unreported hour of billed tenants' usage to Stripe's meters."""
    result = ReportResult()
    if not billing_enabled():
        return result
    now = now or timezone.now()
    until = (now - SETTLE).replace(minute=0, second=0, microsecond=0)
    since = until - LOOKBACK
    customers = dict(
        TenantBilling.objects.exclude(stripe_customer_id=None).values_list(
            "tenant_id", "stripe_customer_id"
        )
    )
    if not customers:
        return result
    done = set(
        MeterReport.objects.filter(hour__gte=since, hour__lt=until).values_list(
            "tenant_id", "meter", "hour"
        )
    )
    for row in hourly_usage(list(customers), since, until):
        tenant_id, hour = row["tenant_id"], row["hour"]
        for metric, event_name in meters().items():
            value = int(row[metric] or 0)
            if value == 0 or (tenant_id, metric, hour) in done:
                continue
            key = identifier(tenant_id, metric, hour)
            try:
                stripe.billing.MeterEvent.create(
                    event_name=event_name,
                    payload={"stripe_customer_id": customers[tenant_id], "value": str(value)},
                    identifier=key,
                    timestamp=int(hour.timestamp()),
                    **options(),
                )
            except stripe.StripeError as error:
                result.failed += 1
                result.errors.append(f"{key}: {error}")
                logger.warning("meter event %s not accepted by Stripe: %s", key, error)
                continue
            try:
                with transaction.atomic():
                    MeterReport.objects.create(
                        tenant_id=tenant_id, meter=metric, hour=hour, value=value, identifier=key
                    )
            except IntegrityError:
                pass  # a concurrent run reported it (same identifier: counted once by Stripe)
            result.reported += 1
    return result


@dataclass(frozen=True)
class Difference:
    tenant_id: str
    day: dt.date
    metric: str
    ours: int
    reported: int


def reconcile(day: dt.date) -> list[Difference]:
    """Our totals for the UTC `day` against what was reported for it; logs each difference."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    billed = list(
        TenantBilling.objects.exclude(stripe_customer_id=None).values_list("tenant_id", flat=True)
    )
    ours = {row.tenant_id: row for row in DailyUsage.objects.filter(tenant_id__in=billed, day=day)}
    reported: dict[tuple[object, str], int] = {
        (row["tenant_id"], row["meter"]): int(row["total"])
        for row in MeterReport.objects.filter(
            tenant_id__in=billed, hour__gte=start, hour__lt=start + dt.timedelta(days=1)
        )
        .values("tenant_id", "meter")
        .annotate(total=Sum("value"))
    }
    differences = []
    for tenant_id in billed:
        for metric in meters():
            our_total = int(getattr(ours.get(tenant_id), metric, 0) or 0)
            sent = reported.get((tenant_id, metric), 0)
            if our_total != sent:
                difference = Difference(str(tenant_id), day, metric, our_total, sent)
                differences.append(difference)
                logger.warning(
                    "stripe usage differs: tenant %s %s %s: ours %d, reported %d",
                    tenant_id,
                    day.isoformat(),
                    metric,
                    our_total,
                    sent,
                    extra={
                        "tenant_id": str(tenant_id),
                        "day": day.isoformat(),
                        "metric": metric,
                        "ours": our_total,
                        "reported": sent,
                    },
                )
    return differences
