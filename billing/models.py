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
