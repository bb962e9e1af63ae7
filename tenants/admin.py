"""Staff views of the control plane (the operator dashboard). Keys show only their prefix and
state, never a secret. Every action calls a service that writes an audit event naming the
staff user."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.timesince import timesince

from backups import tasks as backup_tasks
from backups.models import BackupReason, BackupRecord, BackupStatus
from backups.services import RESTORE_REFUSALS, backup_overdue, restore_tenant
from billing import services as billing_services
from billing.models import DailyUsage, Plan
from memories.tenant_db import tenant_file_stats
from tenants import services
from tenants.console.accounts import throttled_admin_login
from tenants.models import ApiKey, AuditEvent, Invite, Membership, Tenant, User

# Staff sign in at /admin/login/: throttled as the console's sign-in is.
admin.site.login = throttled_admin_login(admin.site.login)  # type: ignore[method-assign]


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


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record staff read and never edit here: its rows come from services (audited) or
    schedules, so adding, changing or deleting one in the admin would bypass them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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


def _month_start() -> dt.date:
    return timezone.now().date().replace(day=1)


class BackupStateFilter(admin.SimpleListFilter):
    title = "backup"
    parameter_name = "backup"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("overdue", "overdue"), ("never", "never backed up")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> QuerySet[Tenant]:
        if self.value() == "never":
            return queryset.filter(last_backup__isnull=True)
        if self.value() == "overdue":
            now = timezone.now()
            overdue = [t.pk for t in queryset if backup_overdue(t, t.last_backup, now)]
            return queryset.filter(pk__in=overdue)
        return queryset


class ChangePlanForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.order_by("sort_order"))


class RestoreForm(forms.Form):
    backup = forms.ModelChoiceField(queryset=BackupRecord.objects.none(), required=False)
    at = forms.DateTimeField(
        required=False,
        label="or a point in time (UTC)",
        help_text="e.g. 2026-12-04 05:30:00; the tenant's memories exactly as they were then.",
    )

    def __init__(self, tenant: Tenant, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["backup"].queryset = BackupRecord.objects.filter(
            tenant=tenant, status=BackupStatus.COMPLETE
        ).order_by("-taken_at")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (data.get("backup") is None) == (data.get("at") is None):
            raise forms.ValidationError("Choose a backup or a point in time (one of the two).")
        return data


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    """The operator dashboard: every tenant with its plan, use and backups, and what staff do."""

    list_display = [
        "slug",
        "name",
        "plan",
        "status",
        "members",
        "memories",
        "storage",
        "api_calls_this_month",
        "last_backup",
        "backup_age",
    ]
    list_filter = ["status", "plan", BackupStateFilter]
    search_fields = ["slug", "name", "id", "memberships__user__email"]
    # The plan follows the Stripe subscription (billing.services.change_plan); staff change it
    # with the "change plan" action, or pin one with the tenant's billing row's plan override.
    readonly_fields = ["id", "status", "plan", "created_at"]
    inlines = [MembershipInline, ApiKeyInline]
    actions = ["suspend", "reactivate", "change_plan", "back_up_now", "restore", "revoke_all_keys"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        usage = (
            DailyUsage.objects.filter(tenant=OuterRef("pk"), day__gte=_month_start())
            .values("tenant")
            .annotate(total=Sum("api_calls"))
            .values("total")
        )
        return (
            super()
            .get_queryset(request)
            .select_related("plan")
            .annotate(
                member_count=Count("memberships", distinct=True),
                last_backup=Max(
                    "backups__taken_at", filter=Q(backups__status=BackupStatus.COMPLETE)
                ),
                api_calls=Subquery(usage),
            )
        )

    def _file_stats(self, tenant: Tenant) -> tuple[int | None, int]:
        if not hasattr(tenant, "_file_stats"):
            tenant._file_stats = tenant_file_stats(tenant.id)  # type: ignore[attr-defined]
        return tenant._file_stats  # type: ignore[attr-defined]

    @admin.display(description="members", ordering="member_count")
    def members(self, tenant: Tenant) -> int:
        return tenant.member_count  # type: ignore[attr-defined]

    @admin.display(description="memories")
    def memories(self, tenant: Tenant) -> str:
        count, _ = self._file_stats(tenant)
        return "—" if count is None else f"{count:,}"

    @admin.display(description="storage")
    def storage(self, tenant: Tenant) -> str:
        return filesizeformat(self._file_stats(tenant)[1])

    @admin.display(description="API calls this month", ordering="api_calls")
    def api_calls_this_month(self, tenant: Tenant) -> str:
        return f"{tenant.api_calls or 0:,}"  # type: ignore[attr-defined]

    @admin.display(description="last backup", ordering="last_backup")
    def last_backup(self, tenant: Tenant) -> str:
        taken = tenant.last_backup  # type: ignore[attr-defined]
        return taken.strftime("%Y-%m-%d %H:%M UTC") if taken else "never"

    @admin.display(description="backup age")
    def backup_age(self, tenant: Tenant) -> str:
        taken = tenant.last_backup  # type: ignore[attr-defined]
        if taken is None:
            return "—"
        late = " (overdue)" if backup_overdue(tenant, taken, timezone.now()) else ""
        return f"{timesince(taken)}{late}"

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

    @admin.action(description="Change the plan of selected tenants")
    def change_plan(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> TemplateResponse | None:
        form = ChangePlanForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            plan = form.cleaned_data["plan"]
            for tenant in queryset:
                billing_services.change_plan(tenant, plan.code, reason="staff", actor=request.user)
            self.message_user(
                request, f"Moved {queryset.count()} tenant(s) to {plan.name}.", messages.SUCCESS
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Change plan",
            "form": form,
            "tenants": queryset,
            "action": "change_plan",
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/tenants/change_plan.html", context)

    @admin.action(description="Back up selected tenants now")
    def back_up_now(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        requested_at = timezone.now().isoformat()
        for tenant in queryset:
            services.record_audit(
                tenant=tenant, action="backup.requested", target=tenant.slug, actor=request.user
            )
            backup_tasks.back_up_tenant.delay(str(tenant.id), requested_at, BackupReason.MANUAL)
        self.message_user(
            request, f"Backup requested for {queryset.count()} tenant(s).", messages.SUCCESS
        )

    @admin.action(description="Restore the selected tenant (to a backup or a time)")
    def restore(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponseRedirect:
        if queryset.count() != 1:
            self.message_user(request, "Restore one tenant at a time.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return HttpResponseRedirect(
            reverse("admin:tenants_tenant_restore", args=[queryset.get().pk])
        )

    @admin.action(description="Revoke every API key of selected tenants")
    def revoke_all_keys(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        revoked = sum(services.revoke_all_keys(tenant, actor=request.user) for tenant in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)

    def get_urls(self) -> list:
        restore = path(
            "<path:object_id>/restore/",
            self.admin_site.admin_view(self.restore_view),
            name="tenants_tenant_restore",
        )
        return [restore, *super().get_urls()]

    def restore_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        tenant = self.get_object(request, object_id)
        if tenant is None or not self.has_change_permission(request, tenant):
            raise Http404("No such tenant.")
        form = RestoreForm(tenant, request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = restore_tenant(
                    tenant,
                    backup=form.cleaned_data["backup"],
                    at=form.cleaned_data["at"],
                    actor=request.user,
                )
            except RESTORE_REFUSALS as error:
                self.message_user(request, f"Nothing was restored: {error}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Restored {tenant.slug} from backup {result.backup.pk}"
                    + (f" to {result.at:%Y-%m-%d %H:%M:%S} UTC" if result.at else "")
                    + f"; the replaced database is backup {result.previous.pk}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:tenants_tenant_change", args=[tenant.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Restore {tenant.slug}",
            "tenant": tenant,
            "form": form,
            "opts": self.model._meta,
            "original": tenant,
        }
        return TemplateResponse(request, "admin/tenants/restore.html", context)


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
class AuditEventAdmin(ReadOnlyAdmin):
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


@admin.register(Invite)
class InviteAdmin(ReadOnlyAdmin):
    """Read-only: invites are made and ended in the console (tenants.services)."""

    list_display = ["email", "tenant", "role", "invited_by", "created_at", "expires_at", "state"]
    list_filter = ["role"]
    search_fields = ["email", "tenant__slug"]
    exclude = ["token_digest"]
