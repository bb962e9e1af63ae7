"""MCP overhead: `tools/call memory_search` vs `POST /v1/search`, same data, same run.

    .venv/bin/python bench/mcp.py [--seconds 10] [--connections 4] [--memories 500]

One gunicorn (2 sync workers) serves the project. One tenant gets `--memories` memories
(stored with memory_create_batch over MCP), then the load generator sends the same searches
three ways, in alternating slices so that all see the same background load on this shared
machine: REST `POST /v1/search`, and `tools/call memory_search` in the handshake era
(MCP-Protocol-Version 2025-11-25, what today's clients send) and in the 2026-07-28 era
(`_meta` envelope and Mcp-Method / Mcp-Name headers). Each request asks for the same thing
(query, strategy auto, limit 10, min_score 0); before measuring, every query is checked to
find the same memories through both transports.

Judged by: MCP p50 <= 1.2 x REST p50, for each era.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from _harness import (
    PYTHON,
    BenchEnvironment,
    BenchError,
    LoadResult,
    RequestSpec,
    Server,
    Workload,
    bearer,
    bench_environment,
    gunicorn,
    http_request,
    load_rows,
    main_wrapper,
    measure_interleaved,
    print_errors,
    print_header,
    print_table,
    run_checked,
    verdict,
    warm_up,
)

TARGET_RATIO = 1.2
HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
BATCH = 100
QUERIES = [
    "deploy",
    "database migration",
    "coffee preferences of the team",
    "how do we roll back a failed release",
    "rotate signing keys",
    "kubernetes blue green",
    "who owns the billing service and what did we decide about retries",
    "incident review",
]
SUBJECTS = [
    "the billing service",
    "the release pipeline",
    "the Postgres cluster",
    "the kubernetes deployment",
    "the API gateway",
    "the search index",
    "the on-call rotation",
    "the signing keys",
]
VERBS = ["deploys with", "depends on", "was migrated to", "is owned by", "rolls back with"]
OBJECTS = [
    "the blue-green script",
    "team platform",
    "a nightly backup",
    "retries with exponential backoff",
    "a feature flag",
    "the incident review checklist",
    "dark roast coffee on Fridays",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="per workload, not measured")
    parser.add_argument("--connections", type=int, default=4, help="client connections")
    parser.add_argument("--slices", type=int, default=10, help="alternating slices")
    parser.add_argument("--memories", type=int, default=500, help="memories in the tenant")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.memories = max(1, min(args.memories, 20_000))
    return args


def memory_contents(count: int) -> list[str]:
    rng = random.Random(7)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} (note {number})"
        for number in range(count)
    ]


def search_arguments(query: str) -> dict[str, Any]:
    return {"query": query, "strategy": "auto", "limit": 10, "min_score": 0}


def mcp_message(arguments: dict[str, Any], version: str, request_id: int = 1) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "memory_search", "arguments": arguments}
    if version == MODERN:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def mcp_headers(key: str, version: str, tool: str = "memory_search") -> dict[str, str]:
    headers = {
        **bearer(key),
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
    }
    if version == MODERN:
        headers.update({"Mcp-Method": "tools/call", "Mcp-Name": tool})
    return headers


def json_post(path: str, headers: dict[str, str], body: Any) -> RequestSpec:
    return RequestSpec(
        path,
        {**headers, "Content-Type": "application/json"},
        method="POST",
        body=json.dumps(body).encode(),
    )


def store_memories(server: Server, key: str, count: int) -> None:
    contents = memory_contents(count)
    for start in range(0, count, BATCH):
        batch = [
            {"content": content, "tags": ["bench"]} for content in contents[start : start + BATCH]
        ]
        message = {
            "jsonrpc": "2.0",
            "id": start,
            "method": "tools/call",
            "params": {"name": "memory_create_batch", "arguments": {"memories": batch}},
        }
        status, body = http_request(
            server.port, "POST", "/v1/mcp", mcp_headers(key, HANDSHAKE), message
        )
        if status != 200 or body["result"]["isError"]:
            raise BenchError(f"memory_create_batch answered {status}: {str(body)[:500]}")


def found_ids_rest(server: Server, key: str, query: str) -> list[int]:
    status, body = http_request(
        server.port, "POST", "/v1/search", bearer(key), search_arguments(query)
    )
    if status != 200:
        raise BenchError(f"POST /v1/search answered {status}: {body}")
    return [result["memory"]["id"] for result in body["results"]]


def found_ids_mcp(server: Server, key: str, query: str, version: str) -> list[int]:
    status, body = http_request(
        server.port,
        "POST",
        "/v1/mcp",
        mcp_headers(key, version),
        mcp_message(search_arguments(query), version),
    )
    if status != 200 or "result" not in body or body["result"]["isError"]:
        raise BenchError(f"tools/call memory_search ({version}) answered {status}: {body}")
    return [result["memory"]["id"] for result in body["result"]["structuredContent"]["results"]]


def check_same_answers(server: Server, key: str) -> None:
    """Both transports must do the same work: the same memories for every query."""
    for query in QUERIES:
        rest = found_ids_rest(server, key, query)
        if not rest:
            raise BenchError(f"the query {query!r} finds nothing; the comparison would be empty")
        for version in (HANDSHAKE, MODERN):
            if found_ids_mcp(server, key, query, version) != rest:
                raise BenchError(f"MCP ({version}) and REST disagree on {query!r}")


def create_tenant(environment: BenchEnvironment) -> str:
    """An enterprise tenant (no rate limit, no search quota: the requests measure the work,
    not the limits), made with the product's own command; returns its API key."""
    output = run_checked(
        [
            PYTHON,
            "manage.py",
            "create_tenant",
            f"{environment.run_id}-mcp",
            "--owner",
            f"owner@{environment.run_id}.bench.invalid",
            "--plan",
            "enterprise",
            "--json",
        ],
        environment.env,
        "create_tenant",
    )
    return json.loads(output.strip().splitlines()[-1])["api_key"]


