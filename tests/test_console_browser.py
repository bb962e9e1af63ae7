"""The console in a real browser (Playwright driving Debian's chromium, headless) against a live
server: one flow through sign up, workspace, key, an API call, usage, invite and accept, and a
viewer's limits. A screenshot of each page lands in test-artifacts/console/.

Fails when chromium is missing, unless ENGRAM_SKIP_BROWSER_TESTS=1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.db import connections
from django.utils import timezone

from billing.usage import flush_usage
from tenants.models import ApiKey, Membership, Role, Tenant

CHROMIUM = Path(os.environ.get("ENGRAM_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 15_000


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if os.environ.get("ENGRAM_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("ENGRAM_SKIP_BROWSER_TESTS=1")
    if not CHROMIUM.exists():
        pytest.fail(f"The browser tests need chromium at {CHROMIUM} (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
            # The test's ORM calls ran under Playwright's loop, on connections of their own
            # context: closed here, or PostgreSQL refuses to drop the test database.
            connections.close_all()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api_post(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def sign_up(page: Any, email: str) -> None:
    page.fill("input[name=name]", email.split("@")[0].title())
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")


def test_sign_up_to_shared_memories_in_a_browser(browser: Any, live_server: Any) -> None:
    base = live_server.url

    # The owner: landing page → sign up → workspace → key.
    owner = browser.new_context(base_url=base)
    owner.set_default_timeout(TIMEOUT_MS)
    page = owner.new_page()
    page.goto("/")
    assert page.locator("table.plans thead th", has_text="Team").count() == 1
    shot(page, "landing")
    page.click(".hero a.button")
    shot(page, "signup")
    sign_up(page, "olga@example.com")
    page.wait_for_url(f"{base}/console/")
    shot(page, "workspaces")
    page.fill("#create-workspace input[name=name]", "Web Team")
    page.fill("#create-workspace input[name=slug]", "web-team")
    page.click("#create-workspace button[type=submit]")
    page.wait_for_url(f"{base}/console/w/web-team/keys")
    # Billing is another part of the product: the plan is switched here as it would switch it.
    Tenant.objects.filter(slug="web-team").update(plan_id="team")

    page.fill("#key-form input[name=name]", "my agent")
    page.click("#key-form button[type=submit]")
    secret = page.locator("#secret").inner_text()
    assert re.fullmatch(r"ek_live_\w{32,}", secret)
    assert secret in page.locator("#curl").inner_text()
    assert secret in page.locator("#mcp-config").inner_text()
    shot(page, "key-created")
    page.goto("/console/w/web-team/keys")
    assert secret not in page.content()  # shown exactly once
    shot(page, "keys")

    # The agent calls the API with that key, over HTTP.
    status, memory = api_post(
        f"{base}/v1/memories", secret, {"content": "The staging database is rebuilt nightly"}
    )
    assert status == 201
    flush_usage()

    page.goto("/console/w/web-team/")
    assert page.locator('[data-metric="api-calls-this-month"]').inner_text() == "1"
    assert page.locator('[data-metric="memories-stored"]').inner_text() == "1"
    page.wait_for_selector('#usage-chart rect.calls[data-api-calls="1"]')
    assert page.locator("#usage-chart").get_attribute("data-total-calls") == "1"
    shot(page, "usage")

    # Invite a colleague as a viewer.
    mail.outbox.clear()
    page.goto("/console/w/web-team/members")
    page.fill("#invite-form input[name=email]", "vera@example.com")
    page.select_option("#invite-form select[name=role]", "viewer")
    page.click("#invite-form button[type=submit]")
    page.wait_for_selector("text=Invite sent to vera@example.com")
    shot(page, "members")
    link = re.search(r"https?://\S+/console/invites/\S+", mail.outbox[-1].body).group(0)

    # The colleague, in a browser of their own: link → sign up → accept → the same memories.
    colleague = browser.new_context(base_url=base)
    colleague.set_default_timeout(TIMEOUT_MS)
    other = colleague.new_page()
    other.goto(link)
    other.wait_for_url(f"{base}/console/invites/accept")
    assert "as viewer" in other.content().replace("<strong>", "").replace("</strong>", "")
    shot(other, "invite")
    other.get_by_role("link", name="Create an account").click()
    other.wait_for_url(re.compile(r".*/accounts/signup/.*"))
    sign_up(other, "vera@example.com")
    other.wait_for_url(f"{base}/console/invites/accept")
    other.click("#accept-invite")
    other.wait_for_url(f"{base}/console/w/web-team/memories")
    assert other.locator("#memories", has_text="staging database is rebuilt nightly").count() == 1
    shot(other, "memories")
    other.click(f"#memories a[href$='/memories/{memory['id']}'] >> nth=0")
    other.wait_for_selector("pre.content")
    assert "Delete memory" not in other.content()
    shot(other, "memory")
    other.goto("/console/w/web-team/memories?q=staging")
    assert other.locator("#memories", has_text="rebuilt nightly").count() == 1
    assert Membership.objects.get(user__email="vera@example.com").role == Role.VIEWER

    # The viewer sees no key form, and a POST of it anyway is refused.
    other.goto("/console/w/web-team/keys")
    assert other.locator("#key-form").count() == 0
    shot(other, "keys-as-viewer")
    csrf = next(c["value"] for c in colleague.cookies() if c["name"] == "csrftoken")
    refused = other.request.post(
        "/console/w/web-team/keys/create",
        form={"name": "sneaky", "scopes": "memories:read", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{base}/console/w/web-team/keys"},
    )
    assert refused.status == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()
    other.goto(link)  # a used link: a clear page
    assert "already been used" in other.content()
    shot(other, "invite-used")

    # The owner's remaining pages.
    for name, path in [
        ("audit", "/console/w/web-team/audit"),
        ("settings", "/console/w/web-team/settings"),
    ]:
        page.goto(path)
        shot(page, name)
    assert page.locator("#confirm_slug").count() == 1
    page.goto("/console/w/web-team/audit")
    assert page.locator("#audit", has_text="member.joined").count() == 1

    anonymous = browser.new_context(base_url=base).new_page()
    for name, path in [
        ("login", "/accounts/login/"),
        ("password-reset", "/accounts/password-reset/"),
    ]:
        anonymous.goto(path)
        shot(anonymous, name)


def test_an_owner_restores_a_backup_and_a_time_in_a_browser(
    browser: Any, live_server: Any, s3_storage: Any, tasks_inline: None
) -> None:
    from backups.services import back_up_tenant
    from memories import services as memory_services
    from memories.models import Memory
    from memories.tenant_db import bind_tenant_database
    from tenants import services

    owner = services.get_or_create_user("rita@example.com")
    owner.set_password(PASSWORD)
    owner.save()
    tenant = services.provision_tenant(slug="rita-lab", owner=owner)

    def remember(content: str) -> None:
        with bind_tenant_database(tenant.id):
            memory_services.create_memory(content=content)

    def contents() -> list[str]:
        with bind_tenant_database(tenant.id):
            return sorted(Memory.objects.values_list("content", flat=True))

    remember("first")
    backup = back_up_tenant(tenant)
    remember("second")

    page = browser.new_context(base_url=live_server.url).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto("/accounts/login/?next=/console/w/rita-lab/backups")
    page.fill("input[name=username]", "rita@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{live_server.url}/console/w/rita-lab/backups")
    shot(page, "backups")
    assert page.locator("#backups tbody tr").count() == 1

    page.click(f"#backups form:has(input[value='{backup.pk}']) button")
    page.wait_for_url(f"{live_server.url}/console/w/rita-lab/backups")
    assert page.locator("#restore-progress", has_text="restored").count() == 1
    assert contents() == ["first"]
    shot(page, "backups-restored")

    remember("third")
    # The field takes whole seconds (UTC): the next second after "third", then "fourth" later.
    moment = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=1)
    time.sleep((moment - timezone.now()).total_seconds() + 1.05)
    remember("fourth")
    page.fill("#at", moment.strftime("%Y-%m-%dT%H:%M:%S"))
    page.click("#restore-at button[type=submit]")
    page.wait_for_url(f"{live_server.url}/console/w/rita-lab/backups")
    assert page.locator("#restore-progress td", has_text="restored").count() == 2
    assert contents() == ["first", "third"]
    shot(page, "backups-restored-to-a-time")


def test_a_missing_chromium_fails_the_browser_test_rather_than_skipping_it(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    # The embedded default: this run is about chromium, and must not share this run's databases.
    dropped = {"ENGRAM_SKIP_BROWSER_TESTS", "DATABASE_URL", "REDIS_URL"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env["ENGRAM_CHROMIUM"] = str(tmp_path / "no-chromium-here")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_console_browser.py::test_sign_up_to_shared_memories_in_a_browser",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0, result.stdout[-2000:]
    assert "need chromium" in result.stdout
    assert "skipped" not in result.stdout.splitlines()[-1]
