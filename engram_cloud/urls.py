from django.contrib import admin
from django.urls import include, path

from engram_cloud import health
from engram_cloud.observability import metrics_view
from engram_cloud.openapi import OpenApiView
from mcp.views import mcp_endpoint
from tenants.console.api import api as console_api
from tenants.console.landing import landing
from tenants.permissions import Access, declare

handler404 = "engram_cloud.errors.handler404"
handler500 = "engram_cloud.errors.handler500"

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    # Prometheus scrapes; outside /v1 so the tenant pipeline never sees it.
    # Declared here: engram_cloud.observability loads with the logging config, before the apps.
    path("metrics", declare(Access.OPERATOR)(metrics_view), name="metrics"),
    path("v1/openapi.json", OpenApiView.as_view(), name="openapi"),
    path("v1/mcp", mcp_endpoint, name="mcp"),
    # The path Engram OSS serves, so a config written for self-hosted Engram works unchanged.
    path("mcp", mcp_endpoint, name="mcp-engram"),
    path("v1/", include("memories.api.urls")),
    path("v1/", include("billing.api.urls")),
    path("admin/", admin.site.urls),
    # dj-stripe's webhook endpoint: /stripe/webhook/<uuid>/ (handlers in billing/webhooks.py).
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("", landing, name="landing"),
    path("accounts/", include("tenants.console.accounts_urls")),
    path("console/api/", console_api.urls),
    path("console/", include("tenants.console.urls")),
]
