"""Tenant scale: per-request overhead is flat in the number of provisioned tenants.

    .venv/bin/python bench/tenant_scale.py [--tenants 5000] [--seconds 10] [--connections 1]

Two identical deployments side by side, each with its own fresh control plane and data
directory and its own gunicorn (2 sync workers, as in api_overhead.py): A stays at 10
tenants, B grows to 5,000. Each tenant has an API key and one memory.

1. Provision 10 tenants in A and 10 in B (tenants.services.provision_tenant, in a subprocess).
2. Calibration: authenticated `GET /v1/memories/{id}` round-robin over the 10 tenants, on A
   and on B in alternating slices. Both hold 10 tenants: the ratio shows the noise floor.
3. Provision B up to 5,000 tenants (timed: control-plane rows and a template file copy each).
4. Judged: the same 10-tenant round-robin on A (10 provisioned) and on B (5,000 provisioned),
   plus B round-robin over all 5,000 tenants, in alternating slices.

Why two deployments rather than one measured before and after: this is a shared 2-core
machine and other people's processes come and go; a measurement taken a minute later sees a
different background. Alternating 2-second slices between A and B gives both the same
background, so the ratio reflects the number of tenants, not the time of day.

One client connection: p50 is then the time of one request on an otherwise idle server. With
more connections the 2 workers, the load generator and other people's processes share 2
cores, and p50 measures that queueing (its spread between two identical servers grew from
under 5% with 1 connection to 13-18% with 2) rather than the work a request does.

Judged by: p50 of the 10-tenant mix with 5,000 provisioned (B) / with 10 provisioned (A) < 1.10.
The 5,000-tenant mix is reported, not judged: there each request reopens another tenant's file.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any

from _harness import (
    BenchEnvironment,
    BenchError,
    LoadResult,
    RequestSpec,
    Server,
    Workload,
    bearer,
    bench_environment,
    fixtures,
    gunicorn,
    http_request,
    load_rows,
    main_wrapper,
    measure_interleaved,
    paired_median_ratio,
    percentile,
    print_busy_warning,
    print_errors,
    print_header,
    print_table,
    verdict,
    warm_up,
)

TARGET_RATIO = 1.10
MEASURED_TENANTS = 10
MAX_TENANTS = 20_000


@dataclass
class Outcome:
    total: int
    calibration: list[LoadResult]  # A and B, both at 10 tenants
    judged: list[LoadResult]  # A 10-mix, B 10-mix, B all-tenant mix
    provisioning: list[list[Any]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=5000, help="provisioned in B")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="per server, not measured")
    parser.add_argument("--connections", type=int, default=1, help="client connections")
    parser.add_argument("--slices", type=int, default=10, help="alternating slices")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=2, help="per gthread worker")
    return parser.parse_args()


def reads(tenants: list[dict[str, Any]]) -> list[RequestSpec]:
    return [RequestSpec(f"/v1/memories/{row['memory_id']}", bearer(row["key"])) for row in tenants]


def check(server: Server, requests: list[RequestSpec]) -> None:
    for spec in requests:
        status, body = http_request(server.port, "GET", spec.path, spec.headers)
        if status != 200:
            raise BenchError(f"GET {spec.path} answered {status}: {body}")


def provision(environment: BenchEnvironment, start: int, count: int) -> Any:
    return fixtures(
        environment.env,
        "setup-tenants",
        prefix=environment.run_id,
        start=start,
        count=count,
        memories=True,
    )


def provisioning_row(label: str, setup: dict[str, Any]) -> list[Any]:
    durations = setup["provision_ms"]
    return [
        label,
        len(durations),
        setup["provision_seconds"],
        percentile(durations, 0.50),
        percentile(durations, 0.95),
        max(durations),
        setup["extras_seconds"],
    ]


def run(args: argparse.Namespace) -> Outcome:
    total = max(MEASURED_TENANTS + 1, min(args.tenants, MAX_TENANTS))

    def interleaved(workloads: list[Workload]) -> list[LoadResult]:
        for server, requests in {id(w.server): (w.server, w.requests) for w in workloads}.values():
            warm_up(server, requests, args.warmup, args.connections)
        return measure_interleaved(
            workloads, seconds=args.seconds, connections=args.connections, slices=args.slices
        )

    with contextlib.ExitStack() as stack:
        small = stack.enter_context(bench_environment())
        large = stack.enter_context(bench_environment())
        small_setup = provision(small, 1, MEASURED_TENANTS)
        large_setup = provision(large, 1, MEASURED_TENANTS)
        provisioning = [
            provisioning_row(f"A: {MEASURED_TENANTS}", small_setup),
            provisioning_row(f"B: first {MEASURED_TENANTS}", large_setup),
        ]
        server_options = {"workers": 2, "worker_class": args.worker_class, "threads": args.threads}
        a_server = stack.enter_context(gunicorn(small, **server_options))
        b_server = stack.enter_context(gunicorn(large, **server_options))
        print_header(
            f"Tenant scale: GET /v1/memories/{{id}} with 10 vs {total:,} provisioned tenants",
            large,
            servers=f"A and B, each {a_server.description}",
            load=f"{args.connections} client connection(s) (http.client), "
            f"{args.warmup:g} s warm-up per server, {args.seconds:g} s per measurement "
            f"in {args.slices} alternating slices",
        )
        few_a, few_b = reads(small_setup["tenants"]), reads(large_setup["tenants"])
        check(a_server, few_a)
        check(b_server, few_b)
        calibration = interleaved(
            [
                Workload("calibration A: 10 provisioned, 10-tenant mix", a_server, few_a),
                Workload("calibration B: 10 provisioned, 10-tenant mix", b_server, few_b),
            ]
        )

        rest = provision(large, MEASURED_TENANTS + 1, total - MEASURED_TENANTS)
        provisioning.append(provisioning_row(f"B: next {total - MEASURED_TENANTS:,}", rest))
        every_b = few_b + reads(rest["tenants"])
        check(b_server, every_b[-3:])
        judged = interleaved(
            [
                Workload("A: 10 provisioned, 10-tenant mix", a_server, few_a),
                Workload(f"B: {total:,} provisioned, 10-tenant mix", b_server, few_b),
                Workload(f"B: {total:,} provisioned, {total:,}-tenant mix", b_server, every_b),
            ]
        )
    return Outcome(total=total, calibration=calibration, judged=judged, provisioning=provisioning)


def report(outcome: Outcome) -> None:
    print("Provisioning (tenants.services.provision_tenant in a subprocess):")
    print_table(
        ["tenants", "calls", "total s", "p50 ms", "p95 ms", "max ms", "keys + memories s"],
        outcome.provisioning,
    )
    results = [*outcome.calibration, *outcome.judged]
    print("Authenticated GET /v1/memories/{id}:")
    print_table(*load_rows(results))
    print_errors(results)
    print_busy_warning(results)
    if any(result.ok == 0 for result in results):
        raise BenchError("a measurement got no successful answer")
    calibration_a, calibration_b = outcome.calibration
    few_a, few_b, every_b = outcome.judged
    print(
        f"median over the {len(few_a.parts)} interleaved rounds of the per-round p50 ratio "
        f"B / A = {paired_median_ratio(few_b, few_a):.2f} (calibration: "
        f"{paired_median_ratio(calibration_b, calibration_a):.2f})"
    )
    print(
        f"calibration (both at 10): p50 B / A = {calibration_b.p50 / calibration_a.p50:.2f}; "
        f"p95 ratio at {outcome.total:,} = {few_b.p95 / few_a.p95:.2f}; "
        f"{outcome.total:,}-tenant mix p50 / A = {every_b.p50 / few_a.p50:.2f} (not judged)"
    )
    ratio = few_b.p50 / few_a.p50
    print(
        f"ratio p50 of the 10-tenant mix with {outcome.total:,} / with 10 provisioned "
        f"= {few_b.p50:.2f} / {few_a.p50:.2f} ms = {ratio:.3f}  "
        f"(target < {TARGET_RATIO:.2f})  {verdict(ratio < TARGET_RATIO)}"
    )


def main() -> None:
    report(run(parse_args()))


if __name__ == "__main__":
    main_wrapper(main)
