"""Gateway cost: authenticated `GET /v1/memories/{id}` with rate limiting, quotas and metering
on (Redis) vs the same with them off.

    .venv/bin/python bench/gateway.py [--seconds 10] [--latency-seconds 8] [--connections 4]
                                      [--redis-url redis://127.0.0.1:6379/13] [--profile]

One deployment (a fresh control plane and data directory), one Pro tenant with an API key and
5 memories, and three gunicorns (2 sync workers each) side by side, all with REDIS_URL (a
database of its own, flushed at the start and the end, nothing else touched):

  on            the whole gateway: a token bucket in Redis (Lua) whose script also reads the
                month's API-call counter for the quota (one round trip; this bucket is large,
                so a worker takes a lease of burst / 1000 tokens per trip), metering (the event
                and the counter increment into the process's outbox, sent to Redis by a
                thread every ENGRAM_USAGE_SEND_MS in one trip). The tenant's rate limit is
                overridden far above what the load sends: the limiter runs on every request
                and never refuses one.
  metering off  the same with ENGRAM_METERING_ENABLED=0: limited and quota-checked, not metered.
  gateway off   ENGRAM_GATEWAY_ENABLED=0: none of the three stages.

Before measuring, each server is checked to do what its name says (RateLimit headers, events
on the Redis list). Then, in alternating slices so that all see the same background load:

  1. throughput: `--connections` client connections against each server;
  2. latency: one connection (p50 is then the time of one request, not queueing for the two
     shared cores).

Judged by: (1) req/s on / req/s gateway off >= 0.85; (2) p50 on - p50 metering off <= 0.5 ms.

Afterwards, in this process (django.setup() with the deployment's environment, same Redis),
each gateway stage is timed on its own: the token bucket with the counter read,
check_request_quotas with the counter known, usage.record, and one send of an outbox.
With --profile, or when a target is missed, the authenticated read is profiled in-process
(django.test.Client, cProfile) with the gateway on and off.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import http.client
import io
import json
import logging
import os
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

from _harness import (
    HOST,
    PYTHON,
    BenchEnvironment,
    BenchError,
    LoadResult,
    RequestSpec,
    Server,
    Workload,
    bearer,
    bench_environment,
    create_memory_over_http,
    gunicorn,
    load_rows,
    main_wrapper,
    measure_interleaved,
    print_busy_warning,
    print_errors,
    print_header,
    print_table,
    redis_client,
    run_checked,
    setup_django_in_process,
    verdict,
    warm_up,
)

TARGET_RATIO = 0.85
TARGET_METERING_MS = 0.5
MEMORIES = 5
PLAN = "pro"  # has a monthly API-call quota, so the quota check reads its counter
# Far above anything the load generator sends: the bucket is taken, never empty.
RATE_LIMIT_PER_MINUTE = 60_000_000
RATE_LIMIT_BURST = 1_000_000
USAGE_LIST = "engram:usage:events"  # billing.usage.REDIS_KEY

VARIANTS = {
    "on": {"ENGRAM_GATEWAY_ENABLED": "1", "ENGRAM_METERING_ENABLED": "1"},
    "metering off": {"ENGRAM_GATEWAY_ENABLED": "1", "ENGRAM_METERING_ENABLED": "0"},
    "gateway off": {"ENGRAM_GATEWAY_ENABLED": "0", "ENGRAM_METERING_ENABLED": "1"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput, per variant")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="latency, per variant")
    parser.add_argument("--warmup", type=float, default=3.0, help="per variant, not measured")
    parser.add_argument("--connections", type=int, default=4, help="for the throughput phase")
    parser.add_argument("--slices", type=int, default=10, help="alternating slices per phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/13",
        help="a Redis database for this run alone: it is flushed at the start and the end",
    )
    parser.add_argument("--stage-calls", type=int, default=2000, help="in-process, per stage")
    parser.add_argument("--profile", action="store_true", help="profile even if both pass")
    return parser.parse_args()


# --- The deployment -------------------------------------------------------------------------


def create_tenant(environment: BenchEnvironment) -> str:
    """A Pro tenant with an API key and a staff override of its rate limit; returns the key."""
    slug = f"{environment.run_id}-gateway"
    stdout = run_checked(
        [
            *(PYTHON, "manage.py", "create_tenant", slug),
            *("--owner", f"owner@{slug}.bench.invalid", "--plan", PLAN, "--json"),
        ],
        environment.env,
        "create_tenant",
    )
    key = json.loads(stdout.strip().splitlines()[-1])["api_key"]
    run_checked(
        [
            PYTHON,
            "manage.py",
            "shell",
            "-c",
            "from tenants.models import Tenant; "
            f"assert Tenant.objects.filter(slug={slug!r}).update("
            f"rate_limit_per_minute={RATE_LIMIT_PER_MINUTE}, "
            f"rate_limit_burst={RATE_LIMIT_BURST}) == 1",
        ],
        environment.env,
        "rate limit override",
    )
    return key


def variant(environment: BenchEnvironment, name: str) -> BenchEnvironment:
    """The same deployment (control plane, data directory, Redis) with the variant's switches."""
    return dataclasses.replace(environment, env={**environment.env, **VARIANTS[name]})


