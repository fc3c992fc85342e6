"""The composition root: the one place that builds stores, clients and applications.

The Litestar app and the CLI both call `bootstrap`. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

from eventsourcing.utils import Environment

from commands.audit import AuditApplication
from commands.catalog import CatalogApplication, InventoryApplication, product_exists
from commands.identity import IdentityApplication
from commands.ordering import OrderingApplication
from commands.work import WorkApplication
from infra.eventstore.idempotency import IdempotencyKeys
from infra.eventstore.migrate import check_schema
from infra.eventstore.recorder import EventStoreDatabase, Factory
from infra.observe import tracing
from infra.observe.metrics import CACHE_HITS, CACHE_MISSES, sample_pool
from infra.sessions import RedisAccessStates
from infra.settings import Settings


@dataclass
class Chronicle:
    """The write side of one process: the event store and an application per context."""

    settings: Settings
    database: EventStoreDatabase
    identity: IdentityApplication
    work: WorkApplication
    idempotency: IdempotencyKeys
    audit: AuditApplication
    catalog: CatalogApplication
    inventory: InventoryApplication
    ordering: OrderingApplication
    access_states: RedisAccessStates | None = None

    def close(self) -> None:
        self.database.close()
        if self.access_states is not None:
            self.access_states.close()


def observed_load(what: str, cached: bool) -> contextlib.AbstractContextManager[None]:
    """Counts each load as a hit or a miss of the aggregate cache; a miss (a read from the store)
    gets a span of its own."""
    if cached:
        CACHE_HITS.labels("aggregates").inc()
        return contextlib.nullcontext()
    CACHE_MISSES.labels("aggregates").inc()
    return tracing.span(f"load {what}")


def bootstrap(settings: Settings, *, require_schema: bool = True) -> Chronicle:
    url = settings.require_database_url()
    if require_schema:
        check_schema(url)
    database = EventStoreDatabase(
        url,
        pool_size=settings.db_pool_size,
        idle_in_transaction_timeout_ms=settings.idle_in_transaction_timeout_ms,
        connect_timeout=settings.dependency_timeout_s,
    )

    def make_factory(env: Environment) -> Factory:
        return Factory(env, database=database)

    keys = IdempotencyKeys(database, ttl_s=settings.idempotency_key_ttl_s)
    access_states = RedisAccessStates(settings.redis_url, settings.namespace) if settings.redis_url else None
    identity = IdentityApplication(
        make_factory,
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
        session_max_age=timedelta(seconds=settings.session_max_age_s),
        key_recorded=keys.recorded,
        access_states=access_states,
        forget=database.subject_keys.erase,
    )
    work = WorkApplication(make_factory, user_exists=identity.user_exists, key_recorded=keys.recorded)
    audit = AuditApplication(make_factory)
    catalog = CatalogApplication(make_factory, key_recorded=keys.recorded)
    inventory = InventoryApplication(make_factory, product_exists=product_exists(catalog), key_recorded=keys.recorded)
    ordering = OrderingApplication(make_factory, key_recorded=keys.recorded)
    for app in (identity, work, audit, catalog, inventory, ordering):
        app.observe_load = observed_load
        app.snapshot_check_rate = settings.snapshot_check_rate
    sample_pool(database)
    return Chronicle(settings, database, identity, work, keys, audit, catalog, inventory, ordering, access_states)
