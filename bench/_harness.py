"""Shared machinery for the benchmarks: environment, control plane, gunicorn, load, tables.

Every benchmark runs against a throwaway ENGRAM_DATA_DIR (tempfile) and, unless the caller set
DATABASE_URL, a fresh SQLite control plane inside it. Servers are started in their own process
group and always stopped (try/finally); every loop is bounded in count and in time; all traffic
stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PYTHON = sys.executable
HOST = "127.0.0.1"
SETTINGS_MODULE = "bench.benchsite.settings"
WSGI_APP = "engram_cloud.wsgi:application"

# Hard ceilings, whatever the command line asks for.
MAX_MEASURE_SECONDS = 120.0
MAX_CONNECTIONS = 64
MAX_REQUESTS_PER_CONNECTION = 2_000_000
SUBPROCESS_TIMEOUT_SECONDS = 900


class BenchError(RuntimeError):
    """The benchmark could not run (as opposed to: it ran and missed its target)."""


# --- Environment and control plane ------------------------------------------------------------


@dataclass
class BenchEnvironment:
    """Where a benchmark run keeps its files, and the environment its processes get."""

    data_dir: Path
    env: dict[str, str]
    run_id: str
    schema: str | None = None

    @property
    def control_plane(self) -> str:
        url = self.env.get("DATABASE_URL", "")
        if not url:
            return "SQLite (fresh file in a temporary ENGRAM_DATA_DIR)"
        if self.schema:
            return (
                f"PostgreSQL {redact_url(url.split('?')[0])} (fresh private schema {self.schema})"
            )
        return redact_url(url)


def redact_url(url: str) -> str:
    """The URL without a password, for printing."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{location}"


def bench_env(data_dir: Path) -> dict[str, str]:
    """The environment every process of a run gets: production-like settings, plain HTTP."""
    env = dict(os.environ)
    env.update(
        DEBUG="0",
        SECRET_KEY="bench-only-secret-key-" + secrets.token_hex(16),
        API_KEY_PEPPER="bench-only-pepper-" + secrets.token_hex(16),
        ENGRAM_DATA_DIR=str(data_dir),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="0",
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        LOG_LEVEL="WARNING",
    )
    # Only a DATABASE_URL the caller chose; otherwise settings default to SQLite in data_dir.
    if not os.environ.get("DATABASE_URL"):
        env.pop("DATABASE_URL", None)
    return env


def run_id() -> str:
    """A short random tag that keeps this run's names apart from any other run's."""
    alphabet = string.ascii_lowercase + string.digits
    return "b" + "".join(secrets.choice(alphabet) for _ in range(6))


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0] in {"postgres", "postgresql", "pgsql"}


def postgres_admin(url: str, statement: str, schema: str) -> None:
    """Run CREATE/DROP SCHEMA {schema} on the caller's database (psycopg, autocommit)."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql.SQL(statement).format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise BenchError(f"{statement.split('{')[0]}{schema} failed: {exc}") from None


@contextlib.contextmanager
def bench_environment() -> Iterator[BenchEnvironment]:
    """A temporary data directory and a fresh, migrated control plane; removed afterwards.

    The default control plane is an SQLite file in the data directory. With the caller's
    DATABASE_URL (PostgreSQL), the run gets its own schema in that database (the URL's
    `currentSchema`), dropped at the end: every run starts from an empty control plane and
    leaves nothing behind.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="engram-bench-"))
    environment = BenchEnvironment(data_dir=data_dir, env=bench_env(data_dir), run_id=run_id())
    url = environment.env.get("DATABASE_URL", "")
    try:
        if is_postgres(url):
            environment.schema = f"engram_bench_{environment.run_id}"
            postgres_admin(url, "CREATE SCHEMA {}", environment.schema)
            separator = "&" if "?" in url else "?"
            environment.env["DATABASE_URL"] = f"{url}{separator}currentSchema={environment.schema}"
        migrate(environment.env)
        yield environment
    finally:
        if environment.schema:
            postgres_admin(url, "DROP SCHEMA IF EXISTS {} CASCADE", environment.schema)
        shutil.rmtree(data_dir, ignore_errors=True)


