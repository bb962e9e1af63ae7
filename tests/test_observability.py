"""What staff see: one JSON log line per request, every log line JSON, /metrics, /ready.

ARCHITECTURE.md §3 step 10: the request line carries request_id, tenant_id, tenant_slug,
user_id, key prefix, route, method, status_code, latency_ms and error_code, and never a secret
or memory content.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
from django.http import HttpRequest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from engram_cloud.observability import JsonFormatter
from memories import services as memory_services
from tenants import api_keys

from .conftest import ApiClient, TenantFixture

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REQUEST_FIELDS = {
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
}
NAMED_METRICS = (
    "requests_total",
    "request_latency_seconds",
    "auth_failures_total",
    "rate_limited_total",
    "quota_exceeded_total",
    "usage_flush_failures_total",
    "rate_limit_backend_errors_total",
    "tenant_database_errors_total",
)
SECRET_CONTENT = "the vault combination is 31-41-59-26"
REJECTED_CONTENT = "my bank pin is 8675309 and nobody may know"
QUERY_MARKER = "query-string-marker-2718"
DETAIL_ROUTE = "v1/memories/<memory_id:memory_id>"


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[str]]]:
    """Every line the app logs during the test, written as the production handler writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: stream.getvalue().splitlines()
    finally:
        root.removeHandler(handler)


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert {"timestamp", "level", "logger", "message"} <= set(entry), entry
    return entries


def request_entries(lines: list[str]) -> list[dict[str, Any]]:
    return [entry for entry in parsed(lines) if entry["logger"] == "engram.requests"]


def scrape(client: Client | None = None, **headers: str) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# --- The request log -----------------------------------------------------------------------------


def test_it_logs_one_json_line_per_request_with_every_field(
    acme: TenantFixture, alice_api: ApiClient, log_lines: Callable[[], list[str]]
):
    created = alice_api.post("/v1/memories", {"content": SECRET_CONTENT})
    missing = alice_api.get(f"/v1/memories/987654?probe={QUERY_MARKER}")
    refused = ApiClient(api_keys.generate_key()).get("/v1/memories")
    invalid = alice_api.post("/v1/memories", {"content": REJECTED_CONTENT, "importance": 7})
    assert [r.status_code for r in (created, missing, refused, invalid)] == [201, 404, 401, 400]

    entries = request_entries(log_lines())
    assert len(entries) == 4
    for entry in entries:
        assert set(entry) >= REQUEST_FIELDS, entry
        assert isinstance(entry["latency_ms"], float)
        assert entry["latency_ms"] > 0
    acme_fields = {
        "tenant_id": str(acme.tenant.id),
        "tenant_slug": "acme",
        "user_id": None,
        "key_prefix": acme.api_key.prefix,
    }
    nobody = {"tenant_id": None, "tenant_slug": None, "user_id": None, "key_prefix": None}
    expected = [
        (created, {**acme_fields, "route": "v1/memories", "method": "POST", "status_code": 201,
                   "error_code": None}),
        (missing, {**acme_fields, "route": DETAIL_ROUTE, "method": "GET", "status_code": 404,
                   "error_code": "not_found"}),
        (refused, {**nobody, "route": "v1/memories", "method": "GET", "status_code": 401,
                   "error_code": "unauthorized"}),
        (invalid, {**acme_fields, "route": "v1/memories", "method": "POST", "status_code": 400,
                   "error_code": "validation_error"}),
    ]  # fmt: skip
    for entry, (response, fields) in zip(entries, expected, strict=True):
        assert entry["request_id"] == response["X-Request-Id"]
        assert {name: entry[name] for name in fields} == fields


