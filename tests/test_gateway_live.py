"""The gateway against real servers: Redis, gunicorn with two workers, the real control plane.

pytest-django's test database is invisible to other processes, so each test builds its own
deployment with bench/_harness.py: a temporary ENGRAM_DATA_DIR with a migrated SQLite control
plane (or, when DATABASE_URL is set, a private schema in that PostgreSQL database, dropped at
the end), tenants made with `manage.py create_tenant --json`, and gunicorn serving the product's
settings in its own process group, always stopped.

- A bucket of 100 shared by two workers through Redis: 200 concurrent requests, exactly 100
  served and 100 refused with 429 and Retry-After; exactly the 100 served are metered.
- The usage buffer survives a Redis outage (a private redis-server, killed and restarted):
  nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bench._harness import (
    HOST,
    PYTHON,
    ROOT,
    BenchEnvironment,
    Server,
    bench_environment,
    free_port,
    gunicorn,
    run_checked,
)

pytestmark = pytest.mark.slow

SHARED_REDIS_PORT = 6379
# A database of the shared Redis for this test alone; only it is ever flushed.
SHARED_REDIS_DB = 14
REQUEST_TIMEOUT_SECONDS = 30


def shared_redis() -> redis.Redis:
    return redis.Redis(HOST, SHARED_REDIS_PORT, db=SHARED_REDIS_DB, socket_connect_timeout=1)


def require_shared_redis() -> redis.Redis:
    client = shared_redis()
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis on {HOST}:{SHARED_REDIS_PORT} ({exc})")
    return client


# --- The deployment ------------------------------------------------------------------------------


@contextlib.contextmanager
def deployment(redis_url: str) -> Iterator[BenchEnvironment]:
    """A fresh, migrated deployment whose processes use the product settings and `redis_url`."""
    with bench_environment() as environment:
        environment.env.update(
            DJANGO_SETTINGS_MODULE="engram_cloud.settings",
            REDIS_URL=redis_url,
            ENGRAM_BASE_DOMAIN="localhost",
        )
        yield environment


def manage(environment: BenchEnvironment, *arguments: str) -> str:
    return run_checked([PYTHON, "manage.py", *arguments], environment.env, arguments[0])


def create_tenant(environment: BenchEnvironment, per_minute: int, burst: int) -> dict[str, str]:
    """A free-plan tenant with an API key, and a staff override of its rate limit."""
    slug = f"live-{environment.run_id}"
    stdout = manage(environment, "create_tenant", slug, "--owner", f"owner@{slug}.test", "--json")
    tenant = json.loads(stdout.strip().splitlines()[-1])
    manage(
        environment,
        "shell",
        "-c",
        "from tenants.models import Tenant; "
        f"assert Tenant.objects.filter(slug={slug!r}).update("
        f"rate_limit_per_minute={per_minute}, rate_limit_burst={burst}) == 1",
    )
    return tenant


def flush_usage(environment: BenchEnvironment) -> int:
    """`manage.py flush_usage`; returns how many new events it stored."""
    stdout = manage(environment, "flush_usage")
    # "Stored N new usage events; M still buffered."
    return int(stdout.split("Stored ", 1)[1].split()[0])


def flush_usage_until(environment: BenchEnvironment, expected: int, seconds: float = 10) -> int:
    """Flush until `expected` new events are stored: a running worker sends its events to Redis
    within ENGRAM_USAGE_SEND_MS (a second while Redis was away), not with the response."""
    stored = 0
    deadline = time.monotonic() + seconds
    while stored < expected and time.monotonic() < deadline:
        stored += flush_usage(environment)
        if stored < expected:
            time.sleep(0.1)
    return stored


def wait_for_log(server: Server, text: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while True:
        log = server_log(server, tail=10**7)
        if text in log or time.monotonic() > deadline:
            return log


def metered_request_ids(environment: BenchEnvironment) -> list[str]:
    """Every UsageEvent's request id in the control plane (duplicates kept, if any)."""
    stdout = manage(
        environment,
        "shell",
        "-c",
        "import json; from billing.models import UsageEvent; "
        "print(json.dumps(list(UsageEvent.objects.values_list('request_id', flat=True))))",
    )
    return json.loads(stdout.strip().splitlines()[-1])


# --- Requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    request_id: str
    status: int
    retry_after: str | None


def get_memories(port: int, key: str, request_id: str) -> Answer:
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        connection.request(
            "GET",
            "/v1/memories",
            headers={"Authorization": f"Bearer {key}", "X-Request-Id": request_id},
        )
        response = connection.getresponse()
        response.read()
        return Answer(request_id, response.status, response.getheader("Retry-After"))
    finally:
        connection.close()


