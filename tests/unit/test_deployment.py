"""What ships for deployment keeps secrets out: settings refuse weak or placeholder JWT secrets,
compose.yaml refuses to start without its secrets and writes none, the servers it runs demand
credentials (given to Chronicle through its URLs), and the image runs unprivileged with a
healthcheck and a .dockerignore that keeps secrets and local data out of the build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (
    "CHRONICLE_JWT_SECRET",
    "CHRONICLE_POSTGRES_PASSWORD",
    "CHRONICLE_APP_DB_PASSWORD",
    "CHRONICLE_NATS_PASSWORD",
    "CHRONICLE_REDIS_PASSWORD",
    "CHRONICLE_SEAL_KEY",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def chronicle_services(compose: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("chronicle")}


@pytest.mark.parametrize(
    "secret, says",
    [
        ("x" * 31, "at least 32 bytes"),
        ("change-me-to-32-or-more-random-bytes!!", "placeholder"),
        ("CHANGEME-please-0123456789abcdef0123", "placeholder"),
        ("replace-me-with-a-long-random-value-0000", "placeholder"),
        ("this-is-a-placeholder-secret-of-40-bytes", "placeholder"),
    ],
)
def test_settings_refuse_a_short_or_placeholder_jwt_secret(secret: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says) as refused:
        Settings.from_env({"CHRONICLE_JWT_SECRET": secret})
    assert "CHRONICLE_JWT_SECRET" in str(refused.value) and secret not in str(refused.value)


def test_settings_take_a_random_secret_and_the_lifetimes() -> None:
    secret = "9f0c2a7e41b35d8c6e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b"
    settings = Settings.from_env(
        {
            "CHRONICLE_JWT_SECRET": secret,
            "CHRONICLE_SESSION_MAX_AGE_S": "86400",
            "CHRONICLE_IDEMPOTENCY_KEY_TTL_S": "3600",
        }
    )
    assert (settings.jwt_secret, settings.session_max_age_s, settings.idempotency_key_ttl_s) == (secret, 86400, 3600)
    defaults = Settings.from_env({})
    assert (defaults.session_max_age_s, defaults.idempotency_key_ttl_s) == (30 * 24 * 3600, 24 * 3600)


def test_compose_refuses_to_start_without_its_secrets_and_writes_none(compose: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text()
    for name in SECRETS:
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), f"{name} has no ${{{name}:?…}} guard"
        assert not re.search(r"\$\{" + name + r":?-", text), f"{name} has a default"
    env = compose["x-chronicle"]["environment"]
    assert env["CHRONICLE_JWT_SECRET"].startswith("${CHRONICLE_JWT_SECRET:?")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${CHRONICLE_POSTGRES_PASSWORD:?"
    )
    no_variables = re.sub(r"\$\{[^}]*\}", "", text)
    assert not re.search(r"://[^/\s:@]+:[^@\s$]+@", no_variables), "a literal password in a URL"
    assert "chronicle:chronicle@" not in text


def test_compose_gives_nats_and_redis_credentials_that_chronicle_uses_through_its_urls(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    env = compose["x-chronicle"]["environment"]
    for name in ("nats-1", "nats-2", "nats-3"):
        command = services[name]["command"]
        assert command[command.index("--user") + 1] == "chronicle"
        assert command[command.index("--pass") + 1].startswith("${CHRONICLE_NATS_PASSWORD")
        assert "${CHRONICLE_NATS_PASSWORD}@" in command[command.index("--cluster") + 1], "routes authenticate too"
        assert all("${CHRONICLE_NATS_PASSWORD}@" in r for r in command[command.index("--routes") + 1].split(","))
        assert "healthz" in " ".join(services[name]["healthcheck"]["test"])
    urls = env["CHRONICLE_NATS_URL"].split(",")
    assert len(urls) == 3 and all(u.startswith("nats://chronicle:${CHRONICLE_NATS_PASSWORD") for u in urls)
    redis = services["redis"]["command"]
    assert redis[redis.index("--requirepass") + 1].startswith("${CHRONICLE_REDIS_PASSWORD")
    assert env["CHRONICLE_REDIS_URL"].startswith("redis://:${CHRONICLE_REDIS_PASSWORD")
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "${CHRONICLE_REDIS_PASSWORD}", "its healthcheck logs in"
    assert env["CHRONICLE_DATABASE_URL"].startswith("postgresql://chronicle_app:${CHRONICLE_APP_DB_PASSWORD")
    migrate = services["migrate"]["environment"]["CHRONICLE_MIGRATE_DATABASE_URL"]
    assert migrate.startswith("postgresql://chronicle:${CHRONICLE_POSTGRES_PASSWORD}@"), "only migrate is the owner"
    assert set(chronicle_services(compose)) == {"migrate", "api", "relay", "projector", "saga"}


def test_the_image_runs_unprivileged_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    instructions = [line.split()[0] for line in lines if line and not line.startswith("#")]
    assert instructions.index("USER") < instructions.index("CMD")
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert "--interval" in healthcheck
    assert any("/v1/health" in line for line in lines)


def test_dockerignore_keeps_secrets_data_and_caches_out_of_the_build() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    }
    assert {".env", ".git", ".chronicle", ".venv", "tests"} <= ignored
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
