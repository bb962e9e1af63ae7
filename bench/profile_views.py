"""Where a request's time goes: the bench's views in-process, timed and under cProfile.

    .venv/bin/python bench/profile_views.py [--requests 2000] [--top 25] [--tenants 1]

No server and no load generator: django.test.Client sends each request through the full
middleware stack (request_started/finished signals included) in this process. Prints the mean
time per request of `GET /bench/hello` and of authenticated `GET /v1/memories/{id}`, the
difference, and the top functions by cumulative and by own time for the authenticated read.
With --tenants N the reads go round-robin over N tenants (as in tenant_scale.py).
A diagnostic helper: it is not judged.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

from _harness import (
    BenchError,
    bench_environment,
    fixtures,
    main_wrapper,
    print_header,
    print_table,
    setup_django_in_process,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per view (max 100,000)")
    parser.add_argument("--top", type=int, default=25, help="rows of each profile table")
    parser.add_argument("--tenants", type=int, default=1, help="read round-robin over N")
    return parser.parse_args()


def timed(call: Callable[[int], Any], count: int) -> float:
    """Mean milliseconds per call over `count` calls."""
    started = time.perf_counter()
    for number in range(count):
        call(number)
    return 1000 * (time.perf_counter() - started) / count


def profile(call: Callable[[int], Any], count: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for number in range(count):
        call(number)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def requesters(tenants: list[dict[str, Any]]) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """Call-by-number functions for the hello view and the round-robin authenticated read."""
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    reads = [(f"/v1/memories/{row['memory_id']}", f"Bearer {row['key']}") for row in tenants]

    def hello(number: int) -> None:
        response = client.get("/bench/hello")
        if response.status_code != 200:
            raise BenchError(f"/bench/hello answered {response.status_code}")

    def read(number: int) -> None:
        path, authorization = reads[number % len(reads)]
        response = client.get(path, HTTP_AUTHORIZATION=authorization)
        if response.status_code != 200:
            raise BenchError(f"{path} answered {response.status_code}: {response.content!r}")

    return hello, read


def main() -> None:
    args = parse_args()
    count = max(10, min(args.requests, 100_000))
    tenants = max(1, min(args.tenants, 5000))
    with bench_environment() as environment:
        setup = fixtures(
            environment.env,
            "setup-tenants",
            prefix=environment.run_id,
            start=1,
            count=tenants,
            memories=True,
        )
        setup_django_in_process(environment.env)
        from django.db import connections

        hello, read = requesters(setup["tenants"])
        try:
            for call in (hello, read):
                timed(call, min(200, count))  # warm-up
            hello_ms, read_ms = timed(hello, count), timed(read, count)
            read_profile = profile(read, count, args.top)
        finally:
            connections.close_all()
    print_header(
        "In-process cost per request (django.test.Client, no server)",
        environment,
        requests=f"{count} per view, reads round-robin over {tenants} tenant(s)",
    )
    print_table(
        ["view", "ms/request"],
        [
            ["GET /bench/hello", hello_ms],
            ["GET /v1/memories/{id}", read_ms],
            ["difference", read_ms - hello_ms],
        ],
    )
    print(f"hello / read time = {hello_ms / read_ms:.2f}\n")
    print("== cProfile of the authenticated read (cumulative, then own time)")
    print(read_profile)


if __name__ == "__main__":
    main_wrapper(main)
