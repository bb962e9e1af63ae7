"""Backup and restore of a 100,000-memory tenant through a loopback S3 server: time and peak
memory, each in its own process.

    .venv/bin/python bench/backup.py [--memories 100000]

A temporary ENGRAM_DATA_DIR (removed at the end) with its own SQLite control plane; backup
storage is a bucket on moto's S3 server (ThreadedMotoServer on 127.0.0.1, port 0) run by this
process, so the phases' peaks are their own.

1. setup (a subprocess): migrate, provision a tenant, import N varied memories (the generator
   and import path of bench/portability.py);
2. backup (a fresh subprocess): `backups.services.back_up_tenant` — snapshot, integrity and
   FTS5 checks, compress + encrypt, upload, record;
3. restore (a fresh subprocess): `backups.services.restore_tenant` to that backup — which
   first backs up the current file, then downloads, authenticates, decrypts, verifies,
   migrates, copies into the live file, and records the result. Twice: first with the tenant
   unchanged since the backup (its file is that backup's byte for byte: nothing to upload
   before the restore), then with one memory written in between (a full backup first).

Judged by: backup ≤ 10 s, each restore ≤ 10 s, peak RSS ≤ 200 MB for each. Also shown: the CPU
seconds of each phase's process and of the S3 server (less sensitive to a busy machine than
the wall-clock times), and when each step of a phase ran, with its own thread's CPU seconds
(work a step hands to other threads, such as boto3's upload threads, is not in its figure).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _harness import BenchError, main_wrapper, print_header, print_table, verdict

ROOT = Path(__file__).resolve().parent.parent
BACKUP_TARGET_SECONDS = 10.0
RESTORE_TARGET_SECONDS = 10.0
PEAK_TARGET_MB = 200.0
MAX_MEMORIES = 500_000
PHASE_TIMEOUT_SECONDS = 900
SLUG = "bench-backup"
CREDENTIALS = {"ENGRAM_STORAGE_ACCESS_KEY_ID": "bench", "ENGRAM_STORAGE_SECRET_ACCESS_KEY": "bench"}


def phase_env(data_dir: Path, endpoint: str, bucket: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(
        DEBUG="0",
        SECRET_KEY="bench-only-secret-key-" + secrets.token_hex(16),
        API_KEY_PEPPER="bench-only-pepper-" + secrets.token_hex(16),
        ENGRAM_BACKUP_KEY="YmVuY2gtb25seS1iYWNrdXAta2V5LTMyLWJ5dGVzLi4=",
        ENGRAM_DATA_DIR=str(data_dir),
        ENGRAM_STORAGE_BUCKET=bucket,
        ENGRAM_STORAGE_ENDPOINT_URL=endpoint,
        ENGRAM_STORAGE_REGION="us-east-1",
        DJANGO_SETTINGS_MODULE="engram_cloud.settings",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **CREDENTIALS,
    )
    return env


def run_phase(phase: str, env: dict[str, str], **arguments: Any) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its last stdout line is its JSON result."""
    command = [sys.executable, __file__, "--phase", phase, "--arguments", json.dumps(arguments)]
    server_cpu = _own_cpu_seconds()
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
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    # This process only waits for the phase meanwhile: its CPU is the S3 server's.
    result["server_cpu_seconds"] = _own_cpu_seconds() - server_cpu
    return result


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=100_000, help="max 500,000")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="set the tenant up in DIR and keep it there; a later run with the same DIR and "
        "count reuses it instead of importing again (to iterate on backups/)",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_in_this_process(args.phase, json.loads(args.arguments))
        return
    import boto3
    from moto.server import ThreadedMotoServer

    count = max(1, min(args.memories, MAX_MEMORIES))
    if args.keep:
        data_dir = args.keep / f"{count}-memories"
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="engram-bench-backup-"))
    kept_setup = data_dir / "setup.json"
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=bucket)
        env = phase_env(data_dir, endpoint, bucket)
        print_header(
            "Backup and restore: backups.services, one process per phase, S3 on loopback (moto)",
            None,
            memories=f"{count:,}",
            control_plane="SQLite (fresh file in a temporary ENGRAM_DATA_DIR)",
        )
        if kept_setup.exists():
            setup = json.loads(kept_setup.read_text())
            run_phase("migrate", env)  # the control plane may be older than the code
        else:
            setup = run_phase("setup", env, count=count)
            if args.keep:
                kept_setup.write_text(json.dumps(setup))
        backup = run_phase("backup", env, tenant_id=setup["tenant_id"])
        restores = [
            run_phase(
                "restore",
                env,
                tenant_id=setup["tenant_id"],
                backup_id=backup["id"],
                write_first=write_first,
            )
            for write_first in (False, True)
        ]
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    report(count, setup, backup, restores)


