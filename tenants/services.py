"""Control-plane operations. Each is atomic and leaves an audit event."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from billing.models import Plan
from memories.provisioning import create_tenant_database, remove_tenant_database
from memories.tenant_db import DATA_PLANE_ALIAS, tenant_database_path
from tenants import api_keys
from tenants.models import (
    RESERVED_SLUGS,
    ApiKey,
    AuditEvent,
    Invite,
    InviteState,
    Membership,
    Role,
    Tenant,
    TenantStatus,
    User,
    slug_validator,
)
from tenants.permissions import (
    ALL_SCOPES,
    DEFAULT_KEY_SCOPES,
    Scope,
    grants,
    membership_scopes,
)


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


def sign_up(*, email: str, password: str, name: str = "") -> User:
    """A new account (the form has validated the password); its email must be free."""
    email = User.objects.normalize_email(email).lower()
    with transaction.atomic():
        if User.objects.filter(email=email).exists():
            raise ValidationError({"email": "An account with this email already exists."})
        user = User.objects.create_user(email=email, password=password, name=name)
        record_audit(tenant=None, action="user.signed_up", target=email, actor=user)
    return user


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


# --- Workspaces (the console's word for a tenant) ---------------------------------------------


def _locked_tenant(tenant: Tenant) -> Tenant:
    """The tenant row, locked for the transaction; a deleted tenant is gone for good."""
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if locked.status == TenantStatus.DELETED:
        raise ValidationError("This workspace has been deleted.")
    return locked


def rename_workspace(tenant: Tenant, name: str, *, actor: User) -> Tenant:
    name = name.strip()
    if not name or len(name) > Tenant._meta.get_field("name").max_length:
        raise ValidationError({"name": "A name is 1-120 characters."})
    with transaction.atomic():
        tenant = _locked_tenant(tenant)
        if tenant.name != name:
            previous, tenant.name = tenant.name, name
            tenant.save(update_fields=["name"])
            record_audit(
                tenant=tenant,
                action="tenant.renamed",
                target=tenant.slug,
                actor=actor,
                metadata={"from": previous, "to": name},
            )
    return tenant


def delete_workspace(tenant: Tenant, *, actor: User) -> Tenant:
    """Mark the tenant deleted, end every membership, key and invite, remove its data file.

    The row stays (status `deleted`) so the audit trail and usage history keep their tenant;
    its slug is not handed out again.
    """
    with transaction.atomic():
        tenant = _locked_tenant(tenant)
        now = timezone.now()
        tenant.status = TenantStatus.DELETED
        tenant.save(update_fields=["status"])
        tenant.api_keys.filter(revoked_at__isnull=True).update(revoked_at=now)
        tenant.invites.filter(accepted_at__isnull=True, revoked_at__isnull=True).update(
            revoked_at=now
        )
        tenant.memberships.all().delete()
        record_audit(tenant=tenant, action="tenant.deleted", target=tenant.slug, actor=actor)
        tenant_id = tenant.id
        transaction.on_commit(lambda: _remove_data_file(tenant_id))
    return tenant


def _remove_data_file(tenant_id: Any) -> None:
    """After the deletion commits: close this thread's handles on the file (open or parked),
    then remove it. A web worker that had it parked closes it at the first of its requests
    after PARKED_IDLE_SECONDS, or sooner when it is the least recently used."""
    connection = connections[DATA_PLANE_ALIAS]
    path = tenant_database_path(tenant_id)
    if connection.connection is not None and connection.open_path == path:
        connection.close_current()
    connection.close_parked(path)
    remove_tenant_database(tenant_id)


# --- Members and invites ----------------------------------------------------------------------

INVITE_LIFETIME = dt.timedelta(days=7)
INVITABLE_ROLES = (Role.ADMIN, Role.MEMBER, Role.VIEWER)


class InviteUnusable(Exception):
    """An invite link that cannot be accepted; `reason` says why, for the page shown."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def invite_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _member_limit_reached(tenant: Tenant, *, pending_invites: bool) -> str | None:
    """A message when the plan has no room for one more member, else None."""
    plan = Plan.objects.get(pk=tenant.plan_id)
    limit = plan.max_members
    if limit is None:
        return None
    taken = tenant.memberships.count()
    if pending_invites:
        taken += sum(1 for invite in tenant.invites.all() if invite.state() == InviteState.PENDING)
    if taken >= limit:
        return (
            f"The {plan.name} plan allows {limit} member{'s' if limit != 1 else ''}"
            f"{' (invites pending included)' if pending_invites else ''}; upgrade to add more."
        )
    return None


