"""Provisioning time: `tenants.services.provision_tenant`, the service call alone.

    .venv/bin/python bench/provisioning.py [--tenants 200]

In this process (django.setup() with the run's environment; no process start in the timing):
one warm-up call (it builds the migrated template file, once per schema version), then
`--tenants` timed calls, each creating the tenant row, the owner's membership, an audit event
and the tenant's SQLite file (a copy of the template, fsynced). For reference, the file step
alone (`memories.provisioning.create_tenant_database`) is timed too.

Judged by: p95 of provision_tenant < 50 ms (p50 and max are printed alongside).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from _harness import (
    BenchEnvironment,
    bench_environment,
    main_wrapper,
    percentile,
    print_header,
    print_table,
    setup_django_in_process,
    verdict,
)

TARGET_MS = 50.0
MAX_TENANTS = 5000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200, help="timed calls (max 5,000)")
    return parser.parse_args()


def timed_calls(call: Callable[[int], Any], count: int) -> list[float]:
    """Milliseconds of each of `count` calls."""
    durations = []
    for number in range(count):
        started = time.perf_counter()
        call(number)
        durations.append(1000 * (time.perf_counter() - started))
    return durations


def summary_row(label: str, durations: list[float]) -> list[Any]:
    return [
        label,
        len(durations),
        percentile(durations, 0.50),
        percentile(durations, 0.95),
        max(durations),
        sum(durations) / len(durations),
    ]


def run(environment: BenchEnvironment, count: int) -> tuple[float, list[float], list[float]]:
    setup_django_in_process(environment.env)
    from django.db import connections

    from memories.provisioning import create_tenant_database, remove_tenant_database
    from tenants import services

    prefix = environment.run_id
    owner = services.get_or_create_user(f"owner@{prefix}.bench.invalid")
    try:
        started = time.perf_counter()
        services.provision_tenant(slug=f"{prefix}-0", owner=owner)
        first_ms = 1000 * (time.perf_counter() - started)

        provision_ms = timed_calls(
            lambda number: services.provision_tenant(slug=f"{prefix}-{number + 1}", owner=owner),
            count,
        )
        file_ids = [uuid.uuid4() for _ in range(count)]
        file_ms = timed_calls(lambda number: create_tenant_database(file_ids[number]), count)
        for tenant_id in file_ids:
            remove_tenant_database(tenant_id)
    finally:
        connections.close_all()
    return first_ms, provision_ms, file_ms


def main() -> None:
    args = parse_args()
    count = max(1, min(args.tenants, MAX_TENANTS))
    with bench_environment() as environment:
        print_header(
            "Provisioning: tenants.services.provision_tenant (in-process service call)",
            environment,
            calls=f"1 warm-up, then {count} timed",
        )
        first_ms, provision_ms, file_ms = run(environment, count)
    print_table(
        ["measurement", "calls", "p50 ms", "p95 ms", "max ms", "mean ms"],
        [
            ["first call (builds the template)", 1, first_ms, first_ms, first_ms, first_ms],
            summary_row("provision_tenant", provision_ms),
            summary_row("  of which the file: create_tenant_database", file_ms),
        ],
    )
    p95 = percentile(provision_ms, 0.95)
    print(
        f"ratio p95 / target = {p95:.1f} ms / {TARGET_MS:.0f} ms = {p95 / TARGET_MS:.2f}  "
        f"(target < 1.00; max {max(provision_ms):.1f} ms)  {verdict(p95 < TARGET_MS)}"
    )


if __name__ == "__main__":
    main_wrapper(main)
