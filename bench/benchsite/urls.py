"""The product's URLs plus `bench/hello`, a bare DRF view: the floor any /v1 request stands on.

HelloView skips authentication and permissions, so a request to it pays only for the
middleware stack, URL resolution, DRF's request/response wrapping and JSON rendering.
It lives here, never in the product's URLconf.
"""

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from engram_cloud.urls import handler404, handler500
from engram_cloud.urls import urlpatterns as product_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


class HelloView(APIView):
    authentication_classes = []
    permission_classes = []

    def get(self, request: Request) -> Response:
        return Response({"hello": "world"})


urlpatterns = [*product_urlpatterns, path("bench/hello", HelloView.as_view())]
