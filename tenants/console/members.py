"""Members and invites: invite by email with a role, resend, revoke, accept; change role,
remove, leave."""

from __future__ import annotations

import logging

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from tenants import services
from tenants.console.access import Workspace, error_text, render_page, workspace_view
from tenants.models import Invite, InviteState, Membership, Role
from tenants.permissions import Access, Scope, declare

logger = logging.getLogger(__name__)

INVITE_SESSION_KEY = "console_invite_token"


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(
        choices=[(role, Role(role).label) for role in services.INVITABLE_ROLES],
        initial=Role.MEMBER,
    )


def _send_invite(request: HttpRequest, invite: Invite, token: str) -> bool:
    """Mail the link; False (logged, never the link) when the mail server refuses it."""
    link = request.build_absolute_uri(reverse("console:invite_open", args=[token]))
    context = {"invite": invite, "link": link, "days": services.INVITE_LIFETIME.days}
    try:
        send_mail(
            subject=f"You are invited to {invite.tenant.name} on Engram Cloud",
            message=render_to_string("console/email/invite.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[invite.email],
        )
    except Exception:
        logger.exception("invite mail for invite %s not sent", invite.pk)
        return False
    return True


def _report_sent(request: HttpRequest, invite: Invite, sent: bool, what: str) -> None:
    if sent:
        messages.success(request, f"{what} to {invite.email}.")
    else:
        messages.warning(
            request, f"The invite for {invite.email} is saved but the mail was not sent: resend it."
        )


def _members_page(
    request: HttpRequest, workspace: Workspace, form: InviteForm | None = None, status: int = 200
) -> HttpResponse:
    tenant = workspace.tenant
    invites = [
        invite
        for invite in tenant.invites.select_related("invited_by")
        if invite.state() in (InviteState.PENDING, InviteState.EXPIRED)
    ]
    context = {
        "members": tenant.memberships.select_related("user").order_by("created_at"),
        "invites": invites if workspace.can(Scope.MEMBERS_MANAGE) else [],
        "form": form or InviteForm(),
        "roles": Role.choices,
        "member_limit": tenant.plan.max_members,
    }
    return render_page(request, workspace, "console/members.html", context, status=status)


@workspace_view()
def members(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    return _members_page(request, workspace)


@require_POST
@workspace_view(Scope.MEMBERS_MANAGE)
def invite(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invite, token = services.invite_member(
                workspace.tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                invited_by=request.user,
            )
        except ValidationError as error:
            form.add_error(None, error_text(error))
        else:
            _report_sent(request, invite, _send_invite(request, invite, token), "Invite sent")
            return redirect("console:members", slug=workspace.tenant.slug)
    return _members_page(request, workspace, form, status=400)


def _invite_of(workspace: Workspace, invite_id: int) -> Invite:
    return get_object_or_404(Invite, pk=invite_id, tenant=workspace.tenant)


@require_POST
@workspace_view(Scope.MEMBERS_MANAGE)
def invite_resend(request: HttpRequest, workspace: Workspace, invite_id: int) -> HttpResponse:
    try:
        invite, token = services.resend_invite(_invite_of(workspace, invite_id), actor=request.user)
    except ValidationError as error:
        messages.error(request, error_text(error))
    else:
        sent = _send_invite(request, invite, token)
        _report_sent(request, invite, sent, "Invite sent again")
    return redirect("console:members", slug=workspace.tenant.slug)


@require_POST
@workspace_view(Scope.MEMBERS_MANAGE)
def invite_revoke(request: HttpRequest, workspace: Workspace, invite_id: int) -> HttpResponse:
    try:
        invite = services.revoke_invite(_invite_of(workspace, invite_id), actor=request.user)
    except ValidationError as error:
        messages.error(request, error_text(error))
    else:
        messages.success(request, f"Invite to {invite.email} revoked.")
    return redirect("console:members", slug=workspace.tenant.slug)


def _membership_of(workspace: Workspace, membership_id: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "tenant"),
        pk=membership_id,
        tenant=workspace.tenant,
    )


@require_POST
@workspace_view(Scope.MEMBERS_MANAGE)
def change_role(request: HttpRequest, workspace: Workspace, membership_id: int) -> HttpResponse:
    membership = _membership_of(workspace, membership_id)
    try:
        services.change_role(membership, request.POST.get("role", ""), actor=request.user)
    except ValidationError as error:
        messages.error(request, error_text(error))
    else:
        messages.success(request, f"{membership.user.email} is now {request.POST['role']}.")
    return redirect("console:members", slug=workspace.tenant.slug)


@require_POST
@workspace_view(Scope.MEMBERS_MANAGE)
def remove(request: HttpRequest, workspace: Workspace, membership_id: int) -> HttpResponse:
    membership = _membership_of(workspace, membership_id)
    try:
        services.remove_member(membership, actor=request.user)
    except ValidationError as error:
        messages.error(request, error_text(error))
    else:
        messages.success(request, f"{membership.user.email} was removed.")
    return redirect("console:members", slug=workspace.tenant.slug)


@require_POST
@workspace_view()
def leave(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    try:
        services.leave_workspace(workspace.membership)
    except ValidationError as error:
        messages.error(request, error_text(error))
        return redirect("console:members", slug=workspace.tenant.slug)
    messages.success(request, f"You left {workspace.tenant.name}.")
    return redirect("console:home")


# --- Accepting: the link → (sign up or sign in) → accept ------------------------------------------


def _unusable_page(request: HttpRequest, error: services.InviteUnusable) -> HttpResponse:
    status = 404 if error.reason == "unknown" else 410
    if error.reason in ("wrong_account", "already_member", "plan_full"):
        status = 409
    return render_page(
        request, None, "console/invite_invalid.html", {"error": error}, status=status
    )


@declare(Access.TOKEN_LINK)
def invite_open(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link. The token moves into the session and the browser to a URL without
    it, so it does not linger in history or leak through the Referer header."""
    try:
        services.find_invite(token)
    except services.InviteUnusable as error:
        return _unusable_page(request, error)
    request.session[INVITE_SESSION_KEY] = token
    return redirect("console:invite_accept")


@declare(Access.TOKEN_LINK)
def invite_accept(request: HttpRequest) -> HttpResponse:
    token = request.session.get(INVITE_SESSION_KEY, "")
    try:
        invite = services.find_invite(token)
    except services.InviteUnusable as error:
        return _unusable_page(request, error)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{reverse('accounts:login')}?next={request.path}")
        try:
            membership = services.accept_invite(token, user=request.user)
        except services.InviteUnusable as error:
            return _unusable_page(request, error)
        request.session.pop(INVITE_SESSION_KEY, None)
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect("console:memories", slug=membership.tenant.slug)
    wrong_account = request.user.is_authenticated and request.user.email.lower() != invite.email
    context = {"invite": invite, "wrong_account": wrong_account, "next": request.path}
    return render_page(
        request, None, "console/invite.html", context, status=409 if wrong_account else 200
    )
