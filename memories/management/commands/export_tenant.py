"""Write a tenant's memories to an Engram export file (the same file GET /v1/export serves)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet

from backups.services import export_to_storage
from memories.portability import export_memories
from memories.tenant_db import TenantDatabaseMissing, bind_tenant_database
from tenants.models import Tenant, TenantStatus


def tenant_by_slug(slug: str) -> Tenant:
    """The tenant an operator named; suspended tenants included (their data is still theirs)."""
    tenant = Tenant.objects.exclude(status=TenantStatus.DELETED).filter(slug=slug).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug {slug!r}.")
    return tenant


def tenants_by_slugs(slugs: Sequence[str]) -> QuerySet[Tenant]:
    """The tenants an operator named, in slug order (every tenant if none is named). A slug
    of no tenant is refused before anything runs, rather than quietly doing less."""
    tenants = Tenant.objects.exclude(status=TenantStatus.DELETED).order_by("slug")
    if not slugs:
        return tenants
    tenants = tenants.filter(slug__in=slugs)
    unknown = sorted(set(slugs) - set(tenants.values_list("slug", flat=True)))
    if unknown:
        raise CommandError(f"No tenant with slug {', '.join(map(repr, unknown))}.")
    return tenants


class Command(BaseCommand):
    help = "Export a tenant's live memories to an Engram export file (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--output", type=Path, help="File to write.")
        target.add_argument(
            "--to-storage",
            action="store_true",
            help="Write it to backup storage as tenants/{tenant_id}/exports/{timestamp}.json.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        if options["to_storage"]:
            try:
                stored = export_to_storage(tenant)
            except TenantDatabaseMissing:
                raise CommandError(f"Tenant {tenant.slug!r} has no database file.") from None
            self.stdout.write(f"Exported {tenant.slug} to storage: {stored}")
            return
        output: Path = options["output"]
        # Written next to the target and renamed at the end: a failed export leaves no
        # half-written file that looks like a good one.
        partial = output.with_name(output.name + ".partial")
        try:
            with bind_tenant_database(tenant.id), open(partial, "w", encoding="utf-8") as file:
                for chunk in export_memories():
                    file.write(chunk)
            os.replace(partial, output)
        except TenantDatabaseMissing:
            raise CommandError(f"Tenant {tenant.slug!r} has no database file.") from None
        except OSError as error:
            raise CommandError(f"Cannot write {output}: {error}") from None
        finally:
            partial.unlink(missing_ok=True)
        self.stdout.write(f"Exported {tenant.slug} to {output} ({output.stat().st_size} bytes).")
