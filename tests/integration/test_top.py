"""`chronicle top --once`: one frame of the live view, read from a running stack while commands flow."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest

from infra.settings import Settings
from projections import all_projections
from tests.integration.http import Api, User, api_env

pytestmark = pytest.mark.usefixtures("pipeline")


def test_top_shows_commands_events_and_every_projection(api: Api, admin: User, settings: Settings) -> None:
    project = api.project(admin, "Watched")
    top = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "top", "--once", "--interval", "2", "--api", api.base],
        env=api_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent = 0

    def send_while_it_measures() -> None:
        nonlocal sent
        while top.poll() is None:
            assert api.post(f"/v1/projects/{project}/tasks", {"title": f"seen {sent}"}, admin).status_code == 201
            sent += 1

    sender = threading.Thread(target=send_while_it_measures)
    sender.start()
    out, err = top.communicate(timeout=60)
    sender.join()
    assert top.returncode == 0, err
    rates = re.search(r"commands/s\s+([\d,.]+)\s+events/s\s+([\d,.]+)", out)
    assert rates is not None, out
    assert float(rates.group(1).replace(",", "")) > 0 and float(rates.group(2).replace(",", "")) > 0, out
    for projection in all_projections():
        assert re.search(rf"{projection.name}\s.*\b(running|rebuilding)\b", out), (projection.name, out)
    assert sent > 0
