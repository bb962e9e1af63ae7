"""Control-plane operations. Each is atomic and leaves an audit event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import Plan
from memories.provisioning import create_tenant_database, remove_tenant_database
from tenants import api_keys
from tenants.models import (
    RESERVED_SLUGS,
    ApiKey,
    AuditEvent,
    Membership,
    Role,
    Tenant,
    TenantStatus,
    User,
    slug_validator,
)
from tenants.permissions import ALL_SCOPES, DEFAULT_KEY_SCOPES


def record_audit(
    *,
    tenant: Tenant | None,
    action: str,
    target: str = "",
    actor: User | None = None,
    actor_label: str = "",
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        tenant=tenant,
        action=action,
        target=target,
        actor=actor,
        actor_label=actor_label or (str(actor) if actor else "system"),
        metadata=metadata or {},
    )


def get_or_create_user(email: str) -> User:
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"owner": f"{email!r} is not an email address."}) from None
    email = User.objects.normalize_email(email).lower()
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(email=email)
    return user


def provision_tenant(
    *,
    slug: str,
    owner: User,
    name: str = "",
    plan: str = Plan.FREE,
    actor: User | None = None,
    actor_label: str = "",
) -> Tenant:
    """Create the tenant, its owner's membership and its database file, all or nothing."""
    slug_validator(slug)
    if slug in RESERVED_SLUGS:
        raise ValidationError({"slug": f"The slug {slug!r} is reserved."})
    if not Plan.objects.filter(code=plan).exists():
        raise ValidationError({"plan": f"Unknown plan {plan!r}."})
    tenant = Tenant(slug=slug, name=name or slug, plan_id=plan)
    try:
        with transaction.atomic():
            tenant.save()
            Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
            record_audit(
                tenant=tenant,
                action="tenant.created",
                target=tenant.slug,
                actor=actor or owner,
                actor_label=actor_label,
                metadata={"plan": plan, "owner": owner.email},
            )
            # Inside the transaction: if the file cannot be made, no tenant row remains.
            create_tenant_database(tenant.id)
    except BaseException as exc:
        remove_tenant_database(tenant.id)
        if isinstance(exc, IntegrityError):
            raise ValidationError({"slug": f"The slug {slug!r} is taken."}) from None
        raise
    return tenant


def create_api_key(
    *,
    tenant: Tenant,
    name: str,
    scopes: Iterable[str] = DEFAULT_KEY_SCOPES,
    created_by: User | None = None,
    expires_at: dt.datetime | None = None,
    mode: str = "live",
    actor_label: str = "",
    rotated_from: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Issue a key; the secret is returned here once and never stored."""
    scopes = sorted(set(scopes))
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown or not scopes:
        raise ValidationError({"scopes": f"Choose from {sorted(ALL_SCOPES)}."})
    secret = api_keys.generate_key(mode)
    with transaction.atomic():
        key = ApiKey.objects.create(
            tenant=tenant,
            name=name,
            prefix=api_keys.display_prefix(secret),
            digest=api_keys.key_digest(secret),
            scopes=scopes,
            created_by=created_by,
            expires_at=expires_at,
            rotated_from=rotated_from,
        )
        record_audit(
            tenant=tenant,
            action="api_key.rotated" if rotated_from else "api_key.created",
            target=key.prefix,
            actor=created_by,
            actor_label=actor_label,
            metadata={"name": name, "scopes": scopes},
        )
    return key, secret


def revoke_api_key(key: ApiKey, *, actor: User | None = None, actor_label: str = "") -> ApiKey:
    """Revoke now; the next request with the key is refused."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key.pk)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            record_audit(
                tenant=key.tenant,
                action="api_key.revoked",
                target=key.prefix,
                actor=actor,
                actor_label=actor_label,
            )
    return key


def rotate_api_key(
    key: ApiKey,
    *,
    actor: User | None = None,
    actor_label: str = "",
    grace: dt.timedelta | None = None,
) -> tuple[ApiKey, str]:
    """Issue a successor with the same name and scopes; the old key lives for the grace period."""
    grace = (
        grace
        if grace is not None
        else dt.timedelta(seconds=settings.ENGRAM_KEY_ROTATION_GRACE_SECONDS)
    )
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if not old.is_usable() or hasattr(old, "rotated_to"):
            raise ValidationError("Only an active key that was not rotated yet can be rotated.")
        ends = timezone.now() + grace
        old.expires_at = min(old.expires_at, ends) if old.expires_at else ends
        old.save(update_fields=["expires_at"])
        return create_api_key(
            tenant=old.tenant,
            name=old.name,
            scopes=old.scopes,
            created_by=actor,
            actor_label=actor_label,
            rotated_from=old,
        )


def _set_status(tenant: Tenant, status: str, action: str, actor: User | None, label: str) -> Tenant:
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if tenant.status == TenantStatus.DELETED:
            raise ValidationError("A deleted tenant cannot change status.")
        if tenant.status != status:
            tenant.status = status
            tenant.save(update_fields=["status"])
            record_audit(
                tenant=tenant, action=action, target=tenant.slug, actor=actor, actor_label=label
            )
    return tenant


def suspend_tenant(tenant: Tenant, *, actor: User | None = None, actor_label: str = "") -> Tenant:
    return _set_status(tenant, TenantStatus.SUSPENDED, "tenant.suspended", actor, actor_label)


def reactivate_tenant(
    tenant: Tenant, *, actor: User | None = None, actor_label: str = ""
) -> Tenant:
    return _set_status(tenant, TenantStatus.ACTIVE, "tenant.reactivated", actor, actor_label)
