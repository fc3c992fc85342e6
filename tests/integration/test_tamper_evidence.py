"""Tamper evidence: an untouched log verifies clean; editing an event's data, deleting an event,
reordering or inserting events directly in SQL, and altering a seal are each detected and located."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from commands.base import Actor, Context
from domain.identity import Role
from infra.bootstrap import bootstrap
from infra.delivery.relay import Sealer
from infra.eventstore.verify import verify
from infra.settings import Settings


@pytest.fixture
def sealed(fresh_database_url: str, settings: Settings) -> Iterator[tuple[str, list[int]]]:
    """A log of a few dozen events, sealed in ranges of 7 events; returns its URL and positions."""
    app = bootstrap(Settings(database_url=fresh_database_url, nats_url=settings.nats_url, redis_url=settings.redis_url))
    owner = app.identity.register(Context("t"), f"{uuid.uuid4().hex[:6]}@example.com", "Owner", "long enough pw").id
    ctx = Context("t", actor=Actor(owner, frozenset({Role.MEMBER})))
    project = app.work.create_project(ctx, "Sealed", None).id
    for i in range(12):
        task = app.work.create_task(ctx, project, f"T{i}").id
        app.work.start_task(ctx, task)
    app.close()

    async def seal() -> None:
        async with await psycopg.AsyncConnection.connect(fresh_database_url, autocommit=True) as conn:
            sealer = Sealer()
            await sealer.load(conn)
            head = (await (await conn.execute("SELECT max(notification_id) FROM events")).fetchone())[0]  # type: ignore[index]
            await sealer.seal_backlog(conn, head, chunk=7)

    asyncio.run(seal())
    with psycopg.connect(fresh_database_url) as conn:
        positions = [r[0] for r in conn.execute("SELECT notification_id FROM events ORDER BY notification_id")]
    yield fresh_database_url, positions


def _sql(url: str, statement: str, *params: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode(), params)


def test_an_untouched_log_verifies_clean(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    report = verify(url)
    assert report.ok and report.first_problem is None
    assert report.events_checked == len(positions) and report.seals_checked == -(-len(positions) // 7)
    assert report.unsealed_events == 0


def test_editing_an_events_data_is_detected_at_that_event(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    target = positions[17]
    _sql(
        url,
        "UPDATE events SET data = convert_to(replace(convert_from(data, 'UTF8'), 'T', 'X'), 'UTF8')"
        " WHERE notification_id = %s",
        target,
    )
    report = verify(url)
    assert not report.ok and report.first_problem is not None
    assert report.first_problem.kind == "event_altered" and report.first_problem.position == str(target)


def test_editing_metadata_is_detected_too(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    _sql(url, "UPDATE events SET actor_id = 'someone-else' WHERE notification_id = %s", positions[3])
    problem = verify(url).first_problem
    assert problem is not None and problem.kind == "event_altered" and problem.position == str(positions[3])


def test_deleting_an_event_is_detected_in_its_seal(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    _sql(url, "DELETE FROM events WHERE notification_id = %s", positions[9])
    problem = verify(url).first_problem
    assert problem is not None and problem.kind == "event_missing" and problem.seal == 2
    assert int(problem.position or 0) < positions[9]


def test_reordering_events_is_detected(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    a, b = positions[15], positions[16]
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE events SET notification_id = -1 WHERE notification_id = %s", (a,))
        conn.execute("UPDATE events SET notification_id = %s WHERE notification_id = %s", (a, b))
        conn.execute("UPDATE events SET notification_id = %s WHERE notification_id = -1", (b,))
    problem = verify(url).first_problem
    assert problem is not None and problem.kind == "order_changed" and problem.seal == 3


def test_inserting_an_event_inside_a_sealed_range_is_detected(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    _sql(
        url,
        "INSERT INTO events SELECT %s, gen_random_uuid(), gen_random_uuid(), 1, topic, type, data, recorded_at,"
        " actor_id, command, correlation_id, causation_id, hash FROM events WHERE notification_id = %s",
        positions[2] + 1,
        positions[2],
    )
    problem = verify(url).first_problem
    assert problem is not None and problem.seal == 1 and problem.kind in ("event_inserted", "event_altered")


def test_altering_a_seal_is_detected(sealed: tuple[str, list[int]]) -> None:
    url, _ = sealed
    _sql(url, "UPDATE seals SET event_count = event_count - 1 WHERE seq = 3")
    problem = verify(url).first_problem
    assert problem is not None and problem.kind == "seal_altered" and problem.seal == 3
    _sql(url, "UPDATE seals SET event_count = event_count + 1 WHERE seq = 3")
    _sql(url, "UPDATE seals SET merkle_root = sha256(merkle_root) WHERE seq = 2")
    problem = verify(url).first_problem
    assert problem is not None and problem.kind == "seal_altered" and problem.seal == 2


def test_the_relay_seals_what_it_publishes(chronicle_app: object, pipeline: None, settings: Settings) -> None:
    from tests.integration.pipeline import wait_caught_up
    from tests.waiting import eventually

    chronicle_app.identity.register(
        Context("t"),
        f"{uuid.uuid4().hex[:6]}@example.com",
        "Sealed",  # type: ignore[attr-defined]
        "long enough pw",
    )
    wait_caught_up(settings)

    def sealed_through_relayed() -> int:
        with psycopg.connect(settings.database_url or "") as conn:
            relayed = conn.execute("SELECT position FROM relay_state").fetchone()
            sealed_to = conn.execute("SELECT coalesce(max(to_position), 0) FROM seals").fetchone()
        assert relayed and sealed_to and relayed[0] == sealed_to[0], (relayed, sealed_to)
        return int(relayed[0])

    relayed = eventually(sealed_through_relayed, what="the seals to reach the relay's position")
    report = verify(settings.database_url or "")
    assert report.ok, report.first_problem
    assert report.seals_checked > 0 and int(report.sealed_through) == relayed
