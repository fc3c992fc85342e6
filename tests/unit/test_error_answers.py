"""A 500 says nothing of what went wrong; the log says it all, under the request's correlation id."""

from __future__ import annotations

import logging

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from api.problems import EXCEPTION_HANDLERS


@get("/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("password=hunter2 at db.internal:5432")


def test_an_unexpected_error_answers_500_without_its_text_and_logs_it_with_the_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS, debug=False, logging_config=None)
    with caplog.at_level(logging.ERROR, logger="api.problems"), TestClient(app) as client:
        r = client.get("/boom", headers={"X-Correlation-Id": "0b6f4f4e-7d1c-4a53-9b43-5a3e0f6c2d11"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "hunter2" not in r.text and "db.internal" not in r.text and "RuntimeError" not in r.text
    assert r.headers["X-Correlation-Id"] == "0b6f4f4e-7d1c-4a53-9b43-5a3e0f6c2d11"
    [record] = [rec for rec in caplog.records if rec.name == "api.problems"]
    assert "0b6f4f4e-7d1c-4a53-9b43-5a3e0f6c2d11" in record.getMessage()
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


def test_a_storage_failure_answers_503_with_retry_after() -> None:
    import psycopg_pool
    import redis.exceptions

    @get("/pool", sync_to_thread=False)
    def pool() -> None:
        raise psycopg_pool.PoolTimeout("couldn't get a connection after 5.00 sec")

    @get("/redis", sync_to_thread=False)
    def redis_down() -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.7:6379")

    app = Litestar([pool, redis_down], exception_handlers=EXCEPTION_HANDLERS, debug=False)
    with TestClient(app) as client:
        for path in ("/pool", "/redis"):
            r = client.get(path)
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
            assert "10.0.0.7" not in r.text and "5.00" not in r.text