def migrate(env: dict[str, str]) -> None:
    run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env, "migrate")


def run_checked(
    command: Sequence[str], env: dict[str, str], what: str, stdin: str | None = None
) -> str:
    try:
        completed = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {SUBPROCESS_TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        raise BenchError(f"{what} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return completed.stdout


def fixtures(env: dict[str, str], command: str, **arguments: Any) -> Any:
    """Run a bench/_fixtures.py command in a subprocess with the run's environment."""
    stdout = run_checked(
        [PYTHON, str(BENCH_DIR / "_fixtures.py"), command],
        env,
        f"_fixtures.py {command}",
        stdin=json.dumps(arguments),
    )
    return json.loads(stdout.strip().splitlines()[-1])


def setup_django_in_process(env: dict[str, str]) -> None:
    """Configure this process like the run's subprocesses, then django.setup()."""
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def redis_client(url: str) -> Any:
    """A client of the Redis database at `url`, checked to answer."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url} is not reachable: {exc}") from None
    return client


# --- gunicorn ---------------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    description: str
    workers: int

    def worker_pids(self) -> list[int]:
        """The master's children (the workers), from /proc."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far (Linux /proc)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in [self.process.pid, *self.worker_pids()]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / ticks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def gunicorn(
    environment: BenchEnvironment,
    *,
    workers: int = 2,
    worker_class: str = "sync",
    threads: int = 1,
    start_timeout: float = 30.0,
) -> Iterator[Server]:
    """Serve the project (with the bench URLconf) under gunicorn; stopped on exit, always."""
    port = free_port()
    log_path = environment.data_dir / f"gunicorn-{port}.log"
    command = [
        PYTHON,
        "-m",
        "gunicorn",
        WSGI_APP,
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        # More than 1 thread would silently turn a sync worker into gthread.
        "--threads",
        str(threads if worker_class == "gthread" else 1),
        "--keep-alive",
        "30",
        # gunicorn.conf.py (read from the working directory) recycles a worker after 20,000
        # requests; a bench measures one process's memory and files over time, which a
        # recycled worker would hide (and restart costs would show as latency).
        "--max-requests",
        "0",
        "--log-level",
        "warning",
        "--chdir",
        str(ROOT),
    ]
    description = f"gunicorn {workers} workers, {worker_class}" + (
        f", {threads} threads each" if worker_class == "gthread" else ""
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop exactly what we started
        )
    server = Server(
        port=port, process=process, log_path=log_path, description=description, workers=workers
    )
    try:
        wait_until_serving(server, start_timeout)
        yield server
    finally:
        stop(process)


def wait_until_serving(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(server.port, "GET", "/health")
            if status == 200 and len(server.worker_pids()) >= server.workers:
                time.sleep(1.0)  # the other workers may still be importing Django
                return
        time.sleep(0.1)
    log = server.log_path.read_text(errors="replace")[-4000:]
    raise BenchError(f"gunicorn did not start serving within {timeout:.0f} s:\n{log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """TERM the server's process group (ours), then KILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


# --- HTTP -------------------------------------------------------------------------------------


def http_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    """One request on a fresh connection; returns (status, parsed JSON body or None)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = dict(headers or {})
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed
    finally:
        connection.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_memory_over_http(port: int, key: str, content: str) -> int:
    status, body = http_request(
        port, "POST", "/v1/memories", bearer(key), {"content": content, "tags": ["bench"]}
    )
    if status != 201:
        raise BenchError(f"POST /v1/memories answered {status}: {body}")
    return int(body["id"])


# --- Load generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    # A POST's body, sent as it is (set Content-Type in headers).
    body: bytes | None = None


@dataclass
class LoadResult:
    label: str
    connections: int
    seconds: float
    ok: int
    errors: int
    statuses: Counter[str]
    latencies_ms: list[float]
    client_cpu_seconds: float
    server_cpu_seconds: float
    machine_busy_seconds: float
    # The slices this result was merged from (measure_interleaved), in time order.
    parts: list[LoadResult] = field(default_factory=list)

    @property
    def other_cpu_cores(self) -> float:
        """CPU that neither this server nor this load generator used: other people's work."""
        other = self.machine_busy_seconds - self.server_cpu_seconds - self.client_cpu_seconds
        return max(0.0, other) / self.seconds if self.seconds else 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)

    @property
    def server_cpu_ms_per_request(self) -> float:
        total = self.ok + self.errors
        return 1000 * self.server_cpu_seconds / total if total else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of the values (sorted here)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def measure(
    server: Server,
    label: str,
    requests: Sequence[RequestSpec],
    *,
    seconds: float,
    connections: int,
) -> LoadResult:
    """Drive `connections` keep-alive connections for `seconds`, cycling through `requests`.

    One thread per connection (http.client, keep-alive). The request list is shared: each
    request takes the next item, so a list of N tenants is visited round-robin. Only 2xx
    answers count towards the rate and the latencies; anything else is an error.
    """
    if not requests:
        raise BenchError("nothing to request")
    seconds = min(seconds, MAX_MEASURE_SECONDS)
    connections = max(1, min(connections, MAX_CONNECTIONS))
    sequence = itertools.count()
    barrier = threading.Barrier(connections + 1)
    results: list[tuple[list[float], Counter[str], float]] = []
    results_lock = threading.Lock()
    window: dict[str, float] = {}

    def worker() -> None:
        latencies: list[float] = []
        statuses: Counter[str] = Counter()
        connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
        barrier.wait()
        deadline = window["deadline"]
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                started = time.perf_counter()
                if started >= deadline:
                    break
                spec = requests[next(sequence) % len(requests)]
                try:
                    connection.request(spec.method, spec.path, body=spec.body, headers=spec.headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as exc:
                    statuses[type(exc).__name__] += 1
                    connection.close()
                    time.sleep(0.01)
                    continue
                elapsed_ms = 1000 * (time.perf_counter() - started)
                statuses[str(status)] += 1
                if 200 <= status < 300:
                    latencies.append(elapsed_ms)
        finally:
            connection.close()
            with results_lock:
                results.append((latencies, statuses, time.perf_counter()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    cpu_before = process_cpu_seconds()
    server_cpu_before = server.cpu_seconds()
    busy_before = machine_busy_seconds()
    started = time.perf_counter()
    window["deadline"] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    server_cpu = server.cpu_seconds() - server_cpu_before
    client_cpu = process_cpu_seconds() - cpu_before
    busy = machine_busy_seconds() - busy_before
    if any(thread.is_alive() for thread in threads):
        raise BenchError(f"{label}: load threads did not stop")
    finished = max(result[2] for result in results)
    latencies = [value for result in results for value in result[0]]
    statuses: Counter[str] = Counter()
    for result in results:
        statuses.update(result[1])
    ok = len(latencies)
    return LoadResult(
        label=label,
        connections=connections,
        seconds=finished - started,
        ok=ok,
        errors=sum(statuses.values()) - ok,
        statuses=statuses,
        latencies_ms=latencies,
        client_cpu_seconds=client_cpu,
        server_cpu_seconds=server_cpu,
        machine_busy_seconds=busy,
    )


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """One result from the slices of the same measurement."""
    statuses: Counter[str] = Counter()
    for result in results:
        statuses.update(result.statuses)
    return LoadResult(
        label=results[0].label,
        connections=results[0].connections,
        seconds=sum(result.seconds for result in results),
        ok=sum(result.ok for result in results),
        errors=sum(result.errors for result in results),
        statuses=statuses,
        latencies_ms=[value for result in results for value in result.latencies_ms],
        client_cpu_seconds=sum(result.client_cpu_seconds for result in results),
        server_cpu_seconds=sum(result.server_cpu_seconds for result in results),
        machine_busy_seconds=sum(result.machine_busy_seconds for result in results),
        parts=list(results),
    )


@dataclass(frozen=True)
class Workload:
    label: str
    server: Server
    requests: Sequence[RequestSpec]


def measure_interleaved(
    workloads: Sequence[Workload], *, seconds: float, connections: int, slices: int
) -> list[LoadResult]:
    """Measure each workload for `seconds` in total, in alternating slices (A B, B A, A B ...).

    The machine is shared: other processes come and go. Alternating short slices in an
    ABBA order spreads that background evenly over the workloads, so their ratio stays
    fair even when the absolute figures move.
    """
    slices = max(1, min(slices, 100))
    parts: list[list[LoadResult]] = [[] for _ in workloads]
    indexed = list(enumerate(workloads))
    for index in range(slices):
        for position, workload in indexed if index % 2 == 0 else reversed(indexed):
            parts[position].append(
                measure(
                    workload.server,
                    workload.label,
                    workload.requests,
                    seconds=seconds / slices,
                    connections=connections,
                )
            )
    return [merge(part) for part in parts]


def warm_up(
    server: Server, requests: Sequence[RequestSpec], seconds: float, connections: int
) -> None:
    result = measure(server, "warm-up", requests, seconds=seconds, connections=connections)
    if result.ok == 0:
        raise BenchError(f"warm-up got no successful answer: {dict(result.statuses)}")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (Linux /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- Reporting --------------------------------------------------------------------------------


def print_header(title: str, environment: BenchEnvironment | None, **facts: Any) -> None:
    print(f"== {title}")
    print(
        f"   machine: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    if environment is not None:
        print(f"   control plane: {environment.control_plane}")
    for name, value in facts.items():
        print(f"   {name.replace('_', ' ')}: {value}")
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[format_cell(value) for value in row] for row in rows]
    widths = [
        max(len(str(header)), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)
    ]
    line = "  ".join(f"{header:<{widths[i]}}" for i, header in enumerate(headers))
    print(line)
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print(
            "  ".join(
                f"{value:>{widths[i]}}" if i else f"{value:<{widths[i]}}"
                for i, value in enumerate(row)
            )
        )
    print()


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def load_rows(results: Sequence[LoadResult]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "measurement",
        "conns",
        "seconds",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p95 ms",
        "server CPU ms/req",
        "client CPU s",
        "other CPU cores",
    ]
    rows = [
        [
            result.label,
            result.connections,
            result.seconds,
            result.ok,
            result.errors,
            result.rate,
            result.p50,
            result.p95,
            result.server_cpu_ms_per_request,
            result.client_cpu_seconds,
            result.other_cpu_cores,
        ]
        for result in results
    ]
    return headers, rows


def print_errors(results: Sequence[LoadResult]) -> None:
    for result in results:
        if result.errors:
            print(f"   {result.label}: answers {dict(result.statuses)}")


BUSY_OTHER_CORES = 0.5


def print_busy_warning(results: Sequence[LoadResult]) -> None:
    """Say so when other processes took a large share of the machine while we measured."""
    busiest = max(result.other_cpu_cores for result in results)
    if busiest > BUSY_OTHER_CORES:
        print(
            f"note: other processes (including a local PostgreSQL, if used) took up to "
            f"{busiest:.2f} of {os.cpu_count()} cores during these measurements; the figures "
            "are noisy, rerun when the machine is quieter.\n"
        )


def paired_median_ratio(numerator: LoadResult, denominator: LoadResult) -> float:
    """Median over interleaved rounds of p50(numerator slice) / p50(denominator slice).

    Each round's two slices ran seconds apart, so a burst of background load moves both;
    the median over rounds ignores the few rounds a burst hit unevenly.
    """
    ratios = [a.p50 / b.p50 for a, b in zip(numerator.parts, denominator.parts, strict=True)]
    return statistics.median(ratios) if ratios else float("nan")


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def main_wrapper(main: Any) -> None:
    """Run a benchmark's main(); exit 2 only if it could not run.

    SIGTERM becomes SystemExit so that every `finally` runs and the servers are stopped.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    except BenchError as exc:
        print(f"could not run: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
