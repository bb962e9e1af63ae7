"""Prometheus metrics: the one place they are defined. Served at `GET /metrics`.

Import the constant and count where the thing happens, e.g.::

    from engram_cloud.metrics import RATE_LIMITED
    RATE_LIMITED.inc()

- `REQUESTS`: `requests_total{route,status}`, counted by the request middleware.
- `REQUEST_LATENCY`: `request_latency_seconds{route}` (histogram), the request middleware.
- `AUTH_FAILURES`: `auth_failures_total`, the request middleware on every 401 (do not count
  it again elsewhere).
- `RATE_LIMITED`: `rate_limited_total`, the rate limiter on every 429.
- `QUOTA_EXCEEDED`: `quota_exceeded_total`, the quota check on every 402.
- `USAGE_FLUSH_FAILURES`: `usage_flush_failures_total`, the usage flush task per failed flush.
- `RATE_LIMIT_BACKEND_ERRORS`: `rate_limit_backend_errors_total`, the rate limiter each time
  it cannot reach Redis and lets the request through (fails open).
- `TENANT_DATABASE_ERRORS`: `tenant_database_errors_total`, the data plane each time a
  tenant's database cannot be opened or used.

Only `REQUESTS` and `REQUEST_LATENCY` have labels; every other metric is a plain counter
(`.inc()`). No metric ever has a tenant label: per-tenant numbers are in the request log and
the usage tables, not in Prometheus (unbounded label values would swamp it). `route` is the
URL pattern ("v1/memories/<memory_id:memory_id>"), never a raw path.

Several gunicorn workers: set `PROMETHEUS_MULTIPROC_DIR` to an empty directory writable by
every worker (wiped at each deploy) before the workers start; each process then writes its
values there and `/metrics` adds them up with `MultiProcessCollector`. Without it, `/metrics`
shows only the process that answered the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

# `*_created` series double the output and nothing here reads them.
disable_created_metrics()

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_DIR_ENV):
    # Every process writes its values there, a management command as much as a worker; gunicorn
    # empties it at start (gunicorn.conf.py), which may leave it missing for the first one.
    os.makedirs(os.environ[MULTIPROC_DIR_ENV], exist_ok=True)
# From 1 ms (a cached read) to 5 s (a large import); anything slower lands in +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "requests_total", "HTTP requests answered, by URL pattern and status.", ["route", "status"]
)
REQUEST_LATENCY = Histogram(
    "request_latency_seconds",
    "Time from the request reaching Django to the response leaving it, by URL pattern.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
AUTH_FAILURES = Counter("auth_failures_total", "Requests refused with 401 (bad credentials).")
RATE_LIMITED = Counter("rate_limited_total", "Requests refused with 429 by the rate limiter.")
QUOTA_EXCEEDED = Counter("quota_exceeded_total", "Requests refused with 402 by a plan quota.")
USAGE_FLUSH_FAILURES = Counter(
    "usage_flush_failures_total", "Usage-buffer flushes that failed (the batch is kept)."
)
RATE_LIMIT_BACKEND_ERRORS = Counter(
    "rate_limit_backend_errors_total",
    "Rate-limit checks that could not reach Redis and let the request through (fail open).",
)
TENANT_DATABASE_ERRORS = Counter(
    "tenant_database_errors_total", "Failures to open or use a tenant's database."
)


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The current metrics, and their content type: Prometheus text format, or OpenMetrics when
    the scraper's Accept header asks for it. With PROMETHEUS_MULTIPROC_DIR set, the sum over
    every process that wrote there."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
