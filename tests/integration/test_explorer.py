"""The auditors' explorer at /explorer, driven in a real headless Chromium (Debian's `chromium`, through
Playwright) against a real `chronicle api` process. Screenshots of every page go to
tests/artifacts/explorer/ (git-ignored)."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from commands.base import Context
from domain.identity import Role
from infra.settings import Settings
from tests.integration.commerce import product, wait_order
from tests.integration.http import Api, User
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("pipeline")

ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "explorer"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def _granted(api: Api, chronicle_app: Any, name: str, *roles: Role) -> User:
    user = api.register(name)
    for role in roles:
        chronicle_app.identity.grant(Context("tests.grant", system_actor="tests"), user.id, role)
    return api.relogin(user)


@pytest.fixture(scope="module")
def auditor(api: Api, chronicle_app: Any) -> User:
    return _granted(api, chronicle_app, "Ada Auditor", Role.AUDITOR)


@pytest.fixture(scope="module")
def staff(api: Api, chronicle_app: Any) -> User:
    return _granted(api, chronicle_app, "Stan Staff", Role.ADMIN)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
    browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def auditor_session(browser: Browser, api: Api, auditor: User) -> Any:
    """The cookies of one sign-in as the auditor, for the tests that are not about signing in."""
    context = browser.new_context(base_url=api.base)
    try:
        sign_in(context.new_page(), auditor)
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def context(browser: Browser, api: Api) -> Iterator[BrowserContext]:
    """A browser with no session."""
    context = browser.new_context(base_url=api.base, viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def guest(context: BrowserContext) -> Page:
    """A page with no session."""
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


@pytest.fixture
def page(browser: Browser, api: Api, auditor_session: Any) -> Iterator[Page]:
    """A browser signed in as the auditor."""
    context = browser.new_context(
        base_url=api.base, viewport={"width": 1280, "height": 900}, storage_state=auditor_session
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, user: User, then: str = "/explorer/log") -> None:
    page.goto(then)
    expect(page).to_have_url(re.compile(r"/explorer/login\?next="))
    page.fill("#email", user.email)
    page.fill("#password", user.password)
    page.click("button:has-text('Sign in')")


def shown_state(page: Page) -> dict[str, Any]:
    rows = page.locator("table.state tbody tr:not([data-removed])")
    return {
        rows.nth(i).get_attribute("data-field") or "": json.loads(rows.nth(i).locator("td.value code").inner_text())
        for i in range(rows.count())
    }


@pytest.fixture(scope="module")
def task_history(api: Api, staff: User) -> dict[str, Any]:
    """A task with a history: created with an XSS title, assigned, edited twice, started."""
    project = api.project(staff, "Explorer")
    task = api.task(staff, project, title=XSS, assignee_id=str(staff.id))
    for title in ("Second title", "Third title"):
        assert api.post(f"/v1/tasks/{task}/edit", {"title": title}, staff).status_code == 200
    assert api.post(f"/v1/tasks/{task}/start", user=staff).status_code == 200
    return {"project": project, "task": task}


def test_an_auditor_signs_in_and_filters_the_log(
    guest: Page, context: BrowserContext, api: Api, auditor: User, staff: User, task_history: dict[str, Any]
) -> None:
    sign_in(guest, auditor)
    expect(guest).to_have_url(re.compile(r"/explorer/log$"))  # "next": where the sign-in was asked for
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["chronicle_explorer"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/explorer"
    assert not session["secure"], "plain HTTP here; Secure is set only over TLS"
    assert cookies["chronicle_explorer_csrf"]["httpOnly"] and cookies["chronicle_explorer_csrf"]["sameSite"] == "Strict"

    guest.fill("#f-type", "Task.Edited")
    guest.fill("#f-actor", str(staff.id))
    guest.click("button:has-text('Filter')")
    expect(guest).to_have_url(re.compile(r"type=Task.Edited"))
    events = guest.locator("details.event")
    expect(events).to_have_count(2)
    assert set(events.locator(".type").all_inner_texts()) == {"Task.Edited"}
    events.first.locator("summary").click()
    body = events.first.locator(".body")
    expect(body).to_contain_text('"title": "Second title"')
    for label in ("Actor", "Command", "Correlation", "Causation", "Position", "Hash"):
        expect(body.locator("dt", has_text=label)).to_have_count(1)
    expect(body.locator("dd.hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    shot(guest, "log")

    guest.fill("#f-type", "")
    guest.fill("#f-actor", "")
    guest.fill("#f-stream", task_history["task"].hex)
    guest.click("button:has-text('Filter')")
    assert guest.locator("details.event .type").all_inner_texts() == [
        "Task.Created",
        "Task.Assigned",
        "Task.Edited",
        "Task.Edited",
        "Task.Started",
    ]
    guest.goto(f"/explorer/log?stream={task_history['task']}&limit=2")
    guest.click("[data-testid=next]")
    assert guest.locator("details.event .type").all_inner_texts() == ["Task.Edited", "Task.Edited"]

    guest.goto("/explorer/log?from=yesterday")
    expect(guest.locator("[data-testid=error]")).to_contain_text("from: not a date")

    guest.click("button:has-text('Sign out')")
    expect(guest).to_have_url(re.compile(r"/explorer/login$"))
    guest.goto("/explorer/log")
    expect(guest).to_have_url(re.compile(r"/explorer/login\?next="))


def test_moving_through_a_stream_shows_the_state_the_api_replays(
    page: Page, api: Api, auditor: User, task_history: dict[str, Any]
) -> None:
    task = task_history["task"]

    def api_state(version: int) -> dict[str, Any]:
        r = api.get(f"/v1/audit/streams/{task}/state?version={version}", auditor)
        assert r.status_code == 200, r.text
        return dict(r.json()["state"])

    page.goto(f"/explorer/streams/{task}")
    expect(page.locator("[data-testid=version]")).to_have_text("5")
    assert shown_state(page) == api_state(5)
    expect(page.locator("tr.changed[data-field=status]")).to_have_count(1)
    shot(page, "stream")

    page.focus("#version")
    page.keyboard.press("ArrowLeft")  # the slider, from the keyboard: goes to version 4 when it changes
    expect(page).to_have_url(re.compile(r"version=4"))
    assert shown_state(page) == api_state(4)
    changed = page.locator("tr.changed")
    expect(changed).to_have_count(1)
    expect(changed).to_have_attribute("data-field", "title")
    expect(changed.locator("td.was")).to_have_text('"Second title"')

    page.click("[data-testid=previous]")
    page.click("[data-testid=previous]")
    expect(page.locator("[data-testid=version]")).to_have_text("2")
    assert shown_state(page) == api_state(2)

    page.keyboard.press("]")
    expect(page.locator("[data-testid=version]")).to_have_text("3")
    assert shown_state(page) == api_state(3)

    first = api.get(f"/v1/audit/streams/{task}?limit=1", auditor).json()["items"][0]
    created = datetime.fromisoformat(first["recorded_at"].replace("Z", "+00:00"))
    at = (created + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")  # the picker's resolution: a second
    page.fill("#at", at)
    page.click(".times button")
    version = int(page.locator("[data-testid=version]").inner_text())
    by_time = api.get(f"/v1/audit/streams/{task}/state?at={at}Z", auditor).json()
    assert version == by_time["version"] and shown_state(page) == by_time["state"]


def test_an_xss_title_is_shown_as_text(page: Page, task_history: dict[str, Any]) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"/explorer/streams/{task_history['task']}?version=1")
    title = page.locator("tr[data-field=title] td.value code")
    expect(title).to_have_text(json.dumps(XSS))
    page.locator("details.event.selected summary").click()
    expect(page.locator("details.event.selected pre.data")).to_contain_text(XSS)
    assert page.locator("main script, main img").count() == 0
    assert dialogs == []
    shot(page, "stream-xss")


def test_an_orders_correlation_is_drawn_as_a_causation_tree(page: Page, api: Api, staff: User) -> None:
    sku, _ = product(api, staff, stock=5)
    r = api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 2}]}, staff)
    assert r.status_code == 201, r.text
    order, correlation = r.json()["id"], r.headers["X-Correlation-Id"]
    wait_order(api, staff, order, {"reserved"})
    page.goto(f"/explorer/correlations/{correlation}")
    tree = page.locator("[data-testid=tree]")
    command = tree.locator(":scope > li").first
    expect(command.locator(".node.request")).to_contain_text("orders.place")
    placed = command.locator(":scope > ul > li").first
    expect(placed.locator(":scope > .node a")).to_have_text("Order.Placed")
    reactions = placed.locator(":scope > ul > li > .node.saga a").all_inner_texts()
    assert "Order.Reserved" in reactions and any(t.startswith("Stock.") for t in reactions), reactions
    shot(page, "correlation")
    placed.locator(":scope > .node a").click()
    expect(page).to_have_url(re.compile(rf"/explorer/streams/{order}\?version=1"))
    expect(page.locator("details.event.selected")).to_have_attribute("open", "")


def test_verify_runs_from_the_integrity_page(page: Page) -> None:
    page.goto("/explorer/integrity")
    page.click("[data-testid=run]")
    result = page.locator("[data-testid=result]")
    expect(result).to_contain_text("Intact", timeout=60_000)
    expect(result).to_contain_text("Events checked")
    checked = int(result.locator("dt:has-text('Events checked') + dd").inner_text())
    assert checked > 0
    shot(page, "integrity")


def test_the_integrity_page_follows_a_run_until_it_ends(page: Page, settings: Settings, auditor: User) -> None:
    """A run this test holds open (the key a run takes while it goes): the page shows its progress,
    polls, and shows the result once the run is over."""
    client = redis.Redis.from_url(settings.redis_url or "")
    running = f"{settings.namespace}:explorer:verify:running"
    started = datetime.now(UTC) - timedelta(seconds=3)
    held = {"started_at": started.isoformat(), "by": str(auditor.id), "events": 1234}
    assert client.set(running, json.dumps(held), nx=True, ex=60), "a verify run is going already"
    try:
        page.goto("/explorer/integrity")
        progress = page.locator("[data-testid=running]")
        expect(progress).to_contain_text("checking 1234 events")
        expect(progress.locator("[data-elapsed]")).to_have_text(re.compile(r"^\d+\.\d s$"))
        expect(page.locator("[data-testid=run]")).to_have_count(0)
        shot(page, "integrity-running")
    finally:
        client.delete(running)
        client.close()
    expect(page.locator("[data-testid=run]")).to_have_count(1)  # the page reloaded itself
    expect(page.locator("[data-testid=running]")).to_have_count(0)


def test_projections_are_shown_read_only(page: Page) -> None:
    page.goto("/explorer/projections")
    rows = page.locator("[data-testid=projections] tbody tr[data-projection]")
    names = set(rows.evaluate_all("rows => rows.map(r => r.dataset.projection)"))
    assert {"task_list", "order_history", "order_saga"} <= names, names
    expect(page.locator("[data-testid=projections] tr[data-projection=task_list] .badge")).to_have_text("running")
    assert page.locator("main form, main button").count() == 0
    shot(page, "projections")


def test_a_member_is_refused(guest: Page, api: Api) -> None:
    member = api.register("Mo Member")
    sign_in(guest, member)
    expect(guest.locator("[data-testid=error]")).to_contain_text("auditors and admins only")
    assert not [c for c in guest.context.cookies() if c["name"] == "chronicle_explorer"]
    guest.goto("/explorer/log")
    expect(guest).to_have_url(re.compile(r"/explorer/login"))
    shot(guest, "refused")


def test_a_form_post_without_its_csrf_token_is_refused(page: Page) -> None:
    page.goto("/explorer/integrity")
    for form in ({}, {"_csrf_token": "0" * 128}):
        r = page.request.post("/explorer/integrity/run", form=form, max_redirects=0)
        assert r.status == 403, r.text()
        assert r.headers["content-type"].startswith("text/html") and "CSRF" in r.text()
    r = page.request.post("/explorer/logout", form={}, max_redirects=0)
    assert r.status == 403
    page.goto("/explorer/log")
    expect(page).to_have_url(re.compile(r"/explorer/log$"))  # still signed in: the refused sign-out did nothing


def test_every_page_is_recorded_and_sent_with_a_strict_policy(page: Page, api: Api, auditor: User) -> None:
    response = page.goto("/explorer/log?type=Task.Started")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy

    def recorded() -> bool:
        r = api.get(f"/v1/audit/events?type=AuditAccess.Recorded&actor={auditor.id}&limit=1000", auditor)
        routes = [(e["data"]["route"], e["data"]["query"]) for e in r.json()["items"]]
        return ("/explorer/log", {"type": "Task.Started"}) in routes

    eventually(recorded, what="the explorer's page view recorded as AuditAccess.Recorded")
    paths = httpx.get(f"{api.base}/schema/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/explorer")]


def test_phone_width_and_dark_theme(
    browser: Browser, api: Api, auditor_session: Any, task_history: dict[str, Any]
) -> None:
    context = browser.new_context(
        base_url=api.base,
        viewport={"width": 390, "height": 844},
        color_scheme="dark",
        is_mobile=True,
        storage_state=auditor_session,
    )
    try:
        page = context.new_page()
        page.goto(f"/explorer/streams/{task_history['task']}?version=3")
        expect(page.locator("[data-testid=version]")).to_have_text("3")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background
        shot(page, "stream-phone-dark")
    finally:
        context.close()


def test_unknown_ids_and_bad_versions_are_pages_that_say_so(page: Page, task_history: dict[str, Any]) -> None:
    for url, status, says in (
        (f"/explorer/streams/{uuid.uuid4()}", 404, "no stream"),
        (f"/explorer/correlations/{uuid.uuid4()}", 404, "no events with correlation id"),
        (f"/explorer/streams/{task_history['task']}?version=x", 422, "versions 1 to 5"),
        (f"/explorer/streams/{task_history['task']}?version=6", 422, "versions 1 to 5"),
        ("/explorer/log?cursor=abc", 422, "cursor"),
        ("/explorer/find?id=nonsense", 422, "not an id"),
    ):
        response = page.goto(url)
        assert response is not None and response.status == status, url
        assert response.headers["content-type"].startswith("text/html")
        expect(page.locator("[data-testid=error]")).to_contain_text(says)