def concurrently(port: int, key: str, request_ids: Sequence[str], threads: int) -> list[Answer]:
    """Send the requests from `threads` threads that start together; every answer, in order."""
    answers: list[Answer | BaseException | None] = [None] * len(request_ids)
    barrier = threading.Barrier(threads)

    def send(offset: int) -> None:
        barrier.wait()
        for index in range(offset, len(request_ids), threads):
            try:
                answers[index] = get_memories(port, key, request_ids[index])
            except BaseException as exc:
                answers[index] = exc

    pool = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 10)
    assert not any(thread.is_alive() for thread in pool), "requests did not finish"
    failures = [answer for answer in answers if not isinstance(answer, Answer)]
    assert not failures, f"requests without an answer: {failures[:3]}"
    return answers  # type: ignore[return-value]


def request_ids(tag: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"live-{run}-{tag}-{number:03d}" for number in range(count)]


def server_log(server: Server, tail: int = 3000) -> str:
    return server.log_path.read_text(errors="replace")[-tail:]


# --- 200 requests, a bucket of 100 ----------------------------------------------------------------


def test_two_workers_share_one_bucket_and_only_served_requests_are_metered() -> None:
    client = require_shared_redis()
    client.flushdb()  # a buffer left behind by an earlier run would be flushed into ours
    try:
        with deployment(f"redis://{HOST}:{SHARED_REDIS_PORT}/{SHARED_REDIS_DB}") as environment:
            # 100 tokens, refilled at 1 a minute: the run is far shorter than a minute, so no
            # token comes back while the 200 requests are answered.
            tenant = create_tenant(environment, per_minute=1, burst=100)
            # Sync workers take one request at a time; the other 198 wait in the listen
            # backlog (2048), so all 200 are in flight at once and each gets its answer.
            with gunicorn(environment, workers=2) as server:
                assert len(server.worker_pids()) == 2
                ids = request_ids("burst", 200)
                answers = concurrently(server.port, tenant["api_key"], ids, threads=200)
                log = server_log(server)
            statuses = sorted({answer.status for answer in answers})
            served = [answer for answer in answers if answer.status == 200]
            refused = [answer for answer in answers if answer.status == 429]
            assert (len(served), len(refused)) == (100, 100), (statuses, log)
            for answer in refused:
                assert answer.retry_after is not None and int(answer.retry_after) >= 1

            # Refused requests are not metered; each served one exactly once.
            assert flush_usage(environment) == 100
            metered = metered_request_ids(environment)
            assert len(metered) == 100
            assert set(metered) == {answer.request_id for answer in served}
    finally:
        client.flushdb()


# --- The usage buffer and a Redis outage ------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own on a loopback port, to kill and restart at will."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
        ]
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis(HOST, self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
        log_text = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        self.kill()
        raise AssertionError(f"redis-server did not start on port {self.port}:\n{log_text}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def test_usage_buffer_survives_a_redis_outage(tmp_path: Path) -> None:
    require_shared_redis()
    private = PrivateRedis(tmp_path)
    private.start()
    try:
        with deployment(private.url) as environment:
            tenant = create_tenant(environment, per_minute=60_000, burst=10_000)
            key = tenant["api_key"]
            with gunicorn(environment, workers=2) as server:
                before, during, after = (
                    request_ids("before", 10),
                    request_ids("during", 12),
                    request_ids("after", 24),
                )
                answers = concurrently(server.port, key, before, threads=4)
                assert {answer.status for answer in answers} == {200}, server_log(server)
                assert flush_usage_until(environment, len(before)) == len(before)

                # Redis gone: requests are still served (rate limits and quota counters fail
                # open), and each worker keeps its events in the process.
                private.kill()
                answers = concurrently(server.port, key, during, threads=4)
                log = wait_for_log(server, "keeping the events in the process")
                assert {answer.status for answer in answers} == {200}, log[-3000:]
                assert "rate limiter unavailable" in log
                assert "usage buffer unreachable; keeping the events in the process" in log

                # Redis back, empty: each worker sends the events it kept (its sender retries
                # once a second), and serves and meters the next requests as usual.
                private.start()
                answers = concurrently(server.port, key, after, threads=4)
                assert {answer.status for answer in answers} == {200}, server_log(server)

            assert flush_usage(environment) == len(during) + len(after)
            metered = metered_request_ids(environment)
            assert sorted(metered) == sorted([*before, *during, *after])
    finally:
        private.kill()