def get_with_headers(port: int, spec: RequestSpec) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(spec.method, spec.path, headers=spec.headers)
        response = connection.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


def check_variants(servers: dict[str, Server], read: RequestSpec, client: Any) -> None:
    """Each server does what its name says: limited or not (headers), metered or not (list)."""
    for name, server in servers.items():
        time.sleep(0.5)  # a worker sends its events within ENGRAM_USAGE_SEND_MS
        before = client.llen(USAGE_LIST)
        status, headers = get_with_headers(server.port, read)
        time.sleep(0.5)
        metered = client.llen(USAGE_LIST) - before
        if status != 200:
            raise BenchError(f"{name}: GET {read.path} answered {status}")
        limited = "ratelimit" in headers
        expected = (name != "gateway off", 1 if name == "on" else 0)
        if (limited, metered) != expected:
            raise BenchError(
                f"{name}: RateLimit headers {limited}, events metered {metered}; "
                f"expected {expected[0]} and {expected[1]}"
            )


@dataclasses.dataclass
class Measured:
    throughput: list[LoadResult]
    latency: list[LoadResult]
    key: str
    path: str


def run(environment: BenchEnvironment, args: argparse.Namespace, client: Any) -> Measured:
    key = create_tenant(environment)
    with (
        gunicorn(variant(environment, "on"), workers=args.workers) as on,
        gunicorn(variant(environment, "metering off"), workers=args.workers) as metering_off,
        gunicorn(variant(environment, "gateway off"), workers=args.workers) as off,
    ):
        servers = {"on": on, "metering off": metering_off, "gateway off": off}
        print_header(
            "Gateway: authenticated GET /v1/memories/{id}, rate limits + quotas + metering "
            "(Redis) on vs off",
            environment,
            servers=f"3 side by side ({on.description} each): "
            + ", ".join(f"{name} ({switches(name)})" for name in servers),
            redis=f"{args.redis_url} (flushed at the start and the end)",
            tenant=f"plan {PLAN}, rate limit override {RATE_LIMIT_PER_MINUTE:,}/min, "
            f"burst {RATE_LIMIT_BURST:,}; {MEMORIES} memories, reads cycle over them",
            load=f"{args.warmup:g} s warm-up per server; throughput: {args.connections} "
            f"connections, {args.seconds:g} s per server; latency: 1 connection, "
            f"{args.latency_seconds:g} s per server; {args.slices} alternating slices each",
        )
        reads = [
            RequestSpec(
                f"/v1/memories/{create_memory_over_http(on.port, key, f'gateway memory {n}')}",
                bearer(key),
            )
            for n in range(MEMORIES)
        ]
        check_variants(servers, reads[0], client)
        for server in servers.values():
            warm_up(server, reads, args.warmup, args.connections)
        labels = {
            "on": "on: rate limit + quota + metering",
            "metering off": "metering off: rate limit + quota",
            "gateway off": "gateway off",
        }
        throughput = measure_interleaved(
            [
                Workload(f"{labels[name]}, {args.connections} conns", server, reads)
                for name, server in servers.items()
            ],
            seconds=args.seconds,
            connections=args.connections,
            slices=args.slices,
        )
        latency = measure_interleaved(
            [
                Workload(f"{labels[name]}, 1 conn", server, reads)
                for name, server in servers.items()
            ],
            seconds=args.latency_seconds,
            connections=1,
            slices=args.slices,
        )
    return Measured(throughput, latency, key, reads[0].path)


