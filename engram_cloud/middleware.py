"""Cross-cutting middleware that runs before anything reads the request."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from uuid6 import uuid7

from engram_cloud.errors import ApiError
from mcp.jsonrpc import render_error
from tenants.api_keys import mask_keys

REQUEST_ID_HEADER = "X-Request-Id"
# A client's id is kept if it is short and plain; anything else is replaced.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")
_CONTENT_LENGTH = re.compile(r"[0-9]+")

Handler = Callable[[HttpRequest], HttpResponse]


class RequestIdMiddleware:
    """Accept a sane X-Request-Id or make a UUIDv7; echo it on every response."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        # An id is written on every log line: one holding an API key is not kept either.
        sane = _SANE_REQUEST_ID.match(incoming) and mask_keys(incoming) == incoming
        request.request_id = incoming if sane else str(uuid7())
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413 before anything parses them.

    A chunked body is read up to the limit here, so it is refused or served like any other
    instead of reaching the view as an empty body. Chunking wins over a Content-Length sent
    with it (RFC 9112 §6.3): a small Content-Length cannot slip a larger chunked body past the
    limit. A Content-Length must be a plain count of bytes.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = body_limit_for(request.path_info)
        if is_chunked(request):
            body = request.META["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return too_large(request, limit)
            request._stream = LimitedStream(io.BytesIO(body), len(body))
            request.META["CONTENT_LENGTH"] = str(len(body))
            return self.get_response(request)
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not _CONTENT_LENGTH.fullmatch(declared):
            return render_error(
                request,
                ApiError(
                    400,
                    "validation_error",
                    "Content-Length is not a number.",
                    fields={"Content-Length": ["Must be a whole number of bytes."]},
                ),
            )
        if int(declared) > limit:
            return too_large(request, limit)
        return self.get_response(request)


def is_chunked(request: HttpRequest) -> bool:
    return "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()


def too_large(request: HttpRequest, limit: int) -> HttpResponse:
    return render_error(
        request,
        ApiError(
            413,
            "payload_too_large",
            f"The request body is larger than the limit of {limit} bytes.",
            limit_bytes=limit,
        ),
    )


def body_limit_for(path: str) -> int:
    if path.rstrip("/") == "/v1/import":
        return settings.ENGRAM_IMPORT_MAX_BODY_BYTES
    return settings.ENGRAM_MAX_BODY_BYTES


class TenantUnavailableMiddleware:
    """Console pages that read a workspace's memories while it is being restored (or its file
    is missing) answer 503 with Retry-After, not 500. The /v1 API answers in its own envelope
    (tenants.middleware)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from memories.tenant_db import TenantDatabaseMissing, TenantInMaintenance

        if isinstance(exception, TenantInMaintenance):
            response = HttpResponse(
                "This workspace is being restored; try again in a minute.",
                status=503,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(exception.retry_after)
            return response
        if isinstance(exception, TenantDatabaseMissing):
            return HttpResponse(
                "This workspace's data is unavailable right now.",
                status=503,
                content_type="text/plain; charset=utf-8",
            )
        return None
