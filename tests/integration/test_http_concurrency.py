"""Concurrency and idempotency over HTTP, against a real server."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import httpx
import psycopg

from infra.settings import Settings
from tests.integration.http import Api, User, assert_problem


def _at_once(n: int, call: Any, base: str | None = None) -> list[httpx.Response]:
    """`call` from n threads released together. With `base`, each client first opens its connection
    (a health check), so the calls leave at once instead of each after its own TCP connect, which
    on a busy machine spreads them out enough that they no longer meet."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = [None] * n  # type: ignore[list-item]

    def run(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            if base is not None:
                client.get(f"{base}/v1/health")
            barrier.wait()
            results[i] = call(client, i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _versions(settings: Settings, stream: str) -> list[int]:
    with psycopg.connect(settings.database_url or "") as conn:
        return [
            r[0] for r in conn.execute("SELECT version FROM events WHERE stream_id = %s ORDER BY version", (stream,))
        ]


def test_many_identical_commands_at_once_one_wins_per_version(api: Api, settings: Settings) -> None:
    owner = api.register("Connie Current")
    task = str(api.task(owner, api.project(owner)))
    n = 16
    results = _at_once(
        n,
        lambda c, i: c.post(f"{api.base}/v1/tasks/{task}/edit", json={"title": f"Title {i}"}, headers=owner.auth),
        base=api.base,
    )
    statuses = Counter(r.status_code for r in results)
    assert set(statuses) <= {200, 409}, statuses
    won = [r.json()["version"] for r in results if r.status_code == 200]
    assert len(won) == len(set(won)), "two commands won the same version"
    assert statuses[200] >= 1 and statuses[409] >= 1, f"no contention happened: {statuses}"
    for r in results:
        if r.status_code == 409:
            assert_problem(r, 409)
    versions = _versions(settings, task)
    assert versions == list(range(1, len(versions) + 1)) and len(versions) == 1 + len(won)


def test_concurrent_commands_with_if_match_exactly_one_wins(api: Api, settings: Settings) -> None:
    owner = api.register("Ifa Match")
    task = str(api.task(owner, api.project(owner)))
    results = _at_once(
        12,
        lambda c, i: c.post(
            f"{api.base}/v1/tasks/{task}/edit", json={"title": f"T{i}"}, headers={**owner.auth, "If-Match": "1"}
        ),
    )
    statuses = Counter(r.status_code for r in results)
    assert statuses[200] == 1 and set(statuses) <= {200, 409, 412}, statuses
    assert _versions(settings, task) == [1, 2]


def test_idempotency_key_replays_the_first_response_and_stores_once(api: Api, settings: Settings) -> None:
    owner = api.register("Ida Empotent")
    key = uuid.uuid4().hex
    first = api.post("/v1/projects", {"name": "Once"}, owner, idempotency_key=key)
    again = api.post("/v1/projects", {"name": "Once"}, owner, idempotency_key=key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert _versions(settings, first.json()["id"]) == [1]
    reordered = api.http.post(
        "/v1/projects",
        content=b'{ "name" :  "Once" }',
        headers={**owner.auth, "Idempotency-Key": key, "content-type": "application/json"},
    )
    assert reordered.json() == first.json(), "the same JSON, formatted differently, is the same request"
    assert_problem(
        api.post("/v1/projects", {"name": "Twice"}, owner, idempotency_key=key), 422, says="different request"
    )
    other = api.register("Another Caller")
    theirs = api.post("/v1/projects", {"name": "Once"}, other, idempotency_key=key)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"], "keys are per caller"


def test_idempotency_key_on_an_existing_aggregate(api: Api, settings: Settings) -> None:
    owner = api.register("Kay Key")
    task = str(api.task(owner, api.project(owner)))
    key = uuid.uuid4().hex
    first = api.post(f"/v1/tasks/{task}/start", user=owner, idempotency_key=key)
    again = api.post(f"/v1/tasks/{task}/start", user=owner, idempotency_key=key)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert_problem(api.post(f"/v1/tasks/{task}/start", user=owner, idempotency_key=uuid.uuid4().hex), 409)
    assert _versions(settings, task) == [1, 2]
    assert_problem(api.post(f"/v1/tasks/{task}/start", user=owner, idempotency_key="x" * 300), 400)


def test_two_identical_requests_with_one_key_at_once(api: Api, settings: Settings) -> None:
    owner = api.register("Twin Request")
    for _ in range(3):
        key = uuid.uuid4().hex
        results = _at_once(
            8,
            lambda c, i, key=key: c.post(
                f"{api.base}/v1/projects", json={"name": "Twin"}, headers={**owner.auth, "Idempotency-Key": key}
            ),
        )
        assert {r.status_code for r in results} == {201}, [r.text for r in results]
        assert len({r.json()["id"] for r in results}) == 1, "two projects were created for one key"
        assert _versions(settings, results[0].json()["id"]) == [1]

    task = str(api.task(owner, api.project(owner)))
    key = uuid.uuid4().hex
    results = _at_once(
        8,
        lambda c, i: c.post(
            f"{api.base}/v1/tasks/{task}/edit", json={"title": "Same"}, headers={**owner.auth, "Idempotency-Key": key}
        ),
    )
    assert {r.status_code for r in results} == {200}, [r.text for r in results]
    assert {r.json()["version"] for r in results} == {2}
    assert _versions(settings, task) == [1, 2]


def test_registering_one_email_many_times_at_once_makes_one_user(api: Api) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    results = _at_once(
        8,
        lambda c, i: c.post(
            f"{api.base}/v1/auth/register", json={"email": email, "password": "long enough pw", "name": f"R{i}"}
        ),
    )
    assert sorted(r.status_code for r in results) == [201] + [409] * 7


def test_refreshing_one_token_many_times_at_once_rotates_once(api: Api) -> None:
    user: User = api.register("Ray Race")
    results = _at_once(
        8, lambda c, i: c.post(f"{api.base}/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    )
    assert sorted(r.status_code for r in results) == [200] + [401] * 7
