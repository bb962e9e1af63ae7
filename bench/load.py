"""Load: a mixed workload over 1,000 tenants of 1,000 memories each vs the same on one tenant.

    .venv/bin/python bench/load.py [--tenants 1000] [--memories 1000] [--seconds 120]
                                   [--connections 4] [--workers 4] [--warmup 120]

One deployment (a fresh control plane and data directory), gunicorn with `--workers` sync
workers (default 4 = 2 per core, as gunicorn.conf.py chooses in production: a request is short
Python work plus SQLite I/O and round trips to the control plane, and a second worker per core
fills the waits), the load generator on the same machine (`--connections` keep-alive
connections, one thread each, closed loop).

Data: `--tenants` tenants with an API key each. One tenant file of `--memories` generated
memories (bench/_fixtures.py's search corpus: varied texts, tags, metadata, embeddings) is
built once and copied over every tenant's file: different tenants and files, the same content
(loading a million memories one by one would measure the loader, not the service).

Workload (per request, seeded): 70% `POST /v1/search` (1-3 words of the corpus, the API's
default strategy), 20% `GET /v1/memories/{id}` (a live memory), 10% `POST /v1/memories`; the
tenant of each request drawn uniformly from all tenants ("many"), or always the same tenant ("one").
After a warm-up over all tenants (`--warmup` seconds, then 20 s more at a time while any
worker is still opening tenant files: workers keep them open, ENGRAM_OPEN_TENANT_FILES, and the
warm-up is to fill every cache), "many" and "one" alternate in short
slices (ABBA...), so both see the same background on this shared machine. After each slice
every worker's open files (/proc/<pid>/fd: those open in each of five looks over a second) and
RSS are sampled.

Judged (issue 9): p95 of "many" ≤ 1.5 x p95 of "one"; search p95 of "many" ≤ 50 ms; no errors;
open files and memory per worker flat after warm-up (open files: max - min ≤ 4 per worker;
RSS: growth from the first to the last sample ≤ 15%).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    HOST,
    BenchError,
    Server,
    bench_environment,
    fixtures,
    gunicorn,
    machine_busy_seconds,
    main_wrapper,
    percentile,
    print_header,
    print_table,
    verdict,
)

KINDS = (("search", 0.70), ("read", 0.20), ("write", 0.10))
P95_RATIO_TARGET = 1.5
SEARCH_P95_TARGET_MS = 50.0
FD_SPREAD_LIMIT = 4
RSS_GROWTH_LIMIT = 0.15
EXTRA_WARMUP_SECONDS = 20.0
MAX_EXTRA_WARMUPS = 6


@dataclass
class MixResult:
    label: str
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k, _ in KINDS})
    statuses: Counter[str] = field(default_factory=Counter)
    busy_seconds: float = 0.0

    @property
    def all_latencies(self) -> list[float]:
        return [value for values in self.latencies.values() for value in values]

    @property
    def ok(self) -> int:
        return len(self.all_latencies)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.ok

    def add(self, other: MixResult) -> None:
        self.seconds += other.seconds
        self.statuses.update(other.statuses)
        self.busy_seconds += other.busy_seconds
        for kind, values in other.latencies.items():
            self.latencies[kind].extend(values)


@dataclass
class Sample:
    after: str
    workers: dict[int, tuple[int, float]]  # pid -> (open files, RSS MB)
    kinds: dict[int, Counter[str]] = field(default_factory=dict)  # pid -> open files by kind


def file_kind(target: str) -> str:
    """What an open file is, from its /proc/<pid>/fd link."""
    if "/tenants/" in target:
        return "tenant"
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if "prometheus" in target:
        return "metrics"
    if Path(target).name.startswith("control.db"):
        return "control"
    if target.startswith("/dev/"):
        return "dev"
    return "other"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--memories", type=int, default=1000, help="per tenant")
    parser.add_argument("--seconds", type=float, default=120.0, help="per workload, in total")
    parser.add_argument("--slices", type=int, default=8, help="alternating slices")
    parser.add_argument("--warmup", type=float, default=120.0, help="over all tenants")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()
    args.tenants = max(2, min(args.tenants, 5000))
    args.memories = max(10, min(args.memories, 10_000))
    args.connections = max(1, min(args.connections, 32))
    return args


def request_for(rng: random.Random, tenant: dict[str, Any], ids: list[int], words: list[str]):
    kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    headers = {"Authorization": f"Bearer {tenant['key']}"}
    if kind == "search":
        query = " ".join(rng.sample(words, rng.randint(1, 3)))
        body = json.dumps({"query": query, "limit": 10}).encode()
        return kind, "POST", "/v1/search", body, {**headers, "Content-Type": "application/json"}
    if kind == "read":
        return kind, "GET", f"/v1/memories/{rng.choice(ids)}", None, headers
    content = f"load test note {rng.getrandbits(40):x} about {' '.join(rng.sample(words, 4))}"
    body = json.dumps({"content": content, "tags": ["load"]}).encode()
    return kind, "POST", "/v1/memories", body, {**headers, "Content-Type": "application/json"}


def drive(
    server: Server,
    label: str,
    tenants: list[dict[str, Any]],
    ids: list[int],
    words: list[str],
    *,
    seconds: float,
    connections: int,
    seed: int,
) -> MixResult:
    """`connections` closed-loop keep-alive connections for `seconds`; latencies by kind."""
    result = MixResult(label)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        mine = MixResult(label)
        connection = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            while time.perf_counter() < deadline:
                tenant = tenants[rng.randrange(len(tenants))]
                kind, method, path, body, headers = request_for(rng, tenant, ids, words)
                started = time.perf_counter()
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    mine.statuses[type(exc).__name__] += 1
                    connection.close()
                    continue
                elapsed = 1000 * (time.perf_counter() - started)
                mine.statuses[str(response.status)] += 1
                if 200 <= response.status < 300:
                    mine.latencies[kind].append(elapsed)
        finally:
            connection.close()
            with lock:
                result.add(mine)

    busy_before = machine_busy_seconds()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    result.seconds = time.perf_counter() - started
    result.busy_seconds = machine_busy_seconds() - busy_before
    return result


def open_files(pid: int) -> set[tuple[str, str]]:
    """(fd, what it points to) of every file the process has open now."""
    files = set()
    for link in Path(f"/proc/{pid}/fd").iterdir():
        try:
            files.add((link.name, os.readlink(link)))
        except OSError:  # closed while listed
            continue
    return files


def sample_workers(server: Server, after: str, looks: int = 5, apart: float = 0.2) -> Sample:
    """Each worker's open files and RSS, the load generator stopped. A file counts when it is
    open in every one of `looks` looks `apart` seconds apart: what the worker holds, not what
    a background thread has open for a moment (the embedded usage flusher's control-plane
    connection while it writes)."""
    held: dict[int, set[tuple[str, str]]] = {}
    for look in range(looks):
        if look:
            time.sleep(apart)
        for pid in server.worker_pids():
            try:
                files = open_files(pid)
            except OSError:
                continue
            held[pid] = held[pid] & files if pid in held else files
    sample = Sample(after, {})
    for pid, files in held.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
        sample.workers[pid] = (len(files), rss_kb / 1024)
        sample.kinds[pid] = Counter(file_kind(target) for _, target in files)
    return sample


def tenant_files(sample: Sample) -> dict[int, int]:
    return {pid: kinds["tenant"] for pid, kinds in sample.kinds.items()}


def summary_row(result: MixResult) -> list[Any]:
    row: list[Any] = [result.label, result.ok, result.errors, result.ok / result.seconds]
    values = result.all_latencies
    row += [percentile(values, 0.50), percentile(values, 0.95), percentile(values, 0.99)]
    for kind, _ in KINDS:
        row.append(percentile(result.latencies[kind], 0.95))
    row.append(result.busy_seconds / result.seconds)
    return row


def main() -> None:
    args = parse_args()
    with bench_environment() as environment:
        print(f"Building {args.tenants:,} tenants of {args.memories:,} memories ...", flush=True)
        setup = fixtures(
            environment.env,
            "setup-load",
            prefix=environment.run_id,
            tenants=args.tenants,
            memories=args.memories,
        )
        tenants, words = setup["tenants"], setup["words"]
        if not words:
            raise BenchError("the corpus gave no query words")
        with gunicorn(environment, workers=args.workers, start_timeout=90) as server:
            print_header(
                f"Load: 70% search / 20% read / 10% write over {args.tenants:,} tenants "
                f"vs one tenant",
                environment,
                data=f"{args.tenants:,} tenants x {setup['memories']:,} memories "
                f"({setup['file_mb']:.1f} MB per tenant file; generated in "
                f"{setup['load_seconds']:.0f} s, copied to every tenant in "
                f"{setup['setup_seconds']:.0f} s)",
                server=server.description,
                load=f"{args.connections} connections on this machine, warm-up "
                f"{args.warmup:g} s over all tenants, {args.seconds:g} s per workload in "
                f"{args.slices} alternating slices",
            )
            common = {
                "ids": setup["ids"],
                "words": words,
                "connections": args.connections,
            }
            warm = drive(server, "warm-up", tenants, seconds=args.warmup, seed=args.seed, **common)
            if warm.ok == 0:
                raise BenchError(f"warm-up got no successful answer: {dict(warm.statuses)}")
            samples = [sample_workers(server, "warm-up")]
            # Warm until no worker opened another tenant file over the last round (on a slow
            # machine `--warmup` seconds may leave some tenants not yet seen by some worker).
            for extra in range(1, MAX_EXTRA_WARMUPS + 1):
                before = tenant_files(samples[-1])
                more = EXTRA_WARMUP_SECONDS
                drive(server, "warm-up", tenants, seconds=more, seed=args.seed - extra, **common)
                samples[-1] = sample_workers(server, "warm-up")
                if tenant_files(samples[-1]) == before:
                    break
                print(
                    f"   warm-up: workers still opening tenant files; {more:g} s more", flush=True
                )
            many, one = MixResult(f"many: {args.tenants:,} tenants"), MixResult("one: 1 tenant")
            workloads = [(many, tenants), (one, tenants[:1])]
            slices: list[tuple[int, MixResult]] = []
            for index in range(args.slices):
                order = workloads if index % 2 == 0 else list(reversed(workloads))
                for total, chosen in order:
                    part = drive(
                        server,
                        total.label.split(":")[0],
                        chosen,
                        seconds=args.seconds / args.slices,
                        seed=args.seed + index + 1,
                        **common,
                    )
                    total.add(part)
                    slices.append((index + 1, part))
                samples.append(sample_workers(server, f"slice {index + 1}"))
    report(many, one, samples, slices)


def fd_spread_of(samples: list[Sample], pid: int) -> int:
    counts = [s.workers[pid][0] for s in samples if pid in s.workers]
    return max(counts) - min(counts)


def report(
    many: MixResult, one: MixResult, samples: list[Sample], slices: list[tuple[int, MixResult]]
) -> None:
    print("Mixed workload (ms; only 2xx counted in latencies):")
    print_table(
        [
            "workload",
            "ok",
            "errors",
            "req/s",
            "p50",
            "p95",
            "p99",
            "search p95",
            "read p95",
            "write p95",
            "machine busy cores",
        ],
        [summary_row(many), summary_row(one)],
    )
    for result in (many, one):
        if result.errors:
            print(f"  {result.label}: statuses {dict(result.statuses)}")
    print("By slice (a burst of background work shows as one slow slice):")
    print_table(
        ["slice", "workload", "req/s", "p50", "p95", "p99"],
        [
            [
                number,
                part.label,
                part.ok / part.seconds if part.seconds else 0.0,
                percentile(part.all_latencies, 0.50),
                percentile(part.all_latencies, 0.95),
                percentile(part.all_latencies, 0.99),
            ]
            for number, part in slices
        ],
    )
    pids = sorted({pid for sample in samples for pid in sample.workers})
    print("Workers after warm-up (open files / RSS MB):")
    print_table(
        ["after", *[f"worker {pid}" for pid in pids]],
        [
            [
                sample.after,
                *[
                    "{} / {:.0f}".format(*sample.workers[pid]) if pid in sample.workers else "-"
                    for pid in pids
                ],
            ]
            for sample in samples
        ],
    )
    widest = max(pids, key=lambda p: fd_spread_of(samples, p))
    fd_spread = fd_spread_of(samples, widest)
    print(f"Open files of worker {widest} by kind, in each sample:")
    kinds = sorted({kind for s in samples for kind in s.kinds.get(widest, {})})
    print_table(
        ["after", *kinds],
        [
            [s.after, *[s.kinds[widest][kind] for kind in kinds]]
            for s in samples
            if widest in s.kinds
        ],
    )
    first, last = samples[0].workers, samples[-1].workers
    # A worker that did not last the run (killed, timed out) hides its growth: that fails too.
    rss_growth = max(last[p][1] / first[p][1] - 1 if p in last else float("inf") for p in first)
    ratio = percentile(many.all_latencies, 0.95) / percentile(one.all_latencies, 0.95)
    search_p95 = percentile(many.latencies["search"], 0.95)
    checks = [
        ("p95 many / p95 one", f"{ratio:.2f}", f"<= {P95_RATIO_TARGET}", ratio <= P95_RATIO_TARGET),
        (
            "search p95, many (ms)",
            f"{search_p95:.1f}",
            f"<= {SEARCH_P95_TARGET_MS:g}",
            search_p95 <= SEARCH_P95_TARGET_MS,
        ),
        ("errors", str(many.errors + one.errors), "0", many.errors + one.errors == 0),
        (
            "open files per worker, max - min",
            str(fd_spread),
            f"<= {FD_SPREAD_LIMIT}",
            fd_spread <= FD_SPREAD_LIMIT,
        ),
        (
            "RSS growth per worker, first to last",
            f"{100 * rss_growth:.1f}%",
            f"<= {100 * RSS_GROWTH_LIMIT:.0f}%",
            rss_growth <= RSS_GROWTH_LIMIT,
        ),
    ]
    print_table(
        ["judged", "measured", "target", "verdict"],
        [[name, value, target, verdict(ok)] for name, value, target, ok in checks],
    )


if __name__ == "__main__":
    main_wrapper(main)
