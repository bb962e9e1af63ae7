from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView

from engram_cloud import health

handler404 = "engram_cloud.errors.handler404"
handler500 = "engram_cloud.errors.handler500"

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path(
        "v1/openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="openapi",
    ),
    path("v1/", include("memories.api.urls")),
    path("admin/", admin.site.urls),
]
