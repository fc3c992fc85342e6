"""The auditors' explorer at /explorer, driven in a real headless Chromium (Debian's `chromium`, through
Playwright) against a real `chronicle api` process. Screenshots of every page go to
tests/artifacts/explorer/ (git-ignored)."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import datetime, timedelta
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from commands.base import Context
from domain.identity import Role
from tests.integration.commerce import place, product, wait_order
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


@pytest.fixture
def context(browser: Browser, api: Api) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=api.base, viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


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
    page: Page, context: BrowserContext, api: Api, auditor: User, staff: User, task_history: dict[str, Any]
) -> None:
    sign_in(page, auditor)
    expect(page).to_have_url(re.compile(r"/explorer/log$"))
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["chronicle_explorer"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/explorer"
    assert not session["secure"], "plain HTTP here; Secure is set only over TLS"
    assert cookies["chronicle_explorer_csrf"]["httpOnly"] and cookies["chronicle_explorer_csrf"]["sameSite"] == "Strict"

    page.fill("#f-type", "Task.Edited")
    page.fill("#f-actor", str(staff.id))
    page.click("button:has-text('Filter')")
    expect(page).to_have_url(re.compile(r"type=Task.Edited"))
    events = page.locator("details.event")
    expect(events).to_have_count(2)
    assert set(events.locator(".type").all_inner_texts()) == {"Task.Edited"}
    events.first.locator("summary").click()
    body = events.first.locator(".body")
    expect(body).to_contain_text('"title": "Second title"')
    for label in ("Actor", "Command", "Correlation", "Causation", "Position", "Hash"):
        expect(body.locator("dt", has_text=label)).to_have_count(1)
    expect(body.locator("dd.hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    shot(page, "log")

    page.fill("#f-type", "")
    page.fill("#f-actor", "")
    page.fill("#f-stream", task_history["task"].hex)
    page.click("button:has-text('Filter')")
    assert page.locator("details.event .type").all_inner_texts() == [
        "Task.Created",
        "Task.Assigned",
        "Task.Edited",
        "Task.Edited",
        "Task.Started",
    ]
    page.goto(f"/explorer/log?stream={task_history['task']}&limit=2")
    page.click("[data-testid=next]")
    assert page.locator("details.event .type").all_inner_texts() == ["Task.Edited", "Task.Edited"]

    page.goto("/explorer/log?from=yesterday")
    expect(page.locator("[data-testid=error]")).to_contain_text("from: not a date")


def test_moving_through_a_stream_shows_the_state_the_api_replays(
    page: Page, api: Api, auditor: User, task_history: dict[str, Any]
) -> None:
    task = task_history["task"]

    def api_state(version: int) -> dict[str, Any]:
        r = api.get(f"/v1/audit/streams/{task}/state?version={version}", auditor)
        assert r.status_code == 200, r.text
        return dict(r.json()["state"])

    sign_in(page, auditor, f"/explorer/streams/{task}")
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


def test_an_xss_title_is_shown_as_text(page: Page, auditor: User, task_history: dict[str, Any]) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, auditor, f"/explorer/streams/{task_history['task']}?version=1")
    title = page.locator("tr[data-field=title] td.value code")
    expect(title).to_have_text(json.dumps(XSS))
    page.locator("details.event.selected summary").click()
    expect(page.locator("details.event.selected pre.data")).to_contain_text(XSS)
    assert page.locator("main script, main img").count() == 0
    assert dialogs == []
    shot(page, "stream-xss")


def test_an_orders_correlation_is_drawn_as_a_causation_tree(
    page: Page, api: Api, auditor: User, staff: User
) -> None:
    sku, _ = product(api, staff, stock=5)
    r = api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 2}]}, staff)
    assert r.status_code == 201, r.text
    order, correlation = r.json()["id"], r.headers["X-Correlation-Id"]
    wait_order(api, staff, order, {"reserved"})
    sign_in(page, auditor, f"/explorer/correlations/{correlation}")
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


def test_verify_runs_from_the_integrity_page(page: Page, auditor: User) -> None:
    sign_in(page, auditor, "/explorer/integrity")
    page.click("[data-testid=run]")
    result = page.locator("[data-testid=result]")
    expect(result).to_contain_text("Intact", timeout=60_000)
    expect(result).to_contain_text("Events checked")
    checked = int(result.locator("dt:has-text('Events checked') + dd").inner_text())
    assert checked > 0
    shot(page, "integrity")


def test_projections_are_shown_read_only(page: Page, auditor: User) -> None:
    sign_in(page, auditor, "/explorer/projections")
    rows = page.locator("[data-testid=projections] tbody tr[data-projection]")
    names = set(rows.evaluate_all("rows => rows.map(r => r.dataset.projection)"))
    assert {"task_list", "order_history", "order_saga"} <= names, names
    expect(page.locator("[data-testid=projections] tr[data-projection=task_list] .badge")).to_have_text("running")
    assert page.locator("main form, main button").count() == 0
    shot(page, "projections")


def test_a_member_is_refused(page: Page, api: Api) -> None:
    member = api.register("Mo Member")
    sign_in(page, member)
    expect(page.locator("[data-testid=error]")).to_contain_text("auditors and admins only")
    assert not [c for c in page.context.cookies() if c["name"] == "chronicle_explorer"]
    page.goto("/explorer/log")
    expect(page).to_have_url(re.compile(r"/explorer/login"))
    shot(page, "refused")


def test_a_form_post_without_its_csrf_token_is_refused(page: Page, auditor: User) -> None:
    sign_in(page, auditor, "/explorer/integrity")
    for form in ({}, {"_csrf_token": "0" * 128}):
        r = page.request.post("/explorer/integrity/run", form=form, max_redirects=0)
        assert r.status == 403, r.text()
        assert "CSRF" in r.text()
    r = page.request.post("/explorer/logout", form={}, max_redirects=0)
    assert r.status == 403
    page.goto("/explorer/log")
    expect(page).to_have_url(re.compile(r"/explorer/log$"))  # still signed in: the refused sign-out did nothing


def test_every_page_is_recorded_and_sent_with_a_strict_policy(page: Page, api: Api, auditor: User) -> None:
    sign_in(page, auditor)
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


def test_phone_width_and_dark_theme(browser: Browser, api: Api, auditor: User, task_history: dict[str, Any]) -> None:
    context = browser.new_context(
        base_url=api.base, viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    try:
        page = context.new_page()
        sign_in(page, auditor, f"/explorer/streams/{task_history['task']}?version=3")
        expect(page.locator("[data-testid=version]")).to_have_text("3")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background
        shot(page, "stream-phone-dark")
    finally:
        context.close()


def test_a_stream_that_does_not_exist_is_a_404_page(page: Page, auditor: User) -> None:
    sign_in(page, auditor)
    response = page.goto(f"/explorer/streams/{uuid.uuid4()}")
    assert response is not None and response.status == 404
    response = page.goto("/explorer/streams/not-a-uuid")
    assert response is not None and response.status in (400, 404)
    response = page.goto(f"/explorer/streams/{uuid.uuid4()}?version=x")
    assert response is not None and response.status in (404, 422)
