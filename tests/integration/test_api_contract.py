"""The API keeps the contract its OpenAPI document states, as an outside fuzzer finds it.

Schemathesis (its CLI, as a client's CI would run it) generates requests for every operation from
`/schema/openapi.json` — valid ones, invalid ones, methods the document does not list, requests
without the token — and follows the document's links (a project → its tasks → a task's
commands), as anonymous, member, manager and auditor. Every response must be one the document
declares, with its content type and schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from commands.base import Context
from domain.identity import Role
from infra.settings import Settings
from tests.integration.http import Api, running_api

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "negative_data_rejection,ignored_auth,unsupported_method"
)
# The contract stack answers a query's X-Min-Position wait quickly: the fuzzer sends positions far
# ahead of the log, and each would otherwise hold its request for the default two seconds.
# Its rate limits are raised too: thousands of fuzzed requests from one address are not an attack.
CONTRACT_ENV = {
    "CHRONICLE_MIN_POSITION_WAIT_MS": "100",
    "CHRONICLE_AUTH_RATE_LIMIT_PER_MINUTE": "10000000",
    "CHRONICLE_COMMAND_RATE_LIMIT_PER_SECOND": "10000000",
}
ALL_PHASES = "examples,coverage,fuzzing,stateful"
# The runs, by caller: the phases each takes. The coverage phase sends every operation its boundary
# values, wrong types and undeclared methods; fuzzing adds random ones, for the member only, to keep
# the suite lean. Public operations (`security: []`, which hash passwords: the slow part) answer
# alike whoever calls, so only the anonymous run takes them.
RUNS = {
    "anonymous": "examples,coverage,stateful",
    "member": ALL_PHASES,
    "manager": "examples,coverage,stateful",
    "auditor": "examples,coverage,stateful",
}
# Logout ends the very session whose token a run sends: the examples phase called it early, and every
# later request of the member, manager and auditor runs was a 401, so those runs tested nothing but the
# auth wall. They leave it out (the anonymous run still takes it; test_http_identity logs out for real).
SESSION_ENDING = ["Logout"]
ROLES: dict[str, Role | None] = {"member": None, "manager": Role.MANAGER, "auditor": Role.AUDITOR}


@dataclass
class Run:
    returncode: int
    output: str


@pytest.fixture(scope="module")
def contract_api(settings: Settings, pipeline: None) -> Iterator[Api]:
    with running_api(settings, **CONTRACT_ENV) as base:
        client = Api(base)
        yield client
        client.http.close()


def _headers_of(api: Api, chronicle_app: Any, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    user = api.register(f"{role} Fuzzer")
    granted = ROLES[role]
    if granted is not None:
        chronicle_app.identity.grant(Context("tests.contract", system_actor="tests"), user.id, granted)
        user = api.relogin(user)
    return user.auth


def _command(base: str, headers: dict[str, str], public: list[str], phases: str, report: Path) -> list[str]:
    args = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/schema/openapi.json"]
    args += ["--checks", CHECKS, "--phases", phases, "--max-examples", "3", "--workers", "1", "--no-shrink"]
    args += ["--seed", "20261127", "--report-dir", str(report)]
    if headers:
        args += ["--exclude-operation-id-regex", f"^({'|'.join([*public, *SESSION_ENDING])})$"]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    return args


@pytest.fixture(scope="module")
def fuzzed(contract_api: Api, chronicle_app: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The runs of `RUNS`, all at once (most of their time is waiting on the API)."""
    document = contract_api.get("/schema/openapi.json").json()
    public = [
        op["operationId"] for item in document["paths"].values() for op in item.values() if op.get("security") == []
    ]
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, phases in RUNS.items():
        folder = tmp_path_factory.mktemp(f"schemathesis-{name}")
        headers = _headers_of(contract_api, chronicle_app, name)
        args = _command(contract_api.base, headers, public, phases, folder)
        with (folder / "output.txt").open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=_env())
        started[name] = (proc, folder)
    runs = {}
    for name, (proc, folder) in started.items():
        try:
            returncode = proc.wait(timeout=500)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
        runs[name] = Run(returncode, (folder / "output.txt").read_text())
    return runs


def _env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("caller", list(RUNS))
def test_every_operation_keeps_the_documented_contract(fuzzed: dict[str, Run], caller: str) -> None:
    run = fuzzed[caller]
    assert run.returncode == 0, run.output[-20_000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.output)
    tested = re.search(r"Tested: (\d+)", run.output)
    assert selected and tested and int(tested[1]) == int(selected[1]) > 0, run.output[-3_000:]
    assert "✅ Stateful" in run.output, run.output[-3_000:]
    if caller != "anonymous":  # the caller's token held for the whole run: no operation answered only 401
        assert "401 Unauthorized (" not in run.output, run.output[-6_000:]
