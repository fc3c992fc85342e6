"""The OpenAPI document, as the app writes it from its routes (no servers needed to build it)."""

from __future__ import annotations

from typing import Any

import pytest

from api.app import create_app
from infra.settings import Settings

PROBLEM = {"$ref": "#/components/schemas/Problem"}
PUBLIC = {"Register", "Login", "Refresh", "IssueToken", "GetHealth"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(jwt_secret="unit-test-secret-" + "x" * 32, redis_url="redis://127.0.0.1:1/0")  # never dialled
    return create_app(settings).openapi_schema.to_schema()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_every_operation_has_a_stable_id_a_one_line_summary_and_a_503(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) and all(i[0].isupper() for i in ids)
    for method, path, op in operations(document):
        assert op["summary"] and "\n" not in op["summary"], (method, path)
        assert "Retry-After" in op["responses"]["503"]["headers"], (method, path)


def test_problems_share_one_schema_in_problem_json(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if status[0] in "45" and op["operationId"] != "GetHealth":
                content = response["content"]
                if op["operationId"] == "IssueToken" and status == "400":
                    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/OAuth2Error"}
                else:
                    assert content == {"application/problem+json": {"schema": PROBLEM}}, (method, path, status)


def test_public_operations_need_no_token_and_the_others_an_oauth2_bearer(document: dict[str, Any]) -> None:
    flows = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/v1/auth/token"
    assert document["security"] == [{"OAuth2PasswordBearer": []}]
    for _, _, op in operations(document):
        if op["operationId"] in PUBLIC:
            assert op["security"] == [], op["operationId"]
        else:
            assert "security" not in op and "401" in op["responses"], op["operationId"]
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_commands_document_their_headers_and_rate_limit(document: dict[str, Any]) -> None:
    for _, path, op in operations(document):
        if "commands" not in op["tags"]:
            continue
        assert set(op["responses"]["429"]["headers"]) >= {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining"}
        if path.startswith("/v1/auth/") and op["operationId"] != "Logout":
            continue
        success = next(r for s, r in op["responses"].items() if s.startswith("2"))
        assert {"ETag", "X-Correlation-Id", "Idempotent-Replayed"} <= set(success["headers"]), op["operationId"]
        names = {p["name"] for p in op.get("parameters", [])}
        assert "Idempotency-Key" in names, op["operationId"]
        if "412" in op["responses"]:
            assert "If-Match" in names and "ETag" in op["responses"]["412"]["headers"], op["operationId"]


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        for content in op.get("requestBody", {}).get("content", {}).values():
            assert content["schema"].get("examples"), (method, path)


def test_queries_that_read_views_take_x_min_position(document: dict[str, Any]) -> None:
    for _, path, op in operations(document):
        if "queries" in op["tags"]:
            header = next(p for p in op["parameters"] if p["name"] == "X-Min-Position")
            assert header["in"] == "header" and header["schema"]["pattern"] == "^[0-9]{1,19}$", path


def test_creating_a_project_links_to_its_tasks_and_a_task_to_its_commands(document: dict[str, Any]) -> None:
    project = document["paths"]["/v1/projects"]["post"]["responses"]["201"]["links"]
    task = document["paths"]["/v1/projects/{project_id}/tasks"]["post"]["responses"]["201"]["links"]
    assert project["CreateTask"]["parameters"] == {"project_id": "$response.body#/id"}
    assert {"StartTask", "CompleteTask", "GetTask"} <= set(task)
    ids = {op["operationId"] for _, _, op in operations(document)}
    for links in (project, task):
        assert all(link["operationId"] in ids for link in links.values())