def run(environment: BenchEnvironment, args: argparse.Namespace) -> list[LoadResult]:
    key = create_tenant(environment)
    with gunicorn(environment, workers=args.workers) as server:
        print_header(
            "MCP overhead: tools/call memory_search vs POST /v1/search",
            environment,
            server=server.description,
            data=f"1 tenant, {args.memories:,} memories, {len(QUERIES)} queries cycled "
            "(strategy auto, limit 10, min_score 0)",
            load=f"{args.connections} client connections (http.client, threads), "
            f"{args.warmup:g} s warm-up, then {args.seconds:g} s per workload "
            f"in {args.slices} alternating slices",
        )
        store_memories(server, key, args.memories)
        check_same_answers(server, key)
        rest = [json_post("/v1/search", bearer(key), search_arguments(q)) for q in QUERIES]
        handshake = [
            json_post(
                "/v1/mcp", mcp_headers(key, HANDSHAKE), mcp_message(search_arguments(q), HANDSHAKE)
            )
            for q in QUERIES
        ]
        modern = [
            json_post("/v1/mcp", mcp_headers(key, MODERN), mcp_message(search_arguments(q), MODERN))
            for q in QUERIES
        ]
        for requests in (rest, handshake, modern):
            warm_up(server, requests, args.warmup, args.connections)
        return measure_interleaved(
            [
                Workload("POST /v1/search (REST)", server, rest),
                Workload(f"tools/call memory_search ({HANDSHAKE})", server, handshake),
                Workload(f"tools/call memory_search ({MODERN})", server, modern),
            ],
            seconds=args.seconds,
            connections=args.connections,
            slices=args.slices,
        )


def report(results: list[LoadResult]) -> None:
    rest, *mcp_results = results
    if any(result.ok == 0 for result in results):
        print_errors(results)
        raise BenchError("a measurement got no successful answer")
    print_table(*load_rows(results))
    print_errors(results)
    for result in mcp_results:
        ratio = result.p50 / rest.p50
        print(
            f"p50 {result.label} / REST = {result.p50:.2f} / {rest.p50:.2f} ms = {ratio:.2f}  "
            f"(p95 {result.p95:.2f} / {rest.p95:.2f} ms)  "
            f"(target <= {TARGET_RATIO:.2f})  {verdict(ratio <= TARGET_RATIO)}"
        )


def main() -> None:
    args = parse_args()
    with bench_environment() as environment:
        results = run(environment, args)
    report(results)


if __name__ == "__main__":
    main_wrapper(main)
