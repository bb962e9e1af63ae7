"""The public home page: what Engram Cloud is, how an agent uses it, the plans."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.models import Plan
from tenants.permissions import Access, declare


@declare(Access.PUBLIC)
def landing(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "landing.html",
        {
            "plans": Plan.objects.order_by("sort_order"),
            "api_base": f"https://<workspace>.{settings.ENGRAM_BASE_DOMAIN}",
        },
    )
