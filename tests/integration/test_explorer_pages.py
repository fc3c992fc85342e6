"""Every page `chronicle bench explorer` times answers on a small generated log, through the bench's
own sign-in: the bench keeps working, and the filters the browser tests leave out (a time range, a
type within it, an actor that is no id) are served. Speed itself is the bench's business."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from api.app import create_app
from infra.bench.explorer import explorer_pages, new_auditor, sign_in
from infra.bench.rebuild import generate
from infra.settings import Settings
from tests.conftest import new_namespace
from tests.integration.http import JWT_SECRET


def test_every_page_the_explorer_bench_times_answers_on_a_generated_log(fresh_database_url: str, servers: Any) -> None:
    settings = Settings(
        database_url=fresh_database_url,
        nats_url=servers.nats_url,
        redis_url=servers.redis_url,
        namespace=new_namespace(),
        jwt_secret=JWT_SECRET,
    )
    generate(fresh_database_url, 2_000)
    email = new_auditor(settings)
    pages = explorer_pages(fresh_database_url)
    assert len(pages) == 12
    with TestClient(create_app(settings), base_url="http://explorer.local") as client:
        sign_in(client, email)
        answers = {page: client.get(page) for page in pages}
    assert {page: r.status_code for page, r in answers.items()} == dict.fromkeys(pages, 200), {
        page: r.text[:300] for page, r in answers.items() if r.status_code != 200
    }
    assert 'class="type">' in answers[pages[5]].text, "the log from a time on shows the events since then"
