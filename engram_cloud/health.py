"""Liveness and readiness probes for the load balancer and the orchestrator."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection

from engram_cloud.errors import ApiError, error_response
from tenants.permissions import Access, declare


@declare(Access.PUBLIC)
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """The process is up and answering."""
    return JsonResponse({"status": "ok"})


def _problems() -> list[str]:
    problems = []
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        problems.append("control-plane database unreachable")
    tenants_dir = settings.ENGRAM_DATA_DIR / "tenants"
    if not tenants_dir.is_dir():
        problems.append("tenant data directory missing")
    if settings.REDIS_URL and not _redis_answers():
        problems.append("redis unreachable")
    return problems


def _redis_answers() -> bool:
    """PING through the cache's own connection pool (settings give it 1 s timeouts), or
    REDIS_URL directly when the default cache is not Redis."""
    try:
        try:
            return bool(get_redis_connection("default").ping())
        except NotImplementedError:
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1
            )
            try:
                return bool(client.ping())
            finally:
                client.close()
    except Exception:
        return False


@declare(Access.PUBLIC)
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """Both planes can serve: the control-plane database answers, tenant files are reachable,
    and Redis (when configured) answers."""
    problems = _problems()
    if problems:
        return error_response(
            request,
            ApiError(
                503, "unavailable", "Not ready: " + "; ".join(problems) + ".", checks=problems
            ),
        )
    return JsonResponse({"status": "ready"})