def switches(name: str) -> str:
    return " ".join(f"{key}={value}" for key, value in VARIANTS[name].items())


# --- In process: each stage on its own, and the profile ----------------------------------------


def timed_us(call: Callable[[], Any], count: int) -> tuple[float, float]:
    """(p50, mean) microseconds per call."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(1e6 * (time.perf_counter() - started))
    return statistics.median(times), statistics.fmean(times)


def stage_costs(key: str, count: int) -> list[list[Any]]:
    """The gateway's stages, each timed on its own."""
    from django_redis import get_redis_connection

    from billing import usage
    from billing.quotas import check_request_quotas
    from tenants.authentication import authenticate_api_key
    from tenants.middleware import take_rate_limit_token

    tenant = authenticate_api_key(key).tenant
    assert tenant is not None
    numbers = iter(range(10**9))

    def record() -> None:
        usage.record(
            usage.make_event(
                request_id=f"stage-{next(numbers)}",
                tenant_id=str(tenant.id),
                route="reads",
                method="GET",
                status_code=200,
                searches=0,
                memories_created=0,
            )
        )

    redis = get_redis_connection("default")
    quotas = [("api_calls", 10**12)]  # a quota far away: its counter is read, never reached

    def send_ten() -> None:
        for _ in range(10):
            record()
        usage.redis_buffer.send()

    stages = [
        ("reference: one Redis round trip (PING, redis-py)", redis.ping),
        (
            "take_rate_limit_token (token bucket + counter, 1 trip per lease)",
            lambda: take_rate_limit_token(tenant, "reads", quotas),
        ),
        (
            "check_request_quotas (counter known, no trip)",
            lambda: check_request_quotas(tenant, "writes", "POST", {"api_calls": 0}),
        ),
        ("usage.record (into the process's outbox, no trip)", record),
        ("10 x usage.record + one send of the outbox (1 trip)", send_ten),
        (
            "usage.make_event alone (no Redis)",
            lambda: usage.make_event(
                request_id="x",
                tenant_id=str(tenant.id),
                route="reads",
                method="GET",
                status_code=200,
            ),
        ),
    ]
    rows = []
    for label, call in stages:
        timed_us(call, min(200, count))  # warm-up
        p50, mean = timed_us(call, count)
        rows.append([label, count, p50, mean])
    return rows


