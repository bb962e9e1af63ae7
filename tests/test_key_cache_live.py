"""With Redis, each process caches the API keys it has read (tenants/key_cache.py); a
revocation, rotation or suspension made in another process still applies from the next
request, in every worker.

A real deployment like tests/test_gateway_live.py's: gunicorn with two workers and
REDIS_URL, the control plane in PostgreSQL when DATABASE_URL is set (SQLite otherwise). Keys
stay cached for ten minutes here, so only the epoch in Redis can make a worker let go of a key
within the test. Changes are made by `manage.py shell`, a third process.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from bench._harness import HOST, BenchEnvironment, Server, gunicorn
from tests.test_gateway_live import SHARED_REDIS_PORT, deployment, manage, require_shared_redis

pytestmark = pytest.mark.slow

# A database of the shared Redis for this module alone; only it is ever flushed.
REDIS_DB = 15
THREADS = 4
REQUESTS_PER_THREAD = 3  # 12 requests: two rounds fit in a Free bucket (burst 30)
GRACE_SECONDS = 8


@dataclass(frozen=True)
class Served:
    environment: BenchEnvironment
    server: Server


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    require_shared_redis()
    client = redis.Redis(HOST, SHARED_REDIS_PORT, db=REDIS_DB, socket_connect_timeout=1)
    client.flushdb()
    try:
        with deployment(f"redis://{HOST}:{SHARED_REDIS_PORT}/{REDIS_DB}") as environment:
            environment.env["ENGRAM_KEY_CACHE_SECONDS"] = "600"
            with gunicorn(environment, workers=2) as server:
                assert len(server.worker_pids()) == 2
                yield Served(environment, server)
    finally:
        client.flushdb()


def new_tenant(served: Served, name: str, plan: str = "free") -> dict[str, str]:
    """A tenant and its first key. On Free the epoch comes with the rate limiter's round trip
    to Redis; Enterprise has no rate limit, so it comes from each worker's subscription."""
    slug = f"{name}-{served.environment.run_id}"
    stdout = manage(
        served.environment,
        *("create_tenant", slug, "--owner", f"owner@{slug}.test", "--plan", plan, "--json"),
    )
    return json.loads(stdout.strip().splitlines()[-1])


def in_another_process(served: Served, code: str, key: str) -> str:
    """Run `code` in `manage.py shell` with `key` bound to the ApiKey row of the secret."""
    prelude = (
        "from tenants import api_keys, services; from tenants.models import ApiKey; "
        f"key = ApiKey.objects.select_related('tenant').get(digest=api_keys.key_digest({key!r}))\n"
    )
    return manage(served.environment, "shell", "-c", prelude + code).strip()


def statuses(served: Served, key: str) -> list[int]:
    """GET /v1/memories with `key` from several threads at once, so both workers answer."""
    answers: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        for _ in range(REQUESTS_PER_THREAD):
            connection = http.client.HTTPConnection(HOST, served.server.port, timeout=30)
            try:
                connection.request("GET", "/v1/memories", headers={"X-API-Key": key})
                response = connection.getresponse()
                response.read()
                with lock:
                    answers.append(response.status)
            finally:
                connection.close()

    pool = [threading.Thread(target=send, daemon=True) for _ in range(THREADS)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert len(answers) == THREADS * REQUESTS_PER_THREAD, answers
    return answers


def assert_all(served: Served, key: str, status: int) -> None:
    answers = statuses(served, key)
    assert set(answers) == {status}, answers


@pytest.mark.parametrize("plan", ["enterprise", "free"])
def test_a_revoked_key_is_refused_by_every_worker_on_the_next_request(served, plan):
    key = new_tenant(served, f"revoke-{plan}", plan)["api_key"]
    assert_all(served, key, 200)

    in_another_process(served, "services.revoke_api_key(key)", key)

    assert_all(served, key, 401)


def test_a_rotated_key_works_for_its_grace_period_then_only_the_new_one(served):
    old = new_tenant(served, "rotate", "enterprise")["api_key"]
    assert_all(served, old, 200)

    new = in_another_process(
        served,
        "import datetime as dt\n"
        f"print(services.rotate_api_key(key, grace=dt.timedelta(seconds={GRACE_SECONDS}))[1])",
        old,
    ).splitlines()[-1]
    grace_ends = time.monotonic() + GRACE_SECONDS
    assert_all(served, old, 200)
    assert_all(served, new, 200)

    time.sleep(max(0.0, grace_ends - time.monotonic()) + 0.5)
    assert_all(served, old, 401)
    assert_all(served, new, 200)


def test_a_rotation_without_grace_retires_the_old_key_at_once(served):
    old = new_tenant(served, "retire")["api_key"]
    assert_all(served, old, 200)

    new = in_another_process(
        served,
        "import datetime as dt\nprint(services.rotate_api_key(key, grace=dt.timedelta(0))[1])",
        old,
    ).splitlines()[-1]

    assert_all(served, old, 401)
    assert_all(served, new, 200)


def test_suspension_and_reactivation_reach_every_worker_on_the_next_request(served):
    key = new_tenant(served, "suspend")["api_key"]
    assert_all(served, key, 200)

    in_another_process(served, "services.suspend_tenant(key.tenant)", key)
    assert_all(served, key, 403)

    in_another_process(served, "services.reactivate_tenant(key.tenant)", key)
    assert_all(served, key, 200)
