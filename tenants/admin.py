"""Staff views of the control plane. Keys show only their prefix and state, never a secret."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants import services
from tenants.models import ApiKey, AuditEvent, Invite, Membership, Tenant, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ["prefix", "name", "scopes", "state", "created_at", "last_used_at", "expires_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="state")
    def state(self, key: ApiKey) -> str:
        return key.state()


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "status", "plan", "created_at"]
    list_filter = ["status", "plan"]
    search_fields = ["slug", "name", "id"]
    # The plan follows the Stripe subscription (billing.services.change_plan); staff pin one
    # with the tenant's billing row's plan override.
    readonly_fields = ["id", "status", "plan", "created_at"]
    inlines = [MembershipInline, ApiKeyInline]
    actions = ["suspend", "reactivate"]

    @admin.action(description="Suspend selected tenants")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.suspend_tenant(tenant, actor=request.user)
        self.message_user(request, f"Suspended {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Reactivate selected tenants")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.reactivate_tenant(tenant, actor=request.user)
        self.message_user(request, f"Reactivated {queryset.count()} tenant(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "tenant", "state", "created_by", "created_at", "last_used_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "tenant__slug"]
    fields = [
        "tenant",
        "name",
        "prefix",
        "scopes",
        "state",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "rotated_from",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Keys are issued through the console or create_tenant, where the secret is shown once.
        return False

    @admin.display(description="state")
    def state(self, key: ApiKey) -> str:
        return key.state()

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.revoke_api_key(key, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "target", "tenant", "actor_label"]
    list_filter = ["action"]
    search_fields = ["action", "target", "tenant__slug", "actor_label"]
    readonly_fields = [
        "tenant",
        "actor",
        "actor_label",
        "action",
        "target",
        "metadata",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    """Read-only: invites are made and ended in the console (tenants.services)."""

    list_display = ["email", "tenant", "role", "invited_by", "created_at", "expires_at", "state"]
    list_filter = ["role"]
    search_fields = ["email", "tenant__slug"]
    exclude = ["token_digest"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