def log_to_devnull() -> None:
    """In-process requests log one line each, as the servers do to their log files; here the
    lines are formatted and written to /dev/null instead of the terminal."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as we do)


def profile_reads(path: str, key: str, count: int) -> str:
    """The read through the full middleware stack in-process, gateway on and off, profiled."""
    from django.test import Client, override_settings

    client = Client(HTTP_HOST="127.0.0.1")

    def read() -> None:
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
        if response.status_code != 200:
            raise BenchError(f"in-process GET {path} answered {response.status_code}")

    out = io.StringIO()
    means = {}
    for name, enabled in (("on", True), ("gateway off", False)):
        with override_settings(ENGRAM_GATEWAY_ENABLED=enabled, ENGRAM_METERING_ENABLED=True):
            timed_us(read, 200)
            means[name] = timed_us(read, count)[1] / 1000
    print_table(
        ["in-process read (django.test.Client)", "requests", "mean ms"],
        [[name, count, mean] for name, mean in means.items()]
        + [["difference (the gateway)", count, means["on"] - means["gateway off"]]],
    )
    with override_settings(ENGRAM_GATEWAY_ENABLED=True, ENGRAM_METERING_ENABLED=True):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(count):
            read()
        profiler.disable()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    out.write("== cProfile of the read with the gateway on, cumulative, gateway functions\n")
    stats.sort_stats("cumulative").print_stats(
        r"middleware.py.*(__call__|take_rate_limit_token)|ratelimit|quotas|usage|plans|"
        r"django_redis|redis/(client|connection|commands)",
        30,
    )
    out.write("== own time, top 25\n")
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


# --- Report ---------------------------------------------------------------------------------


def report(
    throughput: list[LoadResult], latency: list[LoadResult], stages: list[list[Any]]
) -> bool:
    for results in (throughput, latency):
        if any(result.ok == 0 for result in results):
            print_errors(results)
            raise BenchError("a measurement got no successful answer")
    print("-- throughput")
    print_table(*load_rows(throughput))
    print("-- latency (one connection)")
    print_table(*load_rows(latency))
    print_errors([*throughput, *latency])
    print_busy_warning([*throughput, *latency])
    print("-- each gateway stage in-process (same Redis), microseconds per call")
    print_table(["stage", "calls", "p50 us", "mean us"], stages)

    on, metering_off, off = throughput
    ratio = on.rate / off.rate
    ratio_ok = ratio >= TARGET_RATIO
    print(
        f"throughput gateway on / off = {on.rate:,.0f} / {off.rate:,.0f} req/s = {ratio:.2f}  "
        f"(target >= {TARGET_RATIO:.2f})  {verdict(ratio_ok)}"
    )
    print(f"   metering off / gateway off = {metering_off.rate / off.rate:.2f}")

    lat_on, lat_metering_off, lat_off = latency
    metering_ms = lat_on.p50 - lat_metering_off.p50
    paired = statistics.median(
        a.p50 - b.p50 for a, b in zip(lat_on.parts, lat_metering_off.parts, strict=True)
    )
    metering_ok = metering_ms <= TARGET_METERING_MS
    print(
        f"metering p50 cost = {lat_on.p50:.2f} - {lat_metering_off.p50:.2f} ms = "
        f"{metering_ms:+.2f} ms  (target <= {TARGET_METERING_MS} ms)  {verdict(metering_ok)}"
    )
    print(
        f"   per-slice median of the difference {paired:+.2f} ms; server CPU "
        f"{lat_on.server_cpu_ms_per_request - lat_metering_off.server_cpu_ms_per_request:+.2f}"
        " ms/req"
    )
    print(
        f"   whole gateway p50 cost (1 conn) = {lat_on.p50:.2f} - {lat_off.p50:.2f} ms = "
        f"{lat_on.p50 - lat_off.p50:+.2f} ms; server CPU "
        f"{lat_on.server_cpu_ms_per_request - lat_off.server_cpu_ms_per_request:+.2f} ms/req"
    )
    print()
    return ratio_ok and metering_ok


def main() -> None:
    args = parse_args()
    client = redis_client(args.redis_url)
    client.flushdb()
    try:
        with bench_environment() as environment:
            environment.env["REDIS_URL"] = args.redis_url
            measured = run(environment, args, client)
            # Now in this process: the same deployment and Redis, no server.
            setup_django_in_process({**environment.env, **VARIANTS["on"]})
            from django.db import connections

            log_to_devnull()
            calls = max(100, min(args.stage_calls, 100_000))
            try:
                stages = stage_costs(measured.key, calls)
                passed = report(measured.throughput, measured.latency, stages)
                if args.profile or not passed:
                    print(profile_reads(measured.path, measured.key, min(calls, 20_000)))
            finally:
                connections.close_all()
    finally:
        client.flushdb()


if __name__ == "__main__":
    main_wrapper(main)
