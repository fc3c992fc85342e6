"""Settings: read from the environment once, into one frozen object, and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DATA_DIR = ".chronicle"
DEFAULT_PORT = 8000
LIVE_VERSION_CACHE_S = 1.0
"""How long an API process trusts the live version of a projection it read (api.live_versions).
A rebuild keeps the old version for longer than this after a switch (infra.views.operations)."""
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything a Chronicle process needs to know about its surroundings.

    `namespace` isolates one deployment (or one test run) from another on shared servers:
    it prefixes the JetStream stream and subjects and every Redis key.
    """

    database_url: str | None = None
    nats_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    namespace: str = "chronicle"
    db_pool_size: int = 16
    command_threads: int = 8
    query_pool_size: int = 10
    min_position_wait_ms: int = 2000
    l1_cache_mb: int = 64
    """Each API worker's in-process cache of read-model answers (infra.views.l1); 0 turns it off."""
    order_payment_timeout_s: int = 900
    idle_in_transaction_timeout_ms: int = 5000
    log_level: str = "INFO"
    log_format: str = "console"
    metrics: bool = True
    jwt_secret: str | None = None
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 14 * 24 * 3600
    session_max_age_s: int = 30 * 24 * 3600
    idempotency_key_ttl_s: int = 24 * 3600
    explorer_session_ttl_s: int = 1800
    explorer_secure_cookies: str = "auto"
    stream_replicas: int = 1
    stream_max_age_days: int = 30
    seal_key: str | None = None
    migrate_database_url: str | None = None
    snapshot_check_rate: float = 0.05
    seal_key_file: Path | None = None
    partitions: int = 1
    """P: how many JetStream partitions the relay makes and a partitioned projection runs as."""
    # Abuse and failure limits (see the README's "Limits and failure answers").
    auth_rate_limit_per_minute: int = 300
    command_rate_limit_per_second: int = 200
    login_lockout_after: int = 10
    login_lockout_s: int = 30
    login_lockout_max_s: int = 3600
    password_hash_threads: int = 2
    password_hash_queue: int = 64
    min_position_max_waiters: int = 256
    dependency_timeout_s: float = 5.0
    cors_origins: tuple[str, ...] = ()

    @property
    def servers_configured(self) -> bool:
        return bool(self.database_url and self.nats_url and self.redis_url)

    def with_servers(self, database_url: str, nats_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, nats_url=nats_url, redis_url=redis_url)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError("CHRONICLE_DATABASE_URL is not set")
        return self.database_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        urls = {
            name: env.get(f"CHRONICLE_{name.upper()}") or None for name in ("database_url", "nats_url", "redis_url")
        }
        set_urls = [name for name, value in urls.items() if value]
        if set_urls and len(set_urls) != len(urls):
            missing = sorted(f"CHRONICLE_{n.upper()}" for n, v in urls.items() if not v)
            raise SettingsError(f"set all three server URLs or none; missing: {', '.join(missing)}")
        namespace = env.get("CHRONICLE_NAMESPACE", "chronicle")
        if not _NAMESPACE.match(namespace):
            raise SettingsError(
                "CHRONICLE_NAMESPACE must be lower-case letters, digits and '_', "
                f"starting with a letter, at most 40 characters: {namespace!r}"
            )
        return cls(
            database_url=urls["database_url"],
            nats_url=urls["nats_url"],
            redis_url=urls["redis_url"],
            data_dir=Path(env.get("CHRONICLE_DATA_DIR") or DEFAULT_DATA_DIR),
            host=env.get("CHRONICLE_HOST") or "127.0.0.1",
            port=_int(env, "CHRONICLE_PORT", DEFAULT_PORT, low=0, high=65535),
            namespace=namespace,
            db_pool_size=_int(env, "CHRONICLE_DB_POOL_SIZE", 16, low=1, high=1000),
            command_threads=_int(env, "CHRONICLE_COMMAND_THREADS", 8, low=1, high=256),
            query_pool_size=_int(env, "CHRONICLE_QUERY_POOL_SIZE", 10, low=1, high=1000),
            min_position_wait_ms=_int(env, "CHRONICLE_MIN_POSITION_WAIT_MS", 2000, low=0, high=60_000),
            l1_cache_mb=_int(env, "CHRONICLE_L1_CACHE_MB", 64, low=0, high=64 * 1024),
            order_payment_timeout_s=_int(env, "CHRONICLE_ORDER_PAYMENT_TIMEOUT_S", 900, low=1, high=30 * 24 * 3600),
            stream_replicas=_int(env, "CHRONICLE_STREAM_REPLICAS", 1, low=1, high=5),
            stream_max_age_days=_int(env, "CHRONICLE_STREAM_MAX_AGE_DAYS", 30, low=0, high=36_500),
            seal_key=env.get("CHRONICLE_SEAL_KEY") or None,
            migrate_database_url=env.get("CHRONICLE_MIGRATE_DATABASE_URL") or None,
            snapshot_check_rate=_rate(env, "CHRONICLE_SNAPSHOT_CHECK_RATE", 0.05),
            seal_key_file=Path(env["CHRONICLE_SEAL_KEY_FILE"]) if env.get("CHRONICLE_SEAL_KEY_FILE") else None,
            partitions=_int(env, "CHRONICLE_PARTITIONS", 1, low=1, high=64),
            idle_in_transaction_timeout_ms=_int(
                env, "CHRONICLE_IDLE_IN_TRANSACTION_TIMEOUT_MS", 5000, low=0, high=86_400_000
            ),
            log_level=(env.get("CHRONICLE_LOG_LEVEL") or "INFO").upper(),
            log_format=_log_format(env.get("CHRONICLE_LOG_FORMAT")),
            metrics=(env.get("CHRONICLE_METRICS") or "on").strip().lower() not in ("off", "0", "false", "no"),
            jwt_secret=_secret(env.get("CHRONICLE_JWT_SECRET")),
            access_token_ttl_s=_int(env, "CHRONICLE_ACCESS_TOKEN_TTL_S", 900, low=10, high=86_400),
            refresh_token_ttl_s=_int(
                env, "CHRONICLE_REFRESH_TOKEN_TTL_S", 14 * 24 * 3600, low=60, high=365 * 24 * 3600
            ),
            auth_rate_limit_per_minute=_int(env, "CHRONICLE_AUTH_RATE_LIMIT_PER_MINUTE", 300, low=1, high=10_000_000),
            command_rate_limit_per_second=_int(
                env, "CHRONICLE_COMMAND_RATE_LIMIT_PER_SECOND", 200, low=1, high=10_000_000
            ),
            login_lockout_after=_int(env, "CHRONICLE_LOGIN_LOCKOUT_AFTER", 10, low=1, high=1000),
            login_lockout_s=_int(env, "CHRONICLE_LOGIN_LOCKOUT_S", 30, low=1, high=86_400),
            login_lockout_max_s=_int(env, "CHRONICLE_LOGIN_LOCKOUT_MAX_S", 3600, low=1, high=30 * 86_400),
            password_hash_threads=_int(env, "CHRONICLE_PASSWORD_HASH_THREADS", 2, low=1, high=64),
            password_hash_queue=_int(env, "CHRONICLE_PASSWORD_HASH_QUEUE", 64, low=1, high=100_000),
            min_position_max_waiters=_int(env, "CHRONICLE_MIN_POSITION_MAX_WAITERS", 256, low=1, high=100_000),
            dependency_timeout_s=_int(env, "CHRONICLE_DEPENDENCY_TIMEOUT_S", 5, low=1, high=120),
            cors_origins=tuple(o.strip() for o in (env.get("CHRONICLE_CORS_ORIGINS") or "").split(",") if o.strip()),
            session_max_age_s=_int(env, "CHRONICLE_SESSION_MAX_AGE_S", 30 * 24 * 3600, low=60, high=365 * 24 * 3600),
            idempotency_key_ttl_s=_int(env, "CHRONICLE_IDEMPOTENCY_KEY_TTL_S", 24 * 3600, low=60, high=30 * 24 * 3600),
            explorer_session_ttl_s=_int(env, "CHRONICLE_EXPLORER_SESSION_TTL_S", 1800, low=60, high=12 * 3600),
            explorer_secure_cookies=_choice(env, "CHRONICLE_EXPLORER_SECURE_COOKIES", ("auto", "always", "never")),
        )

    def require_jwt_secret(self) -> str:
        if not self.jwt_secret:
            raise SettingsError("CHRONICLE_JWT_SECRET is not set (32 or more random characters)")
        return self.jwt_secret


def _log_format(value: str | None) -> str:
    fmt = (value or "console").strip().lower()
    if fmt not in ("console", "json"):
        raise SettingsError(f"CHRONICLE_LOG_FORMAT must be console or json, got {value!r}")
    return fmt


PLACEHOLDER_SECRETS = ("change-me", "changeme", "replace-me", "placeholder")
"""A JWT secret containing any of these (in any case) is a documented placeholder, never a secret:
it is refused, as the default compose.yaml once carried (`change-me-to-32-or-more-random-bytes!!`)
was readable by anyone who could mint an admin token with it."""


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (the first is the default)."""
    value = (env.get(name) or allowed[0]).strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}: {value!r}")
    return value


def _secret(value: str | None) -> str | None:
    if not value:
        return None
    if len(value.encode()) < 32:
        raise SettingsError("CHRONICLE_JWT_SECRET must be at least 32 bytes long; make one with `openssl rand -hex 32`")
    if any(placeholder in value.lower() for placeholder in PLACEHOLDER_SECRETS):
        raise SettingsError("CHRONICLE_JWT_SECRET is a placeholder, not a secret; make one with `openssl rand -hex 32`")
    return value


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number from 0 to 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} must be from 0 to 1, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value
