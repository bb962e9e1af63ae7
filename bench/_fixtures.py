"""Benchmark fixtures, run in a subprocess with the run's environment.

    python bench/_fixtures.py <command>   (arguments as a JSON object on stdin)

Commands:
  setup-tenants  provision `count` tenants `{prefix}-{n}` through tenants.services, optionally
                 with an API key and a memory each; prints the tenants and the timings.

Prints one JSON line on stdout: the result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from memories import services as memory_services  # noqa: E402
from memories.tenant_db import bind_tenant_database  # noqa: E402
from tenants import services  # noqa: E402


def owner_email(prefix: str) -> str:
    return f"owner@{prefix}.bench.invalid"


def setup_tenants(
    prefix: str, start: int, count: int, keys: bool = True, memories: bool = False
) -> dict[str, Any]:
    owner = services.get_or_create_user(owner_email(prefix))
    provision_ms: list[float] = []
    tenants = []
    began = time.perf_counter()
    for number in range(start, start + count):
        started = time.perf_counter()
        tenant = services.provision_tenant(slug=f"{prefix}-{number}", owner=owner)
        provision_ms.append(1000 * (time.perf_counter() - started))
        tenants.append(tenant)
    provision_seconds = time.perf_counter() - began

    began = time.perf_counter()
    rows = []
    for tenant in tenants:
        row: dict[str, Any] = {"slug": tenant.slug, "id": str(tenant.id)}
        if keys:
            _, row["key"] = services.create_api_key(tenant=tenant, name="bench", created_by=owner)
        if memories:
            with bind_tenant_database(tenant.id):
                memory = memory_services.create_memory(
                    content=f"benchmark memory of {tenant.slug}", tags=["bench"]
                )
            row["memory_id"] = memory.pk
        rows.append(row)
    extras_seconds = time.perf_counter() - began
    return {
        "tenants": rows,
        "provision_seconds": provision_seconds,
        "provision_ms": sorted(provision_ms),
        "extras_seconds": extras_seconds,
    }


COMMANDS = {
    "setup-tenants": setup_tenants,
}


def main() -> None:
    command = sys.argv[1]
    arguments = json.loads(sys.stdin.read() or "{}")
    result = COMMANDS[command](**arguments)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
