"""The console's URLs: `/console/…`, workspace pages under `/console/w/<slug>/…`."""

from __future__ import annotations

from django.urls import path

from billing import console as billing
from tenants.console import audit, keys, members, memories, usage, workspaces

app_name = "console"

urlpatterns = [
    path("", workspaces.home, name="home"),
    path("workspaces/new", workspaces.create, name="workspace_create"),
    path("invites/accept", members.invite_accept, name="invite_accept"),
    path("invites/<str:token>", members.invite_open, name="invite_open"),
    path("w/<slug:slug>/", usage.usage, name="usage"),
    path("w/<slug:slug>/settings", workspaces.settings_page, name="settings"),
    path("w/<slug:slug>/settings/rename", workspaces.rename, name="workspace_rename"),
    path("w/<slug:slug>/settings/delete", workspaces.delete, name="workspace_delete"),
    path("w/<slug:slug>/members", members.members, name="members"),
    path("w/<slug:slug>/members/invite", members.invite, name="member_invite"),
    path("w/<slug:slug>/members/leave", members.leave, name="member_leave"),
    path("w/<slug:slug>/members/<int:membership_id>/role", members.change_role, name="member_role"),
    path("w/<slug:slug>/members/<int:membership_id>/remove", members.remove, name="member_remove"),
    path(
        "w/<slug:slug>/invites/<int:invite_id>/resend",
        members.invite_resend,
        name="invite_resend",
    ),
    path(
        "w/<slug:slug>/invites/<int:invite_id>/revoke",
        members.invite_revoke,
        name="invite_revoke",
    ),
    path("w/<slug:slug>/keys", keys.keys, name="keys"),
    path("w/<slug:slug>/keys/create", keys.create, name="key_create"),
    path("w/<slug:slug>/keys/<int:key_id>/revoke", keys.revoke, name="key_revoke"),
    path("w/<slug:slug>/keys/<int:key_id>/rotate", keys.rotate, name="key_rotate"),
    path("w/<slug:slug>/memories", memories.memories, name="memories"),
    path("w/<slug:slug>/memories/<int:memory_id>", memories.memory_detail, name="memory"),
    path(
        "w/<slug:slug>/memories/<int:memory_id>/delete",
        memories.memory_delete,
        name="memory_delete",
    ),
    path("w/<slug:slug>/audit", audit.audit, name="audit"),
    path("w/<slug:slug>/billing", billing.billing, name="billing"),
    path("w/<slug:slug>/billing/checkout", billing.checkout, name="billing_checkout"),
    path("w/<slug:slug>/billing/portal", billing.portal, name="billing_portal"),
    path("w/<slug:slug>/billing/success", billing.success, name="billing_success"),
    path("w/<slug:slug>/billing/cancel", billing.cancel, name="billing_cancel"),
]
