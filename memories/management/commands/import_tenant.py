"""Import an Engram export file (Engram OSS v1.0 or Engram Cloud) into a tenant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import Plan
from memories.management.commands.export_tenant import tenant_by_slug
from memories.portability import (
    ExportFileError,
    ImportQuotaExceeded,
    import_memories,
    read_export_file,
)
from memories.tenant_db import TenantDatabaseMissing, bind_tenant_database


class Command(BaseCommand):
    help = (
        "Import an Engram export file into a tenant, within its plan's memory limit. "
        "Bad records are reported and skipped; a malformed file imports nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--input", required=True, type=Path, help="Export file to read.")
        parser.add_argument(
            "--no-skip-duplicates",
            dest="skip_duplicates",
            action="store_false",
            help="Import records whose content the tenant already holds.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        limit = Plan.objects.get(code=tenant.plan_id).max_memories
        try:
            with open(options["input"], "rb") as file, bind_tenant_database(tenant.id):
                result = import_memories(
                    read_export_file(file),
                    skip_duplicates=options["skip_duplicates"],
                    max_memories=limit,
                )
        except OSError as error:
            raise CommandError(f"Cannot read {options['input']}: {error}") from None
        except TenantDatabaseMissing:
            raise CommandError(f"Tenant {tenant.slug!r} has no database file.") from None
        except ExportFileError as error:
            raise CommandError(f"Not a usable export file ({error.field}): {error}") from None
        except ImportQuotaExceeded as error:
            raise CommandError(str(error)) from None
        for failure in result.errors:
            self.stderr.write(f"record {failure['index']}: {json.dumps(failure['errors'])}")
        self.stdout.write(
            f"Imported {result.imported}, skipped {result.skipped}, failed {result.failed} "
            f"memories into {tenant.slug}."
        )
