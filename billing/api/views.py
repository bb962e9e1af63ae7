"""GET /v1/usage: this month's usage against the plan, and per day."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import DailyUsage
from billing.plans import plans
from billing.quotas import memories_in_use
from billing.usage import METRICS, month_usage
from memories.services import storage_bytes
from tenants.permissions import Access, Scope, declare

UsageSerializer = inline_serializer(
    "Usage",
    {
        "period": serializers.DictField(),
        "plan": serializers.CharField(),
        "metrics": serializers.DictField(),
        "days": serializers.ListField(child=serializers.DictField()),
    },
)


@declare(Access.API)
class UsageView(APIView):
    required_scopes = {"GET": Scope.MEMORIES_READ}

    @extend_schema(responses=UsageSerializer)
    def get(self, request: Request) -> Response:
        tenant = request.tenant
        plan = plans.get(tenant.plan_code)
        today = timezone.now().astimezone(dt.UTC).date()
        start = today.replace(day=1)
        rows = DailyUsage.objects.filter(tenant_id=tenant.id, day__gte=start).order_by("day")
        metrics: dict[str, dict[str, Any]] = {
            "api_calls": {
                "used": month_usage(str(tenant.id), "api_calls"),
                "limit": plan.max_api_calls_per_month,
            },
            "searches": {
                "used": month_usage(str(tenant.id), "searches"),
                "limit": plan.max_searches_per_month,
            },
            "memories": {"used": memories_in_use(), "limit": plan.max_memories},
            "storage_bytes": {"used": storage_bytes(), "limit": plan.max_storage_bytes},
        }
        return Response(
            {
                "period": {"start": start.isoformat(), "today": today.isoformat()},
                "plan": plan.code,
                "metrics": metrics,
                "days": [
                    {
                        "day": row.day.isoformat(),
                        **{name: getattr(row, name) for name in METRICS},
                    }
                    for row in rows
                ],
            }
        )