def invite_member(tenant: Tenant, *, email: str, role: str, invited_by: User) -> tuple[Invite, str]:
    """Invite someone by email; returns the invite and the link's token (shown only here)."""
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": "Enter a valid email address."}) from None
    email = User.objects.normalize_email(email).lower()
    if role not in INVITABLE_ROLES:
        raise ValidationError({"role": f"Choose one of {', '.join(INVITABLE_ROLES)}."})
    with transaction.atomic():
        tenant = _locked_tenant(tenant)
        if tenant.memberships.filter(user__email=email).exists():
            raise ValidationError({"email": f"{email} is already a member."})
        if any(
            invite.state() == InviteState.PENDING for invite in tenant.invites.filter(email=email)
        ):
            raise ValidationError({"email": f"{email} already has a pending invite; resend it."})
        full = _member_limit_reached(tenant, pending_invites=True)
        if full:
            raise ValidationError(full)
        token = secrets.token_urlsafe(32)
        invite = Invite.objects.create(
            tenant=tenant,
            email=email,
            role=role,
            token_digest=invite_digest(token),
            invited_by=invited_by,
            expires_at=timezone.now() + INVITE_LIFETIME,
        )
        record_audit(
            tenant=tenant,
            action="member.invited",
            target=email,
            actor=invited_by,
            metadata={"role": role},
        )
    return invite, token


def resend_invite(invite: Invite, *, actor: User) -> tuple[Invite, str]:
    """A fresh token and a fresh week for a pending or expired invite; the old link dies."""
    with transaction.atomic():
        invite = Invite.objects.select_for_update().get(pk=invite.pk)
        if invite.state() not in (InviteState.PENDING, InviteState.EXPIRED):
            raise ValidationError("Only a pending or expired invite can be resent.")
        token = secrets.token_urlsafe(32)
        invite.token_digest = invite_digest(token)
        invite.expires_at = timezone.now() + INVITE_LIFETIME
        invite.save(update_fields=["token_digest", "expires_at"])
        record_audit(
            tenant=invite.tenant, action="member.invite_resent", target=invite.email, actor=actor
        )
    return invite, token


def revoke_invite(invite: Invite, *, actor: User) -> Invite:
    with transaction.atomic():
        invite = Invite.objects.select_for_update().get(pk=invite.pk)
        if invite.state() == InviteState.ACCEPTED:
            raise ValidationError("This invite was already accepted.")
        if invite.revoked_at is None:
            invite.revoked_at = timezone.now()
            invite.save(update_fields=["revoked_at"])
            record_audit(
                tenant=invite.tenant,
                action="member.invite_revoked",
                target=invite.email,
                actor=actor,
            )
    return invite


def find_invite(token: str) -> Invite:
    """The invite a link names, if it can still be accepted; else InviteUnusable."""
    invite = (
        Invite.objects.select_related("tenant", "invited_by")
        .filter(token_digest=invite_digest(token))
        .first()
    )
    if invite is None or invite.tenant.status == TenantStatus.DELETED:
        raise InviteUnusable("unknown", "This invite link is not valid.")
    state = invite.state()
    if state == InviteState.ACCEPTED:
        raise InviteUnusable("used", "This invite has already been used.")
    if state == InviteState.REVOKED:
        raise InviteUnusable("revoked", "This invite was withdrawn by the workspace.")
    if state == InviteState.EXPIRED:
        raise InviteUnusable(
            "expired", "This invite has expired. Ask the workspace admin for a new one."
        )
    return invite


