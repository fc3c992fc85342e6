"""Test fixtures. Integration tests run against real servers: the ones named by
CHRONICLE_DATABASE_URL / CHRONICLE_NATS_URL / CHRONICLE_REDIS_URL, else embedded ones started once
per test session. Every run isolates itself: its own databases, stream names and key prefixes."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra.devstack.embedded import EmbeddedServers, ServerUrls

if TYPE_CHECKING:
    from tests.integration.http import Api, User
from infra.devstack.scratch import create_database, drop_database
from infra.eventstore.migrate import migrate, service_url
from infra.settings import Settings

RUN_ID = uuid.uuid4().hex[:8]
LANES = ("unit", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test with its lane, by the folder it is in, so `-m unit` selects the fast lane.
    A test outside both folders would silently belong to neither: that stops the run."""
    tests = Path(__file__).parent
    for item in items:
        lane = item.path.relative_to(tests).parts[0]
        if lane not in LANES:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit/ or tests/integration/")
        item.add_marker(getattr(pytest.mark, lane))


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerUrls]:
    configured = Settings.from_env()
    if configured.servers_configured:
        assert configured.database_url and configured.nats_url and configured.redis_url
        yield ServerUrls(configured.database_url, configured.nats_url, configured.redis_url)
        return
    with tempfile.TemporaryDirectory(prefix="chronicle-test-servers-") as tmp:
        embedded = EmbeddedServers(Path(tmp), durable=False)
        try:
            yield embedded.start()
        finally:
            embedded.stop()


@pytest.fixture(scope="session")
def owner_database_url(servers: ServerUrls) -> Iterator[str]:
    """The run's own migrated database (shared by the tests of this run), as its owner."""
    url = create_database(servers.database_url)
    migrate(url, service=service_url(url))
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def database_url(owner_database_url: str) -> str:
    """The run's database as the services see it: logged in as the service role (migration 0009)."""
    return service_url(owner_database_url)


@pytest.fixture
def fresh_database_url(servers: ServerUrls) -> Iterator[str]:
    """A migrated database of the test's own, for tests that need an empty event log."""
    url = create_database(servers.database_url)
    migrate(url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def settings(servers: ServerUrls, database_url: str) -> Settings:
    from tests.integration.http import SEAL_KEY

    return Settings(
        database_url=database_url,
        nats_url=servers.nats_url,
        redis_url=servers.redis_url,
        namespace=f"t{RUN_ID}",
        seal_key=SEAL_KEY,
    )


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def api(settings: Settings) -> Iterator[Api]:
    """A real `chronicle api` process serving the run's database, and a client for it."""
    from tests.integration.http import Api, running_api

    with running_api(settings) as base:
        client = Api(base)
        yield client
        client.http.close()


@pytest.fixture(scope="session")
def chronicle_app(settings: Settings) -> Iterator[Any]:
    """The write side in-process, for arranging what HTTP cannot (e.g. the first admin)."""
    from infra.bootstrap import bootstrap

    app = bootstrap(settings)
    yield app
    app.close()


@pytest.fixture(scope="module")
def admin(api: Api, chronicle_app: Any) -> User:
    """An admin for the module's tests (making one hashes a password three times). The tests act as it;
    none acts on it. Module-scoped, not session: its access token must outlive a module, not the run."""
    from commands.base import Context
    from domain.identity import Role

    user = api.register("Admin Person")
    chronicle_app.identity.grant(Context("tests.make_admin", system_actor="tests"), user.id, Role.ADMIN)
    return api.relogin(user)


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> Iterator[None]:
    """The run's relay, projectors and order saga, so query routes have views to read."""
    from tests.integration.pipeline import all_roles, running, wait_active

    with running(settings, "relay", "projector", "saga"):
        wait_active(settings, *all_roles(saga=True))
        yield


def as_owner(url: str) -> str:
    """`url` logged in as a member of the owner role (migration 0009): what an attacker with the
    database owner's rights, or an operator on the maintenance path, connects as."""
    import psycopg

    login = "chronicle_test_owner"
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{login}' IN ROLE chronicle_owner")
        conn.execute(f"GRANT chronicle_owner TO {login}")
    return service_url(url, user=login, password=login)
