"""Sign up, sign in, sign out and password reset, throttled per client IP and per account."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import login, password_validation
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django_ratelimit.core import is_ratelimited

from tenants import services
from tenants.models import User
from tenants.permissions import Access, declare

THROTTLED_MESSAGE = "Too many attempts. Wait a minute and try again."


def client_ip(request: HttpRequest) -> str:
    """The address throttled per IP (django-ratelimit's RATELIMIT_IP_META_KEY names this).

    Behind a proxy, ENGRAM_CLIENT_IP_META_KEY names the header it writes; its last address is
    the one the proxy saw (earlier X-Forwarded-For entries are whatever the client sent).
    Without a usable one, the connection's address: a missing or garbled header is neither an
    error nor a fresh budget.
    """
    header = settings.ENGRAM_CLIENT_IP_META_KEY
    candidates = [request.META.get(header, "").rsplit(",", 1)[-1]] if header else []
    candidates.append(request.META.get("REMOTE_ADDR", ""))
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate.strip()))
        except ValueError:
            continue
    return "0.0.0.0"  # no address at all: such clients share one budget


def _account_key(group: str, request: HttpRequest) -> str:
    typed = request.POST.get("email") or request.POST.get("username") or ""
    return typed.strip().lower()


def throttled(request: HttpRequest, group: str) -> bool:
    """Count this POST against the IP's and the account's budget; True when either is spent.

    Both counters are always incremented, so guessing many accounts from one address and one
    account from many addresses are both slowed down.
    """
    if request.method != "POST":
        return False
    by_ip = is_ratelimited(
        request,
        group=f"{group}:ip",
        key="ip",
        rate=settings.ENGRAM_ACCOUNT_RATE_PER_IP,
        method="POST",
        increment=True,
    )
    by_account = bool(_account_key(group, request)) and is_ratelimited(
        request,
        group=f"{group}:account",
        key=_account_key,
        rate=settings.ENGRAM_ACCOUNT_RATE_PER_ACCOUNT,
        method="POST",
        increment=True,
    )
    return by_ip or by_account


def throttled_admin_login(login: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The Django admin's sign-in, counted against the console sign-in's budgets (per address
    and per account): alternating between the two forms buys no extra attempts."""

    @functools.wraps(login)
    def view(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if throttled(request, "login"):
            return HttpResponse(THROTTLED_MESSAGE, status=429, content_type="text/plain")
        return login(request, extra_context)

    return view


def _safe_next(request: HttpRequest) -> str | None:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


class SignupForm(forms.Form):
    name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("email") and data.get("password"):
            try:
                password_validation.validate_password(
                    data["password"], User(email=data["email"], name=data.get("name", ""))
                )
            except ValidationError as error:
                self.add_error("password", error)
        return data


@declare(Access.PUBLIC)
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    status, throttled_message = 200, ""
    if request.method == "POST":
        if throttled(request, "signup"):
            form = SignupForm(initial={"email": _account_key("", request)})
            status, throttled_message = 429, THROTTLED_MESSAGE
        elif form.is_valid():
            try:
                user = services.sign_up(
                    email=form.cleaned_data["email"],
                    password=form.cleaned_data["password"],
                    name=form.cleaned_data["name"],
                )
            except ValidationError as error:
                form.add_error("email", error.message_dict.get("email", error.messages))
                status = 400
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                return redirect(_safe_next(request) or "console:home")
        else:
            status = 400
    context = {"form": form, "next": _safe_next(request) or "", "throttled": throttled_message}
    return render(request, "accounts/signup.html", context, status=status)


@declare(Access.PUBLIC)
class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if throttled(request, "login"):
            # An unbound form: a throttled attempt never reaches the password check.
            form = self.get_form_class()(request, initial={"username": _account_key("", request)})
            context = self.get_context_data(form=form, throttled=THROTTLED_MESSAGE)
            return self.render_to_response(context, status=429)
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:
            response.status_code = 400  # the form is shown again with its errors
        return response


@declare(Access.PUBLIC)
class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset_form.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if throttled(request, "password_reset"):
            form = self.get_form_class()(initial={"email": _account_key("", request)})
            context = self.get_context_data(form=form, throttled=THROTTLED_MESSAGE)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)


@declare(Access.TOKEN_LINK)
class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")


@declare(Access.PUBLIC)
class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("landing")


@declare(Access.PUBLIC)
class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


@declare(Access.PUBLIC)
class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"
