"""Import and export of 100,000 memories: time and peak memory, each in its own process.

    .venv/bin/python bench/portability.py [--memories 100000]

Everything happens in a temporary ENGRAM_DATA_DIR (removed at the end) with its own SQLite
control plane (a DATABASE_URL in the environment is ignored, so no shared database is touched):

1. setup (a subprocess): migrate, provision a tenant, and write an export file of N varied
   memories to disk (all 17 types, tags, metadata, both tiers, some with previous versions);
2. import (a fresh subprocess): `memories.portability.import_memories` over that file, parsed
   as it is read — the same path as POST /v1/import and `import_tenant`;
3. export (a fresh subprocess): `memories.portability.export_memories` written to a file — the
   same generator GET /v1/export streams and `export_tenant` writes.

Each phase reports its wall time and its process's peak resident memory (VmHWM), so each peak
is its own; the RSS after django.setup() is printed alongside as the framework's share.

Judged by: import ≤ 60 s, export ≤ 15 s, peak RSS ≤ 300 MB for each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import BenchError, main_wrapper, print_header, print_table, verdict

ROOT = Path(__file__).resolve().parent.parent
IMPORT_TARGET_SECONDS = 60.0
EXPORT_TARGET_SECONDS = 15.0
PEAK_TARGET_MB = 300.0
MAX_MEMORIES = 500_000
PHASE_TIMEOUT_SECONDS = 900
SLUG = "bench-portability"
TYPES = [
    "note",
    "todo",
    "issue",
    "decision",
    "preference",
    "learning",
    "context",
    "credential",
    "custom",
    "transcript_chunk",
    "episodic",
    "procedural",
    "summary",
    "checkpoint",
    "image",
    "audio",
    "video",
]


# --- The parent: runs the phases and judges them ------------------------------------------------


def phase_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.update(
        DEBUG="0",
        SECRET_KEY="bench-only-secret-key-" + secrets.token_hex(16),
        API_KEY_PEPPER="bench-only-pepper-" + secrets.token_hex(16),
        ENGRAM_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="engram_cloud.settings",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def run_phase(phase: str, env: dict[str, str], **arguments: Any) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its last stdout line is its JSON result."""
    command = [sys.executable, __file__, "--phase", phase, "--arguments", json.dumps(arguments)]
    try:
        completed = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=PHASE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{phase} did not finish in {PHASE_TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        raise BenchError(f"{phase} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=100_000, help="max 500,000")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_in_this_process(args.phase, json.loads(args.arguments))
        return
    count = max(1, min(args.memories, MAX_MEMORIES))
    data_dir = Path(tempfile.mkdtemp(prefix="engram-bench-portability-"))
    try:
        env = phase_env(data_dir)
        print_header(
            "Import and export: memories.portability services, one process per phase",
            None,
            memories=f"{count:,}",
            control_plane="SQLite (fresh file in a temporary ENGRAM_DATA_DIR)",
        )
        setup = run_phase("setup", env, count=count)
        imported = run_phase("import", env, tenant_id=setup["tenant_id"], path=setup["path"])
        exported = run_phase("export", env, tenant_id=setup["tenant_id"])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    report(count, setup, imported, exported)


def report(count: int, setup: dict, imported: dict, exported: dict) -> None:
    print(
        f"   file: {setup['file_mb']:.1f} MB, {count:,} memories "
        f"(generated in {setup['seconds']:.1f} s)"
    )
    print(
        f"   import: {imported['imported']:,} imported, {imported['skipped']:,} skipped, "
        f"{imported['failed']:,} failed; export: {exported['memory_count']:,} memories, "
        f"{exported['file_mb']:.1f} MB"
    )
    print()
    rows = []
    passed = []
    for label, phase, target in (
        ("import", imported, IMPORT_TARGET_SECONDS),
        ("export", exported, EXPORT_TARGET_SECONDS),
    ):
        ok = phase["seconds"] <= target and phase["peak_mb"] <= PEAK_TARGET_MB
        passed.append(ok)
        rows.append(
            [
                label,
                phase["seconds"],
                target,
                count / phase["seconds"],
                phase["baseline_mb"],
                phase["peak_mb"],
                PEAK_TARGET_MB,
                verdict(ok),
            ]
        )
    rows.insert(1, breakdown_row("  pass one: parse, validate, stage", imported["staging_seconds"]))
    rows.insert(2, breakdown_row("  pass two: store_embeddings", imported["embedding_seconds"]))
    writing = imported["seconds"] - imported["staging_seconds"] - imported["embedding_seconds"]
    rows.insert(3, breakdown_row("  pass two: rows, FTS index, commits", writing))
    print_table(
        [
            "phase",
            "seconds",
            "target s",
            "memories/s",
            "RSS after setup MB",
            "peak RSS MB",
            "target MB",
            "verdict",
        ],
        rows,
    )
    complete = imported["imported"] == count and exported["memory_count"] == count
    if not complete:
        print(f"   incomplete: expected {count:,} memories imported and exported")
    print(
        f"ratios: import {imported['seconds'] / IMPORT_TARGET_SECONDS:.2f}, "
        f"export {exported['seconds'] / EXPORT_TARGET_SECONDS:.2f} of the time targets; "
        f"peaks {imported['peak_mb'] / PEAK_TARGET_MB:.2f} and "
        f"{exported['peak_mb'] / PEAK_TARGET_MB:.2f} of {PEAK_TARGET_MB:.0f} MB  "
        f"{verdict(all(passed) and complete)}"
    )


def breakdown_row(label: str, seconds: float) -> list[Any]:
    return [label, seconds, "", "", "", "", "", ""]


# --- The phases, each in its own process ----------------------------------------------------------


def memory_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process, in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/self/status has no {field}")


def run_in_this_process(phase: str, arguments: dict[str, Any]) -> None:
    import django

    django.setup()
    baseline_mb = memory_mb("VmRSS")
    result = PHASES[phase](**arguments)
    result.update(baseline_mb=baseline_mb, peak_mb=memory_mb("VmHWM"))
    print(json.dumps(result))


def setup_phase(count: int) -> dict[str, Any]:
    from django.conf import settings
    from django.core.management import call_command

    from tenants import services

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    owner = services.get_or_create_user("owner@bench-portability.invalid")
    tenant = services.provision_tenant(slug=SLUG, owner=owner)
    path = Path(settings.ENGRAM_DATA_DIR) / "export-in.json"
    write_export_file(path, count)
    return {
        "tenant_id": str(tenant.id),
        "path": str(path),
        "file_mb": path.stat().st_size / 1024 / 1024,
        "seconds": time.perf_counter() - started,
    }


class Stopwatch:
    """Seconds spent inside the wrapped function, summed over its calls."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def import_phase(tenant_id: str, path: str) -> dict[str, Any]:
    from memories import portability
    from memories.tenant_db import bind_tenant_database

    # Where the time goes: pass one (parse, validate, stage) and the vectors of pass two.
    staging = portability._stage = Stopwatch(portability._stage)
    embedding = portability.store_embeddings = Stopwatch(portability.store_embeddings)
    with bind_tenant_database(tenant_id), open(path, "rb") as file:
        started = time.perf_counter()
        result = portability.import_memories(portability.read_export_file(file))
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "staging_seconds": staging.seconds,
        "embedding_seconds": embedding.seconds,
        "imported": result.imported,
        "skipped": result.skipped,
        "failed": result.failed,
    }


def export_phase(tenant_id: str) -> dict[str, Any]:
    from django.conf import settings

    from memories.portability import export_memories
    from memories.tenant_db import bind_tenant_database

    path = Path(settings.ENGRAM_DATA_DIR) / "export-out.json"
    with bind_tenant_database(tenant_id), open(path, "w", encoding="utf-8") as file:
        started = time.perf_counter()
        for chunk in export_memories():
            file.write(chunk)
        seconds = time.perf_counter() - started
    with open(path, encoding="utf-8") as file:
        header = json.loads(file.read(300).split(',"memories":', 1)[0] + "}")
    return {
        "seconds": seconds,
        "memory_count": header["memory_count"],
        "file_mb": path.stat().st_size / 1024 / 1024,
    }


PHASES = {"setup": setup_phase, "import": import_phase, "export": export_phase}


# --- Generating the memories ---------------------------------------------------------------------


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """Pronounceable made-up words: varied enough for realistic FTS and embedding work."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def memory_record(rng: random.Random, number: int, words: list[str], now: dt.datetime) -> dict:
    created = now - dt.timedelta(seconds=rng.randint(3600, 365 * 86400))
    updated = created + dt.timedelta(seconds=rng.randint(0, 3600))
    daily = rng.random() < 0.1
    content = " ".join(rng.choices(words, k=rng.randint(15, 60)))
    record = {
        "id": number,
        "content": f"{content} #{number}",
        "memory_type": TYPES[number % len(TYPES)],
        "tags": sorted(set(rng.choices(words[:200], k=rng.randint(0, 4)))),
        "metadata": {
            "source": rng.choice(["chat", "cli", "ide", "api"]),
            "n": number,
            "score": round(rng.random(), 3),
            **({"nested": {"ref": rng.choice(words)}} if number % 5 == 0 else {}),
        },
        "importance": round(rng.random(), 2),
        "workspace": f"ws-{number % 8}",
        "tier": "daily" if daily else "permanent",
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
        "expires_at": (now + dt.timedelta(days=1)).isoformat() if daily else None,
        "version": 1,
        "access_count": rng.randint(0, 50),
        "last_accessed_at": updated.isoformat(),
        "versions": [],
        "links": [],
    }
    if number % 20 == 0:
        record["version"] = 3
        record["versions"] = [
            {
                "version": version,
                "content": f"earlier draft {version} of #{number}",
                "type": record["memory_type"],
                "tags": record["tags"],
                "metadata": {},
                "importance": 0.5,
                "workspace": record["workspace"],
                "tier": "permanent",
                "expires_at": None,
                "created_at": created.isoformat(),
            }
            for version in (1, 2)
        ]
    return record


def write_export_file(path: Path, count: int) -> None:
    rng = random.Random(20250501)
    words = vocabulary(rng, 5000)
    now = dt.datetime.now(dt.UTC)
    with open(path, "w", encoding="utf-8") as file:
        header = {"version": "1.0", "exported_at": now.isoformat(), "memory_count": count}
        file.write(json.dumps(header)[:-1] + ', "memories": [')
        for number in range(1, count + 1):
            if number > 1:
                file.write(",")
            file.write(json.dumps(memory_record(rng, number, words, now)))
        file.write("]}")


if __name__ == "__main__":
    main_wrapper(main)