def accept_invite(token: str, *, user: User) -> Membership:
    """Join the invite's tenant as `user`, who must be the invited address."""
    with transaction.atomic():
        invite = find_invite(token)
        invite = Invite.objects.select_for_update().get(pk=invite.pk)
        find_invite(token)  # again, under the lock: it may have been used meanwhile
        if user.email.lower() != invite.email:
            raise InviteUnusable(
                "wrong_account",
                f"This invite is for {invite.email}, but you are signed in as {user.email}. "
                "Sign out and open the link again.",
            )
        tenant = _locked_tenant(invite.tenant)
        if tenant.memberships.filter(user=user).exists():
            raise InviteUnusable("already_member", f"You are already a member of {tenant.name}.")
        full = _member_limit_reached(tenant, pending_invites=False)
        if full:
            raise InviteUnusable("plan_full", full)
        membership = Membership.objects.create(user=user, tenant=tenant, role=invite.role)
        invite.accepted_at = timezone.now()
        invite.accepted_by = user
        invite.save(update_fields=["accepted_at", "accepted_by"])
        record_audit(
            tenant=tenant,
            action="member.joined",
            target=user.email,
            actor=user,
            metadata={"role": invite.role},
        )
    return membership


def _other_owners(membership: Membership) -> int:
    return (
        Membership.objects.filter(tenant_id=membership.tenant_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .count()
    )


def _acting_role(tenant: Tenant, actor: User) -> str:
    acting = Membership.objects.filter(tenant=tenant, user=actor).first()
    if acting is None or not grants(
        membership_scopes(acting, tenant.plan_id), Scope.MEMBERS_MANAGE
    ):
        raise PermissionDenied("You may not manage this workspace's members.")
    return acting.role


def change_role(membership: Membership, role: str, *, actor: User) -> Membership:
    """Only an owner may make or unmake owners; the last owner stays an owner."""
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of {', '.join(Role.values)}."})
    with transaction.atomic():
        tenant = _locked_tenant(membership.tenant)
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        acting = _acting_role(tenant, actor)
        touches_owner = Role.OWNER in (role, membership.role)
        if touches_owner and acting != Role.OWNER:
            raise PermissionDenied("Only an owner may grant or take away the owner role.")
        if membership.role == role:
            return membership
        if membership.role == Role.OWNER and not _other_owners(membership):
            raise ValidationError("The last owner cannot stop being an owner.")
        previous, membership.role = membership.role, role
        membership.save(update_fields=["role"])
        record_audit(
            tenant=tenant,
            action="member.role_changed",
            target=membership.user.email,
            actor=actor,
            metadata={"from": previous, "to": role},
        )
    return membership


def remove_member(membership: Membership, *, actor: User) -> None:
    with transaction.atomic():
        tenant = _locked_tenant(membership.tenant)
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        acting = _acting_role(tenant, actor)
        if membership.role == Role.OWNER and acting != Role.OWNER:
            raise PermissionDenied("Only an owner may remove an owner.")
        if membership.role == Role.OWNER and not _other_owners(membership):
            raise ValidationError("The last owner cannot be removed.")
        membership.delete()
        record_audit(
            tenant=tenant,
            action="member.removed",
            target=membership.user.email,
            actor=actor,
            metadata={"role": membership.role},
        )


def leave_workspace(membership: Membership) -> None:
    with transaction.atomic():
        tenant = _locked_tenant(membership.tenant)
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        if membership.role == Role.OWNER and not _other_owners(membership):
            raise ValidationError(
                "You are the last owner: make someone else an owner, or delete the workspace."
            )
        membership.delete()
        record_audit(
            tenant=tenant,
            action="member.left",
            target=membership.user.email,
            actor=membership.user,
        )


# --- Operator actions (the Django admin) --------------------------------------------------------


def revoke_all_keys(tenant: Tenant, *, actor: User | None = None) -> int:
    """Revoke every key of the tenant still usable; returns how many were revoked."""
    with transaction.atomic():
        keys = [key for key in tenant.api_keys.select_for_update() if key.revoked_at is None]
        for key in keys:
            revoke_api_key(key, actor=actor)
        record_audit(
            tenant=tenant,
            action="tenant.keys_revoked",
            target=tenant.slug,
            actor=actor,
            metadata={"revoked": len(keys)},
        )
    return len(keys)
