from django.contrib import admin

from billing.models import Plan


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
    ]
    ordering = ["sort_order"]
