"""The OpenAPI document is usable, not just valid: openapi-python-client generates a typed client
from the live `/schema/openapi.json`, and that client alone registers, logs in through the OAuth2
token endpoint, creates a project and a task, and reads the task board."""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.http import Api


@pytest.fixture
def client_package(api: Api, tmp_path: Path) -> Iterator[Any]:
    document = tmp_path / "openapi.json"
    document.write_bytes(api.get("/schema/openapi.json").content)
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")  # the generated code is imported, not linted
    bin_dir = Path(sys.executable).parent
    generate = [str(bin_dir / "openapi-python-client"), "generate", "--path", str(document), "--meta", "none"]
    generated = subprocess.run(
        [*generate, "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("chronicle_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "chronicle_client" or m.startswith("chronicle_client.")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"chronicle_client.{name}")


def test_a_generated_client_goes_from_registering_to_a_task_board(
    api: Api, pipeline: None, client_package: Any
) -> None:
    models = _module("models")
    anonymous = client_package.Client(base_url=api.base, raise_on_unexpected_status=True)
    email = f"client-{uuid.uuid4().hex[:10]}@example.com"

    registered = _module("api.commands.register").sync(
        client=anonymous, body=models.RegisterBody(email=email, password="correct horse", name="Client")
    )
    assert isinstance(registered, models.CommandAccepted), registered
    form = models.TokenForm(grant_type=models.TokenFormGrantType.PASSWORD, username=email, password="correct horse")
    token = _module("api.commands.issue_token").sync(client=anonymous, body=form)
    assert isinstance(token, models.TokenPair), token
    me = client_package.AuthenticatedClient(
        base_url=api.base, token=token.access_token, raise_on_unexpected_status=True
    )

    project = _module("api.commands.create_project").sync(client=me, body=models.CreateProjectBody(name="Typed"))
    assert isinstance(project, models.CommandAccepted), project
    task = _module("api.commands.create_task").sync(
        project.id,
        client=me,
        body=models.CreateTaskBody(title="Generate a client", priority=models.Priority.HIGH, assignee_id=registered.id),
    )
    assert isinstance(task, models.CommandAccepted), task
    started = _module("api.commands.start_task").sync(task.id, client=me, if_match=f'"{task.version}"')
    assert isinstance(started, models.CommandAccepted) and started.version == task.version + 1, started

    board = _module("api.queries.get_project_board").sync(project.id, client=me, x_min_position=started.position)
    assert isinstance(board, models.Board), board
    assert board.project_id == project.id and board.total == 1
    assert (board.by_status.todo, board.by_status.in_progress, board.by_status.done) == (0, 1, 0)
    assert [(a.assignee_id, a.in_progress) for a in board.by_assignee] == [(registered.id, 1)]
