"""create_tenant <slug> --owner <email> [--name …] [--plan …] [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from billing.models import Plan
from tenants import services


class Command(BaseCommand):
    help = "Create a tenant with its owner (created if needed) and a first API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--owner", required=True, help="The owner's email address.")
        parser.add_argument("--name", default="")
        parser.add_argument("--plan", default=Plan.FREE)
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            # One transaction: a refused tenant leaves no new owner behind.
            with transaction.atomic():
                owner = services.get_or_create_user(options["owner"])
                tenant = services.provision_tenant(
                    slug=options["slug"],
                    owner=owner,
                    name=options["name"],
                    plan=options["plan"],
                    actor_label="command:create_tenant",
                )
                _, secret = services.create_api_key(
                    tenant=tenant, name="First key", created_by=owner, actor_label="command"
                )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        if options["json"]:
            result = {"tenant_id": str(tenant.id), "slug": tenant.slug, "api_key": secret}
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(f"Created tenant {tenant.slug} ({tenant.id}) owned by {owner.email}.")
        self.stdout.write(f"API key (shown once): {secret}")