def test_it_never_logs_keys_bodies_memory_content_or_query_strings(
    acme: TenantFixture, alice_api: ApiClient, log_lines: Callable[[], list[str]]
):
    wrong_key = api_keys.generate_key()
    created = alice_api.post("/v1/memories", {"content": SECRET_CONTENT, "tags": ["private"]})
    alice_api.get(f"/v1/memories/{created.json()['id']}?probe={QUERY_MARKER}")
    alice_api.get("/v1/memories/987654")
    ApiClient(wrong_key).get("/v1/memories")
    ApiClient(**{"X-API-Key": acme.key}).get("/v1/memories")
    alice_api.post("/v1/memories", {"content": REJECTED_CONTENT, "importance": 7})

    text = "\n".join(log_lines())
    assert len(request_entries(log_lines())) == 6
    secret_tail = acme.key[len(acme.api_key.prefix) :]
    for forbidden in (
        acme.key,
        secret_tail,
        wrong_key,
        wrong_key[len("ek_live_") :],
        SECRET_CONTENT,
        REJECTED_CONTENT,
        QUERY_MARKER,
        "Bearer",
        "private",
    ):
        assert forbidden not in text, forbidden


def test_it_names_the_route_by_its_pattern_not_the_path(
    alice_api: ApiClient, log_lines: Callable[[], list[str]]
):
    alice_api.get("/v1/memories/424242")
    alice_api.get("/v1/memories/525252")
    Client().get("/no/such/page/31337")

    routes = [entry["route"] for entry in request_entries(log_lines())]
    assert routes == [DETAIL_ROUTE, DETAIL_ROUTE, "unmatched"]
    assert not any("424242" in line or "31337" in line for line in log_lines())


def test_it_stamps_the_request_id_on_every_line_logged_during_the_request(
    alice_api: ApiClient, log_lines: Callable[[], list[str]]
):
    created = alice_api.post("/v1/memories", {"content": "a memory"})
    real_get_memory = memory_services.get_memory

    def get_memory_and_log(memory_id: int) -> Any:
        logging.getLogger("memories.somewhere").warning("looking up memory %s", memory_id)
        return real_get_memory(memory_id)

    with mock.patch.object(memory_services, "get_memory", get_memory_and_log):
        response = alice_api.get(f"/v1/memories/{created.json()['id']}")
    assert response.status_code == 200
    logging.getLogger("memories.somewhere").warning("after the request")

    entries = parsed(log_lines())
    inside = next(entry for entry in entries if entry["message"].startswith("looking up"))
    assert inside["request_id"] == response["X-Request-Id"]
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "memories.somewhere"
    after = next(entry for entry in entries if entry["message"] == "after the request")
    assert "request_id" not in after


def test_it_logs_a_server_error_and_its_traceback_as_single_json_lines(
    alice_api: ApiClient, log_lines: Callable[[], list[str]]
):
    alice_api.client.raise_request_exception = False
    with mock.patch.object(
        memory_services, "get_memory", side_effect=RuntimeError("boom in the data plane")
    ):
        response = alice_api.get("/v1/memories/1")
    assert response.status_code == 500

    entries = parsed(log_lines())
    django_error = next(entry for entry in entries if entry["logger"] == "django.request")
    assert django_error["level"] == "ERROR"
    assert django_error["request_id"] == response["X-Request-Id"]
    assert "Traceback (most recent call last)" in django_error["exception"]
    assert "RuntimeError: boom in the data plane" in django_error["exception"]
    assert "request" not in django_error  # the request object's text would carry the path
    (request_line,) = request_entries(log_lines())
    assert request_line["status_code"] == 500
    assert request_line["level"] == "ERROR"
    assert request_line["error_code"] == "internal_error"


# --- The JSON formatter --------------------------------------------------------------------------


def test_it_formats_a_record_as_one_json_object_on_one_line():
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "engram.test", logging.ERROR, __file__, 1, "failed for %s", ("acme",), exc_info
    )
    probe = HttpRequest()
    probe.META["QUERY_STRING"] = f"q={QUERY_MARKER}"
    record.request = probe
    record.status_code = 500
    record.tenant_slug = "acme"

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "engram.test"
    assert entry["message"] == "failed for acme"
    assert entry["timestamp"].endswith("Z")
    assert entry["status_code"] == 500
    assert entry["tenant_slug"] == "acme"
    assert "ValueError: line one\nline two" in entry["exception"]
    assert "request" not in entry
    assert "request_id" not in entry
    assert QUERY_MARKER not in line


