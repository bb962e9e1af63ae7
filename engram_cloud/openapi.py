"""`GET /v1/openapi.json`: the /v1 contract as OpenAPI 3, public (no credential needed)."""

from __future__ import annotations

from drf_spectacular.views import SpectacularJSONAPIView

from tenants.permissions import Access, declare


@declare(Access.PUBLIC)
class OpenApiView(SpectacularJSONAPIView):
    authentication_classes = []
    permission_classes = []
