"""The seat rule: a plan's member limit after a downgrade.

Nobody is removed when a workspace drops to a plan with fewer seats. Seats go to owners
first, then to members in the order they joined; whoever is beyond the plan's member limit
keeps read-only access (tenants.permissions.membership_scopes) until an admin removes
someone or the workspace upgrades again. Owners always have a seat, so someone can.
"""

from __future__ import annotations

from django.db.models import Q

from billing.plans import plans
from tenants.models import Membership, Role


def has_seat(membership: Membership, plan_code: str) -> bool:
    limit = plans.get(plan_code).max_members
    if limit is None or membership.role == Role.OWNER:
        return True
    ahead = (
        Membership.objects.filter(tenant_id=membership.tenant_id)
        .filter(
            Q(role=Role.OWNER)
            | Q(created_at__lt=membership.created_at)
            | Q(created_at=membership.created_at, pk__lt=membership.pk)
        )
        .exclude(pk=membership.pk)
        .count()
    )
    return ahead < limit
