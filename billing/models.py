"""Plans and their limits: data, editable by staff in the admin."""

from __future__ import annotations

from django.db import models


class Plan(models.Model):
    FREE = "free"

    code = models.SlugField(primary_key=True, max_length=32)
    name = models.CharField(max_length=64)
    price_cents_per_month = models.PositiveIntegerField(null=True, blank=True)
    # Every limit: null means unlimited.
    max_memories = models.PositiveBigIntegerField(null=True, blank=True)
    max_searches_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    max_api_calls_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    max_storage_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    max_members = models.PositiveIntegerField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    burst = models.PositiveIntegerField(null=True, blank=True)
    sort_order = models.PositiveSmallIntegerField(default=0)
    # The Stripe Price a subscription to this plan uses (`manage.py sync_stripe_prices`).
    stripe_price_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["sort_order"]

    def __str__(self) -> str:
        return self.name

    def limits(self) -> dict[str, int | None]:
        return {
            "memories": self.max_memories,
            "searches_per_month": self.max_searches_per_month,
            "api_calls_per_month": self.max_api_calls_per_month,
            "storage_bytes": self.max_storage_bytes,
            "members": self.max_members,
            "requests_per_minute": self.requests_per_minute,
            "burst": self.burst,
        }


class UsageEvent(models.Model):
    """One metered API request, written in batches by the usage flush (billing/usage.py)."""

    request_id = models.CharField(max_length=128, unique=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    route = models.CharField(max_length=32)
    method = models.CharField(max_length=10)
    status_code = models.PositiveSmallIntegerField()
    api_calls = models.PositiveIntegerField(default=1)
    searches = models.PositiveIntegerField(default=0)
    memories_created = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"], name="usage_tenant_time_idx")]

    def __str__(self) -> str:
        return self.request_id


class DailyUsage(models.Model):
    """A tenant's usage per UTC day: what the usage endpoint, quotas and billing read."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    api_calls = models.PositiveBigIntegerField(default=0)
    searches = models.PositiveBigIntegerField(default=0)
    memories_created = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="dailyusage_unique")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"


class BillingStatus(models.TextChoices):
    # Never subscribed: Free, or a plan staff set.
    NONE = "none"
    ACTIVE = "active"
    # A payment failed: the plan holds until `grace_until`, then drops to Free.
    PAST_DUE = "past_due"
    CANCELED = "canceled"


class TenantBilling(models.Model):
    """A tenant's link to Stripe: its customer, its subscription, and where billing stands.

    The tenant's plan (Tenant.plan) is derived from the subscription by billing.services;
    `plan_override` is a plan staff set by hand, which wins over the subscription.
    """

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, primary_key=True, related_name="billing"
    )
    stripe_customer_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    # The subscription's status at Stripe when last read (active, past_due, canceled, …).
    subscription_status = models.CharField(max_length=32, blank=True)
    status = models.CharField(
        max_length=16, choices=BillingStatus.choices, default=BillingStatus.NONE
    )
    grace_until = models.DateTimeField(null=True, blank=True)
    # The plan the subscription pays for (its price's plan).
    subscribed_plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    plan_override = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "tenant billing"
        verbose_name_plural = "tenant billing"

    def __str__(self) -> str:
        return f"{self.tenant_id} ({self.status})"


class MeterReport(models.Model):
    """One hour of one tenant's usage of one meter, accepted by Stripe (billing/metering.py).

    Written only after Stripe answered, so an hour without a row is reported again, with the
    same identifier: Stripe counts it once.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    meter = models.CharField(max_length=32)
    hour = models.DateTimeField()
    value = models.PositiveBigIntegerField()
    identifier = models.CharField(max_length=100, unique=True)
    reported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "meter", "hour"], name="meterreport_unique")
        ]

    def __str__(self) -> str:
        return self.identifier
