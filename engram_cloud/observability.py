"""What staff see of each request: one JSON log line, request metrics, and `GET /metrics`.

- `RequestObservabilityMiddleware` (right after RequestIdMiddleware) times the request, logs one
  line on the "engram.requests" logger with the fields of ARCHITECTURE.md §3 step 10, and
  updates `requests_total`, `request_latency_seconds` and (on 401) `auth_failures_total`.
  While the request runs, its id is in a context variable, so any other log line written on its
  behalf carries it too.
- `JsonFormatter` writes every log record of the app as one JSON object on one line
  (tracebacks included, in the `exception` field); settings.LOGGING puts it on the root logger.
- `metrics_view` serves the Prometheus metrics to whoever holds ENGRAM_METRICS_TOKEN or, when
  no token is configured, to loopback callers only; everyone else gets a plain 404.

Nothing here logs headers, bodies or query strings: the route is the URL pattern, never the
path with its ids, and the key appears only as its display prefix.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import logging
import logging.config
import math
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from engram_cloud import metrics

REQUEST_LOGGER_NAME = "engram.requests"
UNMATCHED_ROUTE = "unmatched"
# The fields of every request log line, in order (ARCHITECTURE.md §3 step 10).
REQUEST_LOG_FIELDS = (
    "request_id",
    "tenant_id",
    "tenant_slug",
    "user_id",
    "key_prefix",
    "route",
    "method",
    "status_code",
    "latency_ms",
    "error_code",
)

request_logger = logging.getLogger(REQUEST_LOGGER_NAME)
logger = logging.getLogger(__name__)

_request_id: ContextVar[str | None] = ContextVar("engram_request_id", default=None)

Handler = Callable[[HttpRequest], HttpResponse]


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


# --- The request log and request metrics --------------------------------------------------------


class RequestObservabilityMiddleware:
    """One log line and the request metrics for every request, whatever answered it."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        token = _request_id.set(getattr(request, "request_id", None))
        response: HttpResponse | None = None
        try:
            response = self.get_response(request)
            return response
        finally:
            try:
                observe(request, response, time.perf_counter() - started)
            except Exception:
                # Describing the request must never fail it.
                logger.exception("could not record the request")
            finally:
                _request_id.reset(token)


def observe(request: HttpRequest, response: HttpResponse | None, seconds: float) -> None:
    # No response means an exception escaped every handler: the server will answer 500.
    status = response.status_code if response is not None else 500
    route = route_of(request)
    metrics.REQUESTS.labels(route=route, status=str(status)).inc()
    metrics.REQUEST_LATENCY.labels(route=route).observe(seconds)
    if status == 401:
        metrics.AUTH_FAILURES.inc()
    fields = request_log_fields(request, route=route, status=status, seconds=seconds)
    request_logger.log(
        logging.ERROR if status >= 500 else logging.INFO,
        "%s %s %s",
        fields["method"],
        route,
        status,
        extra=fields,
    )


def route_of(request: HttpRequest) -> str:
    """The URL pattern that matched ("v1/memories/<memory_id:memory_id>"), or "unmatched".

    A request answered by middleware before URL resolution (a 401, a 413) is resolved here, so
    it is still counted under its route rather than lumped with unknown paths.
    """
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            return UNMATCHED_ROUTE
    # The landing page's pattern is the empty string.
    return match.route or "/"


def request_log_fields(
    request: HttpRequest, *, route: str, status: int, seconds: float
) -> dict[str, Any]:
    principal = getattr(request, "principal", None)
    tenant = getattr(request, "tenant", None)
    return {
        "request_id": getattr(request, "request_id", None),
        "tenant_id": str(tenant.id) if tenant is not None else None,
        "tenant_slug": tenant.slug if tenant is not None else None,
        "user_id": getattr(principal, "user_id", None),
        "key_prefix": getattr(principal, "key_prefix", None),
        "route": route,
        "method": request.method,
        "status_code": status,
        "latency_ms": round(seconds * 1000, 3),
        "error_code": getattr(request, "error_code", None),
    }


# --- JSON logs -----------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}
_SKIP = object()


def _plain(value: Any, depth: int = 0) -> Any:
    """`value` as JSON data, or _SKIP for objects whose text could reveal anything (requests)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, uuid.UUID | dt.datetime | dt.date | Decimal):
        return str(value)
    if depth < 3 and isinstance(value, list | tuple | set | frozenset):
        items = [_plain(item, depth + 1) for item in value]
        return [item for item in items if item is not _SKIP]
    if depth < 3 and isinstance(value, dict):
        plain = {str(k): _plain(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in plain.items() if v is not _SKIP}
    return _SKIP


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: timestamp, level, logger, message, request_id
    (when known), the record's plain `extra` fields, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = record.__dict__.get("request_id") or current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name in _RECORD_ATTRIBUTES or name in entry or name.startswith("_"):
                continue
            plain = _plain(value)
            if plain is not _SKIP:
                entry[name] = plain
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: no raw line separators (U+2028…) can split the line.
        return json.dumps(entry, ensure_ascii=True, default=str)


def configure_logging(config: dict[str, Any]) -> None:
    """settings.LOGGING_CONFIG: settings.LOGGING, and Python's warnings as log records too
    (logger "py.warnings"), so that they are JSON lines like the rest instead of loose text."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


# --- GET /metrics --------------------------------------------------------------------------------

_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def metrics_access_allowed(request: HttpRequest) -> bool:
    """The configured bearer token, or (no token configured) a direct loopback caller.

    A request that came through a proxy carries a forwarding header; it is refused even from a
    loopback address, since a proxy on the same host makes every caller look local.
    """
    token = settings.ENGRAM_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8"), token.encode("utf-8")
        )
    if any(request.META.get(header) for header in _FORWARDING_HEADERS):
        return False
    return _is_loopback(request.META.get("REMOTE_ADDR", ""))


@csrf_exempt
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; a 404 like any unknown path for callers who may not see it."""
    if not metrics_access_allowed(request):
        raise Http404
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    body, content_type = metrics.exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
