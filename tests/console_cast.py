"""The console tests' cast: workspace "acme" (Team plan, so it has room for a team) with alice
(owner), adam (admin), mia (member) and vic (viewer); charlie belongs to no workspace of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.test import Client

from memories import services as memory_services
from memories.tenant_db import bind_tenant_database
from tenants import services
from tenants.models import ApiKey, Invite, Membership, Role, Tenant, User


@dataclass
class Cast:
    tenant: Tenant
    people: dict[str, User]
    key: ApiKey
    memory_id: int
    invite: Invite
    invite_token: str

    def membership(self, who: str) -> Membership:
        return Membership.objects.get(tenant=self.tenant, user=self.people[who])

    def client(self, who: str | None) -> Client:
        client = Client()
        if who is not None:
            client.force_login(self.people[who])
        return client


ROLES = {"alice": Role.OWNER, "adam": Role.ADMIN, "mia": Role.MEMBER, "vic": Role.VIEWER}


def make_cast(plan: str = "team") -> Cast:
    people = {
        name: User.objects.create_user(f"{name}@example.com", password=None)
        for name in [*ROLES, "charlie"]
    }
    tenant = services.provision_tenant(slug="acme", name="Acme", owner=people["alice"], plan=plan)
    for name, role in ROLES.items():
        if role != Role.OWNER:
            Membership.objects.create(user=people[name], tenant=tenant, role=role)
    services.provision_tenant(slug="charlies", owner=people["charlie"])
    key, _ = services.create_api_key(tenant=tenant, name="agent", created_by=people["alice"])
    with bind_tenant_database(tenant.id):
        memory = memory_services.create_memory(content="Deploys use the blue-green script")
    invite, token = services.invite_member(
        tenant, email="newcomer@example.com", role=Role.MEMBER, invited_by=people["alice"]
    )
    return Cast(
        tenant=tenant,
        people=people,
        key=key,
        memory_id=memory.pk,
        invite=invite,
        invite_token=token,
    )
