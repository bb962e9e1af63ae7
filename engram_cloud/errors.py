"""The one way errors leave the API: `{"error", "message", "request_id", …details}`."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from tenants.api_keys import mask_keys

logger = logging.getLogger(__name__)

API_PATH_PREFIXES = ("/v1/", "/mcp", "/health", "/ready")


class ApiError(Exception):
    """Raise anywhere in the API to answer with this status, code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


UNAUTHORIZED_MESSAGE = "Missing or invalid credentials."


def internal_error() -> ApiError:
    """Our failure: nothing about it reaches the client but the request id (the log has it)."""
    return ApiError(500, "internal_error", "Something went wrong on our side.")


def unauthorized() -> ApiError:
    """One body for every authentication failure, so none reveals why."""
    return ApiError(
        401, "unauthorized", UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"}
    )


def error_body(request: HttpRequest | None, code: str, message: str, **details: Any) -> dict:
    return {
        "error": code,
        "message": mask_keys(message),
        "request_id": getattr(request, "request_id", None),
        **mask_keys(details),
    }


def note_error(request: Any, code: str) -> None:
    """Remember the error code on the request, for the request log and metrics."""
    if request is not None:
        getattr(request, "_request", request).error_code = code


def error_response(request: HttpRequest | None, error: ApiError) -> JsonResponse:
    note_error(request, error.code)
    response = JsonResponse(
        error_body(request, error.code, error.message, **error.details), status=error.status
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


_DRF_CODES: dict[type[exceptions.APIException], tuple[str, str | None]] = {
    exceptions.ParseError: ("invalid_json", "The request body is not valid JSON."),
    exceptions.NotAuthenticated: ("unauthorized", UNAUTHORIZED_MESSAGE),
    exceptions.AuthenticationFailed: ("unauthorized", UNAUTHORIZED_MESSAGE),
    exceptions.PermissionDenied: ("forbidden", None),
    exceptions.NotFound: ("not_found", "Not found."),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.NotAcceptable: ("not_acceptable", None),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
}


def _as_api_error(exc: Exception) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Http404):
        return ApiError(404, "not_found", "Not found.")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return ApiError(400, "validation_error", "The request has invalid fields.", fields=detail)
    if isinstance(exc, exceptions.APIException):
        code, message = _DRF_CODES.get(type(exc), (str(exc.default_code), None))
        headers = {}
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return ApiError(exc.status_code, code, message or str(exc.detail), headers=headers)
    from engram_cloud.outages import unavailable_error

    return unavailable_error(exc)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler: every known error becomes the envelope; others become 500."""
    error = _as_api_error(exc)
    if error is None:
        return None
    request = context.get("request")
    note_error(request, error.code)
    return Response(
        error_body(request, error.code, error.message, **error.details),
        status=error.status,
        headers=error.headers,
    )


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATH_PREFIXES)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return error_response(request, ApiError(404, "not_found", "Not found."))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    from engram_cloud.outages import unavailable_error

    outage = unavailable_error(sys.exception())
    if is_api_path(request.path):
        return error_response(
            request,
            outage or internal_error(),
        )
    if outage is not None:
        response = HttpResponse(outage.message, status=503, content_type="text/plain")
        for name, value in outage.headers.items():
            response[name] = value
        return response
    from django.views.defaults import server_error

    return server_error(request)
