"""API overhead: authenticated `GET /v1/memories/{id}` vs a bare DRF hello-world view.

    .venv/bin/python bench/api_overhead.py [--seconds 10] [--connections 4] [--worker-class sync]
                                           [--redis-url redis://127.0.0.1:6379/12]

One gunicorn (2 workers) serves the project with bench/benchsite's URLconf, which adds
`GET /bench/hello` (DRF APIView, no authentication, no permissions) to the product's URLs. In
one run the load generator measures requests/s and latencies of the hello view and of the
authenticated read (Bearer API key of a tenant with 5 memories, cycling over them), in
alternating slices so that both see the same background load on this shared machine.

Judged by: authenticated read rate / hello-world rate >= 0.60.

With `--redis-url` the server has REDIS_URL, as production does (with PostgreSQL): rate limits,
quota counters, the usage buffer and the API-key cache (tenants/key_cache.py) are in Redis.
The tenant is on Enterprise (no rate limit), so a request makes no round trip to Redis
before the view: a key read from the cache is checked against the epochs the worker has been
sent (tenants/key_cache.py).

Worker class: sync (gunicorn's default), 2 workers, 4 client connections. A sync worker
accepts a connection only when it is free and closes it after the response, so requests
spread evenly over both workers. gthread keeps each keep-alive connection on the worker that
happened to accept it, so with a handful of connections one worker can hold most of them
while the other idles. Measured here: throughput was the same within noise (hello
1,110-1,196 req/s sync vs 1,195-1,325 gthread, back to back), while two identical servers
side by side (tenant_scale.py's calibration, 2 connections) differed in p50 by 18% with
gthread and 4-13% with sync. The load generator keeps connections alive when the server
allows it and reconnects when it does not (a loopback connect, paid equally by both views).
`--worker-class gthread --threads 2 --connections 8` repeats the measurement with gthread.
"""

from __future__ import annotations

import argparse

from _harness import (
    BenchEnvironment,
    BenchError,
    LoadResult,
    RequestSpec,
    Server,
    Workload,
    bearer,
    bench_environment,
    create_memory_over_http,
    fixtures,
    gunicorn,
    http_request,
    load_rows,
    main_wrapper,
    measure_interleaved,
    print_busy_warning,
    print_errors,
    print_header,
    print_table,
    redis_client,
    verdict,
    warm_up,
)

TARGET_RATIO = 0.60
MEMORIES = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="per view, not measured")
    parser.add_argument("--connections", type=int, default=4, help="client connections")
    parser.add_argument("--slices", type=int, default=10, help="alternating slices per view")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=2, help="per gthread worker")
    parser.add_argument(
        "--redis-url",
        help="serve with REDIS_URL (production's shape), e.g. redis://127.0.0.1:6379/12: a "
        "Redis database for this run alone, flushed at the start and the end",
    )
    return parser.parse_args()


def prepare_reads(server: Server, key: str) -> list[RequestSpec]:
    """A few memories of the tenant, created over the API; the reads cycle over them."""
    reads = []
    for number in range(MEMORIES):
        memory_id = create_memory_over_http(server.port, key, f"api overhead memory {number}")
        reads.append(RequestSpec(f"/v1/memories/{memory_id}", bearer(key)))
    for spec in reads:
        status, body = http_request(server.port, "GET", spec.path, spec.headers)
        if status != 200:
            raise BenchError(f"GET {spec.path} answered {status}: {body}")
    return reads


def run(environment: BenchEnvironment, args: argparse.Namespace) -> list[LoadResult]:
    tenant = fixtures(environment.env, "setup-tenants", prefix=environment.run_id, start=1, count=1)
    key = tenant["tenants"][0]["key"]
    hello = [RequestSpec("/bench/hello")]
    with gunicorn(
        environment, workers=args.workers, worker_class=args.worker_class, threads=args.threads
    ) as server:
        print_header(
            "API overhead: authenticated GET /v1/memories/{id} vs DRF hello world",
            environment,
            server=server.description,
            load=f"{args.connections} client connections (http.client, threads), "
            f"{args.warmup:g} s warm-up, then {args.seconds:g} s per view "
            f"in {args.slices} alternating slices",
            redis=f"{args.redis_url} (flushed at the start and the end)"
            if args.redis_url
            else "none (in-process cache and rate limits)",
        )
        reads = prepare_reads(server, key)
        status, body = http_request(server.port, "GET", "/bench/hello")
        if status != 200:
            raise BenchError(f"GET /bench/hello answered {status}: {body}")
        for requests in (hello, reads):
            warm_up(server, requests, args.warmup, args.connections)
        return measure_interleaved(
            [
                Workload("GET /bench/hello (DRF, no auth)", server, hello),
                Workload("GET /v1/memories/{id} (API key)", server, reads),
            ],
            seconds=args.seconds,
            connections=args.connections,
            slices=args.slices,
        )


def report(results: list[LoadResult]) -> None:
    hello, read = results
    if hello.ok == 0 or read.ok == 0:
        print_errors(results)
        raise BenchError("a measurement got no successful answer")
    print_table(*load_rows(results))
    print_errors(results)
    print_busy_warning(results)
    ratio = read.rate / hello.rate
    print(
        f"ratio authenticated read / hello world = {read.rate:,.0f} / {hello.rate:,.0f} req/s "
        f"= {ratio:.2f}  (target >= {TARGET_RATIO:.2f})  {verdict(ratio >= TARGET_RATIO)}"
    )


def main() -> None:
    args = parse_args()
    client = redis_client(args.redis_url) if args.redis_url else None
    try:
        if client is not None:
            client.flushdb()
        with bench_environment() as environment:
            if args.redis_url:
                environment.env["REDIS_URL"] = args.redis_url
            results = run(environment, args)
    finally:
        if client is not None:
            client.flushdb()
    report(results)


if __name__ == "__main__":
    main_wrapper(main)