def report(count: int, setup: dict, backup: dict, restores: list[dict]) -> None:
    print(
        f"   tenant: {setup['memories']:,} memories, database {setup['database_mb']:.1f} MB "
        f"(set up in {setup['seconds']:.1f} s); backup object {backup['object_mb']:.1f} MB"
    )
    print()
    rows, passed = [], []
    phases = [
        ("backup", backup, BACKUP_TARGET_SECONDS),
        ("restore, unchanged", restores[0], RESTORE_TARGET_SECONDS),
        ("restore, written to", restores[1], RESTORE_TARGET_SECONDS),
    ]
    for label, phase, target in phases:
        ok = phase["seconds"] <= target and phase["peak_mb"] <= PEAK_TARGET_MB
        passed.append(ok)
        rows.append(
            [
                label,
                phase["seconds"],
                target,
                phase["cpu_seconds"],
                phase["server_cpu_seconds"],
                phase["baseline_mb"],
                phase["peak_mb"],
                PEAK_TARGET_MB,
                verdict(ok),
            ]
        )
    print_table(
        [
            "phase",
            "seconds",
            "target s",
            "CPU s",
            "S3 server CPU s",
            "RSS after setup MB",
            "peak RSS MB",
            "target MB",
            "verdict",
        ],
        rows,
    )
    print_table(
        ["phase", "step", "from s", "to s", "thread CPU s", "max RSS meanwhile MB"],
        [[label, *step] for label, phase, _ in phases for step in phase["steps"]],
    )
    complete = all(restore["memories"] == setup["memories"] == count for restore in restores)
    if not complete:
        print(f"   incomplete: expected {count:,} memories before and after each restore")
    ratios = ", ".join(
        f"{label} {phase['seconds'] / target:.2f} / {phase['peak_mb'] / PEAK_TARGET_MB:.2f}"
        for label, phase, target in phases
    )
    print(f"ratios to the targets (time / peak): {ratios}  {verdict(all(passed) and complete)}")
    print(f"   load average at the end: {os.getloadavg()[0]:.2f}")


# --- The phases, each in its own process ----------------------------------------------------------


def memory_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process, in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/self/status has no {field}")


# The steps whose times are shown: (module, function), each timed wherever it is called from.
STEPS = [
    ("backups.services", "_drain"),
    ("backups.services", "take_snapshot"),
    ("backups.services", "verify_database"),
    ("backups.services", "_encrypt"),
    ("backups.services", "_store"),
    ("backups.services", "download_backup"),
    ("backups.services", "_prepare"),
    ("backups.services", "_copy_into_live"),
    ("backups.services", "_record"),
]


def time_steps(origin: float) -> list[tuple[str, float, float, float]]:
    """Wrap each step so each call is logged: name, start and end (s since `origin`), and the
    CPU seconds of the thread that ran it."""
    log: list[tuple[str, float, float, float]] = []
    for module_name, name in STEPS:
        module = importlib.import_module(module_name)
        function = getattr(module, name)

        def timed(*args: Any, _function: Any = function, _name: str = name, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return _function(*args, **kwargs)
            finally:
                log.append(
                    (_name, start - origin, time.perf_counter() - origin, time.thread_time() - cpu)
                )

        setattr(module, name, functools.wraps(function)(timed))
    return log


def sample_rss(origin: float, stop: threading.Event) -> list[tuple[float, float]]:
    """VmRSS every 10 ms in a thread until `stop` is set: (s since `origin`, MB)."""
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while not stop.wait(0.01):
            samples.append((time.perf_counter() - origin, memory_mb("VmRSS")))

    threading.Thread(target=sample, daemon=True).start()
    return samples


def run_in_this_process(phase: str, arguments: dict[str, Any]) -> None:
    import django

    django.setup()
    baseline_mb = memory_mb("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    steps = time_steps(started) if phase != "setup" else []
    stop = threading.Event()
    samples = sample_rss(started, stop)
    result = PHASES[phase](**arguments)
    stop.set()
    result.update(
        baseline_mb=baseline_mb,
        peak_mb=memory_mb("VmHWM"),
        cpu_seconds=time.process_time() - cpu,
        steps=[
            [name, start, end, cpu, max((mb for t, mb in samples if start <= t <= end), default=0)]
            for name, start, end, cpu in sorted(steps, key=lambda step: step[1])
        ],
    )
    print(json.dumps(result))


def _memory_count(tenant_id: str) -> int:
    from memories.models import Memory
    from memories.tenant_db import bind_tenant_database

    with bind_tenant_database(tenant_id):
        return Memory.objects.count()


def setup_phase(count: int) -> dict[str, Any]:
    import portability as portability_bench
    from django.conf import settings
    from django.core.management import call_command

    from memories import portability
    from memories.tenant_db import bind_tenant_database, tenant_database_path
    from tenants import services

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    owner = services.get_or_create_user("owner@bench-backup.invalid")
    tenant = services.provision_tenant(slug=SLUG, owner=owner, plan="enterprise")
    path = Path(settings.ENGRAM_DATA_DIR) / "export-in.json"
    portability_bench.write_export_file(path, count)
    with bind_tenant_database(tenant.id), open(path, "rb") as file:
        portability.import_memories(portability.read_export_file(file))
    path.unlink()
    return {
        "tenant_id": str(tenant.id),
        "memories": _memory_count(str(tenant.id)),
        "database_mb": tenant_database_path(tenant.id).stat().st_size / 1024 / 1024,
        "seconds": time.perf_counter() - started,
    }


def backup_phase(tenant_id: str) -> dict[str, Any]:
    from backups.services import back_up_tenant
    from tenants.models import Tenant

    tenant = Tenant.objects.get(pk=tenant_id)
    started = time.perf_counter()
    record = back_up_tenant(tenant)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "id": record.pk, "object_mb": record.size / 1024 / 1024}


def restore_phase(tenant_id: str, backup_id: int, write_first: bool) -> dict[str, Any]:
    from backups.models import BackupRecord
    from backups.services import restore_tenant
    from memories.services import create_memory
    from memories.tenant_db import bind_tenant_database
    from tenants.models import Tenant

    tenant = Tenant.objects.get(pk=tenant_id)
    backup = BackupRecord.objects.get(pk=backup_id)
    if write_first:
        with bind_tenant_database(tenant_id):
            create_memory(content="written after the backup, undone by the restore")
    started = time.perf_counter()
    restore_tenant(tenant, backup=backup, actor_label="bench")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "memories": _memory_count(tenant_id)}


def migrate_phase() -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return {}


PHASES = {
    "migrate": migrate_phase,
    "setup": setup_phase,
    "backup": backup_phase,
    "restore": restore_phase,
}


if __name__ == "__main__":
    main_wrapper(main)
