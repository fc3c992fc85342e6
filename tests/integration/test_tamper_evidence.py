"""Tamper evidence: an untouched log verifies clean; editing an event's data, deleting an event,
reordering or inserting events directly in SQL, and altering a seal are each detected and located;
so are an attacker who recomputes every hash, root and seal (the signatures fail), one who signs
with a key of their own, and one who cuts the log's tail (the external head remembers it)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from commands.base import Actor, Context
from domain.identity import Role
from infra.bootstrap import bootstrap
from infra.delivery.anchors import ensure_anchor_stream, heads_from, publish_head
from infra.delivery.relay import Sealer, connect_nats
from infra.eventstore.signing import SealKey, head_of, load_seal_key
from infra.eventstore.tamper import hash_of_row, merkle_root, seal_hash
from infra.eventstore.verify import SEAL_COLUMNS, Verification, verify
from infra.settings import Settings
from tests.conftest import as_owner, new_namespace
from tests.integration.http import api_env

KEY = SealKey.generate()


def check(url: str, *heads: object) -> Verification:
    return verify(url, [KEY.public], heads)  # type: ignore[arg-type]


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
            sealer = Sealer(KEY)
            await sealer.load(conn)
            head = (await (await conn.execute("SELECT max(notification_id) FROM events")).fetchone())[0]  # type: ignore[index]
            await sealer.seal_backlog(conn, head, chunk=7)

    asyncio.run(seal())
    with psycopg.connect(fresh_database_url) as conn:
        positions = [r[0] for r in conn.execute("SELECT notification_id FROM events ORDER BY notification_id")]
    yield fresh_database_url, positions


def _sql(url: str, statement: str, *params: object) -> None:
    """Runs a statement as the owner, on the maintenance path (past the insert-only trigger)."""
    with psycopg.connect(as_owner(url)) as conn:
        conn.execute("SET LOCAL chronicle.maintenance = 'on'")
        conn.execute(statement.encode(), params)


def test_an_untouched_log_verifies_clean(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    report = check(url)
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
    report = check(url)
    assert not report.ok and report.first_problem is not None
    assert report.first_problem.kind == "event_altered" and report.first_problem.position == str(target)


def test_editing_metadata_is_detected_too(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    _sql(url, "UPDATE events SET actor_id = 'someone-else' WHERE notification_id = %s", positions[3])
    problem = check(url).first_problem
    assert problem is not None and problem.kind == "event_altered" and problem.position == str(positions[3])


def test_deleting_an_event_is_detected_in_its_seal(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    _sql(url, "DELETE FROM events WHERE notification_id = %s", positions[9])
    problem = check(url).first_problem
    assert problem is not None and problem.kind == "event_missing" and problem.seal == 2
    assert int(problem.position or 0) < positions[9]


def test_reordering_events_is_detected(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    a, b = positions[15], positions[16]
    with psycopg.connect(as_owner(url)) as conn:
        conn.execute("SET LOCAL chronicle.maintenance = 'on'")
        conn.execute("UPDATE events SET notification_id = -1 WHERE notification_id = %s", (a,))
        conn.execute("UPDATE events SET notification_id = %s WHERE notification_id = %s", (a, b))
        conn.execute("UPDATE events SET notification_id = %s WHERE notification_id = -1", (b,))
    problem = check(url).first_problem
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
    problem = check(url).first_problem
    assert problem is not None and problem.seal == 1 and problem.kind in ("event_inserted", "event_altered")


def test_altering_a_seal_is_detected(sealed: tuple[str, list[int]]) -> None:
    url, _ = sealed
    _sql(url, "UPDATE seals SET event_count = event_count - 1 WHERE seq = 3")
    problem = check(url).first_problem
    assert problem is not None and problem.kind == "seal_altered" and problem.seal == 3
    _sql(url, "UPDATE seals SET event_count = event_count + 1 WHERE seq = 3")
    _sql(url, "UPDATE seals SET merkle_root = sha256(merkle_root) WHERE seq = 2")
    problem = check(url).first_problem
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
    trusted = [load_seal_key(settings.seal_key, settings.seal_key_file).public]
    report = verify(settings.database_url or "", trusted)
    assert report.ok, report.first_problem
    assert report.seals_checked > 0 and int(report.sealed_through) >= relayed

    def head_in_jetstream() -> bool:
        heads, notes = asyncio.run(heads_from(settings.nats_url or "", settings.namespace))
        assert not notes and heads, notes
        with psycopg.connect(settings.database_url or "") as conn:
            row = conn.execute("SELECT " + SEAL_COLUMNS + " FROM seals WHERE seq = %s", (heads[0].head.seq,)).fetchone()
        assert (
            row is not None and head_of(*(bytes(v) if isinstance(v, memoryview) else v for v in row)) == heads[0].head
        )
        return True

    eventually(head_in_jetstream, what="the relay to publish its newest seal's head to JetStream")
    heads, _ = asyncio.run(heads_from(settings.nats_url or "", settings.namespace))
    assert verify(settings.database_url or "", trusted, heads).ok


# -- an attacker with the owner's rights ------------------------------------------------------------


def rewrite_as_owner(url: str, position: int, resign_with: SealKey | None = None) -> None:
    """Edits an event's data, recomputes its hash, and recomputes every seal's Merkle root and the
    whole chain, as anyone who can write the tables can; signs with `resign_with` if given, else
    leaves the old signatures."""
    with psycopg.connect(as_owner(url)) as conn:
        conn.execute("SET LOCAL chronicle.maintenance = 'on'")
        conn.execute(
            "UPDATE events SET data = convert_to(replace(convert_from(data, 'UTF8'), 'T', 'X'), 'UTF8')"
            " WHERE notification_id = %s",
            (position,),
        )
        row = conn.execute(
            "SELECT event_id, stream_id, version, topic, type, data, recorded_at, actor_id, command, correlation_id,"
            " causation_id FROM events WHERE notification_id = %s",
            (position,),
        ).fetchone()
        assert row is not None
        conn.execute("UPDATE events SET hash = %s WHERE notification_id = %s", (hash_of_row(row), position))
        previous = bytes(32)
        for seq, from_p, to_p in conn.execute(
            "SELECT seq, from_position, to_position FROM seals ORDER BY seq"
        ).fetchall():
            leaves = [
                (p, bytes(h))
                for p, h in conn.execute(
                    "SELECT notification_id, hash FROM events WHERE notification_id > %s AND notification_id <= %s"
                    " ORDER BY notification_id",
                    (from_p, to_p),
                )
            ]
            root = merkle_root(leaves)
            digest = seal_hash(seq, from_p, to_p, len(leaves), root, previous)
            conn.execute(
                "UPDATE seals SET merkle_root = %s, previous_hash = %s, seal_hash = %s WHERE seq = %s",
                (root, previous, digest, seq),
            )
            if resign_with is not None:
                conn.execute(
                    "UPDATE seals SET public_key = %s, signature = %s WHERE seq = %s",
                    (resign_with.public, resign_with.sign(digest), seq),
                )
            previous = digest


def test_an_owner_who_recomputes_hashes_roots_and_chain_fails_at_the_signature_of_that_events_seal(
    sealed: tuple[str, list[int]],
) -> None:
    url, positions = sealed
    target = positions[17]
    rewrite_as_owner(url, target)
    problem = check(url).first_problem
    assert problem is not None and problem.kind == "signature_invalid", problem
    with psycopg.connect(url) as conn:
        bounds = conn.execute("SELECT from_position, to_position FROM seals WHERE seq = %s", (problem.seal,)).fetchone()
    assert bounds is not None and bounds[0] < target <= bounds[1]
    assert problem.seal == 3  # seals of 7 events: the 18th event is in the third


def test_an_owner_who_signs_with_a_key_of_their_own_is_found_out(sealed: tuple[str, list[int]]) -> None:
    url, positions = sealed
    rewrite_as_owner(url, positions[2], resign_with=SealKey.generate())
    problem = check(url).first_problem
    assert problem is not None and problem.kind == "seal_forged" and problem.seal == 1


def test_cutting_the_tail_passes_the_database_alone_but_not_the_external_head(
    sealed: tuple[str, list[int]], settings: Settings
) -> None:
    url, positions = sealed
    namespace = new_namespace()

    async def anchor() -> None:
        nc = await connect_nats(settings.nats_url or "", "test-anchor")
        js = nc.jetstream()
        await ensure_anchor_stream(js, namespace)
        with psycopg.connect(url) as conn:
            row = conn.execute(f"SELECT {SEAL_COLUMNS} FROM seals ORDER BY seq DESC LIMIT 1").fetchone()
        assert row is not None
        await publish_head(js, namespace, head_of(*(bytes(v) if isinstance(v, memoryview) else v for v in row)))
        await nc.close()

    asyncio.run(anchor())
    heads, notes = asyncio.run(heads_from(settings.nats_url or "", namespace))
    assert check(url, *heads).ok and not notes
    cut = positions[-10]
    with psycopg.connect(as_owner(url)) as conn:
        conn.execute("SET LOCAL chronicle.maintenance = 'on'")
        conn.execute("DELETE FROM events WHERE notification_id >= %s", (cut,))
        conn.execute("DELETE FROM seals WHERE to_position >= %s", (cut,))
    assert check(url).ok  # the database alone cannot tell
    problem = check(url, *heads).first_problem
    assert problem is not None and problem.kind == "tail_cut", problem


def test_an_auditors_kept_head_catches_a_cut_tail(
    sealed: tuple[str, list[int]], settings: Settings, tmp_path: object
) -> None:
    import base64
    import subprocess
    import sys
    from pathlib import Path

    url, positions = sealed
    own = Settings(
        database_url=url, nats_url=settings.nats_url, redis_url=settings.redis_url, namespace=new_namespace()
    )
    secret = base64.b64encode(KEY.private.private_bytes_raw()).decode()
    env = api_env(own, CHRONICLE_SEAL_KEY=secret)

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "audit", *args], env=env, capture_output=True, timeout=120
        )

    anchored = cli("anchor")
    assert anchored.returncode == 0, anchored.stderr
    head = Path(str(tmp_path)) / "head.json"
    head.write_bytes(anchored.stdout)
    assert cli("verify", "--against", str(head)).returncode == 0
    with psycopg.connect(as_owner(url)) as conn:
        conn.execute("SET LOCAL chronicle.maintenance = 'on'")
        conn.execute("DELETE FROM events WHERE notification_id >= %s", (positions[-10],))
        conn.execute("DELETE FROM seals WHERE to_position >= %s", (positions[-10],))
    broken = cli("verify", "--against", str(head))
    assert broken.returncode == 1
    assert b'"kind":"tail_cut"' in broken.stdout, broken.stdout
    tampered = head.read_bytes().replace(b'"seq":', b'"seq": ')
    head.write_bytes(tampered)
    refused = cli("verify", "--against", str(head))
    assert refused.returncode == 2 and b"changed" in refused.stderr, refused.stderr
