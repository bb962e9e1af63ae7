"""Where "many" loses to "one" in load.py's mix: both workloads in-process, timed and profiled.

    .venv/bin/python bench/profile_load.py [--tenants 300] [--memories 1000] [--requests 3000]
                                           [--top 30]

No server and no load generator: django.test.Client sends load.py's requests (same mix, same
seeds) through the full middleware stack in this process, first spread over all tenants
("many"), then all to the first tenant ("one"). Prints the mean and p95 per request of each
and by kind, then cProfile of one of them (`--profile`) by cumulative and by own time.
A diagnostic helper: it is not judged.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from typing import Any

from _harness import (
    BenchError,
    bench_environment,
    fixtures,
    main_wrapper,
    percentile,
    print_header,
    print_table,
    setup_django_in_process,
)
from load import request_for
from profile_views import profile


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--memories", type=int, default=1000, help="per tenant")
    parser.add_argument("--requests", type=int, default=3000, help="per workload")
    parser.add_argument("--top", type=int, default=30, help="rows of each profile table")
    parser.add_argument("--profile", choices=["many", "one"], default="many")
    parser.add_argument(
        "--kinds",
        default="search,read,write",
        help="of the mix, the kinds to send (the rest skipped)",
    )
    parser.add_argument("--seed", type=int, default=20261122)
    return parser.parse_args()


def run(
    client: Any,
    tenants: list[dict[str, Any]],
    setup: dict[str, Any],
    kinds: set[str],
    count: int,
    seed: int,
) -> dict[str, list[float]]:
    """`count` requests of the mix's `kinds` over `tenants`; milliseconds by kind."""
    rng = random.Random(seed)
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    while sum(map(len, timings.values())) < count:
        tenant = tenants[rng.randrange(len(tenants))]
        kind, method, path, body, headers = request_for(rng, tenant, setup["ids"], setup["words"])
        if kind not in kinds:
            continue
        extra = {"HTTP_AUTHORIZATION": headers["Authorization"]}
        started = time.perf_counter()
        if method == "GET":
            response = client.get(path, **extra)
        else:
            response = client.post(path, data=body, content_type="application/json", **extra)
        elapsed = 1000 * (time.perf_counter() - started)
        if response.status_code >= 300:
            raise BenchError(f"{method} {path} answered {response.status_code}")
        timings[kind].append(elapsed)
    return timings


def main() -> None:
    args = parse_args()
    kinds = {kind.strip() for kind in args.kinds.split(",") if kind.strip()}
    if kinds - {"search", "read", "write"}:
        raise BenchError(f"--kinds: search, read or write, not {args.kinds!r}")
    with bench_environment() as environment:
        setup = fixtures(
            environment.env,
            "setup-load",
            prefix=environment.run_id,
            tenants=max(2, args.tenants),
            memories=max(10, args.memories),
        )
        setup_django_in_process(environment.env)
        # One JSON line per request on stderr would drown the report (gunicorn writes it too).
        logging.getLogger("engram.requests").setLevel(logging.WARNING)
        from django.db import connections
        from django.test import Client

        client = Client(HTTP_HOST="127.0.0.1")
        tenants = setup["tenants"]
        try:
            run(client, tenants, setup, kinds, min(len(tenants) * 2, 2000), args.seed)  # warm-up
            many = run(client, tenants, setup, kinds, args.requests, args.seed + 1)
            one = run(client, tenants[:1], setup, kinds, args.requests, args.seed + 2)
            profiled = tenants if args.profile == "many" else tenants[:1]
            report = profile(
                lambda _: run(client, profiled, setup, kinds, args.requests, args.seed + 3),
                1,
                args.top,
            )
        finally:
            connections.close_all()
    print_header(
        "In-process cost of load.py's mix (django.test.Client, no server)",
        environment,
        requests=f"{args.requests} per workload over {len(tenants)} tenants vs one",
    )
    rows = []
    for label, timings in (("many", many), ("one", one)):
        values = [value for kind in timings.values() for value in kind]
        row: list[Any] = [label, sum(values) / len(values), percentile(values, 0.95)]
        for kind in ("search", "read", "write"):
            row.append(sum(timings[kind]) / len(timings[kind]) if timings.get(kind) else None)
        rows.append(row)
    print_table(["workload", "mean ms", "p95 ms", "search mean", "read mean", "write mean"], rows)
    print(f"== cProfile of {args.profile} (cumulative, then own time)")
    print(report)


if __name__ == "__main__":
    main_wrapper(main)
