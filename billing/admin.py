from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing import services
from billing.models import MeterReport, Plan, TenantBilling
from tenants.admin import ReadOnlyAdmin


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "max_memories",
        "max_searches_per_month",
        "max_api_calls_per_month",
        "max_storage_bytes",
        "max_members",
        "requests_per_minute",
        "burst",
        "stripe_price_id",
    ]
    ordering = ["sort_order"]


@admin.register(TenantBilling)
class TenantBillingAdmin(admin.ModelAdmin):
    """Each tenant's subscription as last read from Stripe. Staff may pin a plan by hand
    (`plan_override`, audited); clearing it lets the subscription decide again."""

    list_display = [
        "tenant",
        "status",
        "subscription_status",
        "subscribed_plan",
        "plan_override",
        "grace_until",
        "stripe_customer_id",
        "updated_at",
    ]
    list_filter = ["status", "subscription_status"]
    search_fields = ["tenant__slug", "stripe_customer_id", "stripe_subscription_id"]
    autocomplete_fields = ["tenant"]
    fields = [
        "tenant",
        "plan_override",
        "status",
        "subscription_status",
        "subscribed_plan",
        "grace_until",
        "stripe_customer_id",
        "stripe_subscription_id",
        "updated_at",
    ]
    readonly_fields = [
        "status",
        "subscription_status",
        "subscribed_plan",
        "grace_until",
        "stripe_customer_id",
        "stripe_subscription_id",
        "updated_at",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "tenant"] if obj else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: TenantBilling, form: Any, change: bool) -> None:
        services.set_plan_override(obj.tenant, obj.plan_override_id, actor=request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    """What was reported to Stripe's meters, per tenant, meter and hour (read-only)."""

    list_display = ["tenant", "meter", "hour", "value", "reported_at"]
    list_filter = ["meter"]
    search_fields = ["tenant__slug", "identifier"]