def test_it_configures_every_log_line_of_the_app_as_json():
    root = logging.getLogger()
    assert any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers)
    # Django's plain-text handlers are gone: its records reach the JSON handler through root.
    assert logging.getLogger("django").handlers == []
    assert logging.getLogger("django").propagate


# --- /metrics -----------------------------------------------------------------------------------


def test_it_exposes_every_named_metric_without_a_tenant_label(alice_api: ApiClient):
    alice_api.get("/v1/memories")

    samples = scrape()

    names = {name for name, _ in samples}
    for metric in NAMED_METRICS:
        assert any(name == metric or name.startswith(f"{metric}_") for name in names), metric
    labels = {label for _, pairs in samples for label, _ in pairs}
    assert not {label for label in labels if "tenant" in label}


def test_it_counts_each_request_by_route_and_status(acme: TenantFixture, alice_api: ApiClient):
    created_201 = ("requests_total", (("route", "v1/memories"), ("status", "201")))
    latency = ("request_latency_seconds_count", (("route", "v1/memories"),))
    auth_failures = ("auth_failures_total", ())
    before = scrape()

    assert alice_api.post("/v1/memories", {"content": "counted"}).status_code == 201
    assert ApiClient(api_keys.generate_key()).get("/v1/memories").status_code == 401

    after = scrape()
    assert after[created_201] == before.get(created_201, 0) + 1
    assert after[latency] == before.get(latency, 0) + 2
    assert after[auth_failures] == before[auth_failures] + 1


def test_it_hides_metrics_from_callers_that_are_not_local_when_no_token_is_set(db, settings):
    settings.ENGRAM_METRICS_TOKEN = ""
    unknown_page = Client(REMOTE_ADDR="203.0.113.7").get("/no-such-page")

    remote = Client(REMOTE_ADDR="203.0.113.7")
    assert remote.get("/metrics").status_code == 404
    assert remote.get("/metrics").content == unknown_page.content
    assert remote.post("/metrics").status_code == 404
    proxied = Client().get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
    assert proxied.status_code == 404
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200


def test_it_serves_metrics_only_with_the_right_token_when_one_is_set(db, settings):
    settings.ENGRAM_METRICS_TOKEN = "metrics-token-for-tests"
    remote = Client(REMOTE_ADDR="203.0.113.7")

    assert remote.get("/metrics").status_code == 404
    wrong = remote.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 404
    # With a token configured, being local is not enough.
    assert Client().get("/metrics").status_code == 404
    right = remote.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"})
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain")
    assert b"# TYPE requests_total counter" in right.content


def test_it_adds_up_the_metrics_of_every_worker_in_multiprocess_mode(tmp_path: Path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = (
        "from engram_cloud import metrics\n"
        "metrics.REQUESTS.labels(route='v1/memories', status='200').inc()\n"
        "metrics.AUTH_FAILURES.inc()\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], cwd=PROJECT_ROOT, env=env, check=True)
    scraper = (
        "import sys\nfrom engram_cloud import metrics\n"
        "sys.stdout.write(metrics.exposition()[0].decode())\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", scraper],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(output)
        for sample in family.samples
    }
    assert samples[("requests_total", (("route", "v1/memories"), ("status", "200")))] == 2
    assert samples[("auth_failures_total", ())] == 2


# --- /ready and Redis ----------------------------------------------------------------------------


def redis_cache(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }


def test_it_is_not_ready_when_the_configured_redis_does_not_answer(db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = redis_cache(settings.REDIS_URL)

    response = Client().get("/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert any("redis" in check for check in body["checks"])
    assert "redis" in body["message"]


def test_it_is_ready_when_the_configured_redis_answers(db, settings):
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    settings.REDIS_URL = url
    settings.CACHES = redis_cache(url)

    response = Client().get("/ready")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ready"
