"""Gateway settings: read once from the environment into a frozen dataclass.

Every knob is one field, declared once with its environment variable, its
default, how it is read and what it means (`setting`); `Settings.from_env()`
reads them all in one loop, casts and validates each value and names the
offending variable in its error, so a misconfigured deployment fails at start
with one line instead of misbehaving later.  The same declarations feed
`clearout-gateway serve --help-settings` and the README's settings table (a
test holds the two together).  Tests build `Settings(...)` directly, or
`from_env` with a plain dict, instead of patching `os.environ`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.environment import ConfigError, Env, setting

__all__ = ["ConfigError", "Settings", "documented"]

DEFAULT_UPSTREAM_URL = "https://api.clearout.io/v2"

RedisMode = Literal["standalone", "cluster", "sentinel"]
LogFormat = Literal["json", "console"]
CacheScope = Literal["shared", "team"]
StoreErrorPolicy = Literal["deny", "allow"]


def _temp_dir() -> Path:
    return Path(tempfile.gettempdir())


@dataclass(frozen=True, slots=True)
class Settings:
    # Upstream.
    upstream_url: str = setting(
        "GATEWAY_UPSTREAM_URL", DEFAULT_UPSTREAM_URL,
        "upstream base URL, up to and including /v2", "url",
    )  # fmt: skip
    api_token: str | None = setting(
        "CLEAROUT_API_TOKEN", None, "the real upstream token (or a _FILE holding it)",
        "secret", secret=True,
    )  # fmt: skip
    sandbox: bool = setting(
        "GATEWAY_SANDBOX", False, "1: answer from the built-in sandbox upstream", "flag"
    )
    upstream_timeout_margin: float = setting(
        "GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS", 5.0,
        "instant lookups wait the caller's timeout plus this", "number",
    )  # fmt: skip
    upstream_timeout: float = setting(
        "GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 30.0, "timeout of other upstream calls", "number"
    )
    upstream_bulk_timeout: float = setting(
        "GATEWAY_UPSTREAM_BULK_TIMEOUT_SECONDS", 300.0,
        "timeout of a bulk upload to upstream", "number",
    )  # fmt: skip
    upstream_retries: int = setting(
        "GATEWAY_UPSTREAM_RETRIES", 2, "retries of a call that cannot charge twice", "integer"
    )
    upstream_retry_budget: float = setting(
        "GATEWAY_UPSTREAM_RETRY_BUDGET", 0.1,
        "retries allowed as a fraction of upstream calls (plus 1/s)", "number",
    )  # fmt: skip
    breaker_failures: int = setting(
        "GATEWAY_BREAKER_FAILURES", 5,
        "consecutive upstream failures that open the circuit breaker (0: off)", "integer",
    )  # fmt: skip
    breaker_open_seconds: float = setting(
        "GATEWAY_BREAKER_OPEN_SECONDS", 10.0, "how long the breaker stays open before a probe",
        "number",
    )  # fmt: skip

    # Backing store.
    redis_url: str | None = setting(
        "GATEWAY_REDIS_URL", None,
        "Redis for cache, quotas, ownership (or a _FILE holding it); unset: in-process memory",
        "secret", secret=True,
    )  # fmt: skip
    redis_mode: RedisMode = setting(
        "GATEWAY_REDIS_MODE", "standalone", "standalone, cluster or sentinel", "choice",
        choices=("standalone", "cluster", "sentinel"),
    )  # fmt: skip
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        "GATEWAY_REDIS_SENTINELS", (), "sentinel mode: host:port,host:port,...", "host_ports"
    )
    redis_sentinel_master: str = setting(
        "GATEWAY_REDIS_SENTINEL_MASTER", "mymaster", "sentinel mode: the master's name"
    )
    redis_timeout: float = setting(
        "GATEWAY_REDIS_TIMEOUT_SECONDS", 0.25,
        "Redis socket timeout (short on purpose: every Redis use has a fallback)", "number",
    )  # fmt: skip

    # Callers and operators.
    teams_file: Path | None = setting(
        "GATEWAY_TEAMS_FILE", None, "YAML teams file (required unless sandbox)", "path"
    )
    admin_token: str | None = setting(
        "GATEWAY_ADMIN_TOKEN", None, "token for /admin/ routes (or a _FILE holding it)",
        "secret", secret=True,
    )  # fmt: skip

    # Serving.
    host: str = setting(
        "GATEWAY_HOST", "0.0.0.0",  # noqa: S104 - a container listens on all interfaces
        "listen address",
    )  # fmt: skip
    port: int = setting("GATEWAY_PORT", 8080, "listen port", "port")
    metrics_port: int | None = setting(
        "GATEWAY_METRICS_PORT", None, "also serve /metrics on this port", "optional_port"
    )
    log_format: LogFormat = setting(
        "GATEWAY_LOG_FORMAT", "json", "json or console", "choice", choices=("json", "console")
    )
    max_json_bytes: int = setting(
        "GATEWAY_MAX_JSON_BYTES", 64 * 1024, "largest JSON body accepted", "integer",
        minimum=1024,
    )  # fmt: skip
    max_bulk_bytes: int = setting(
        "GATEWAY_MAX_BULK_BYTES", 50 * 1024 * 1024, "largest bulk upload accepted", "integer",
        minimum=1024,
    )  # fmt: skip
    max_bulk_rows: int = setting(
        "GATEWAY_MAX_BULK_ROWS", 1_000_000, "most data rows a bulk file may have", "integer",
        minimum=1,
    )  # fmt: skip
    spool_dir: Path = setting(
        "GATEWAY_SPOOL_DIR", _temp_dir, "where bulk uploads are spooled", "path"
    )
    public_url: str | None = setting(
        "GATEWAY_PUBLIC_URL", None,
        "the gateway's own base URL for result links (else the request's origin)", "url",
    )  # fmt: skip
    result_link_secret: str | None = setting(
        "GATEWAY_RESULT_LINK_SECRET", None,
        "key signing result links (or a _FILE); unset: derived from the upstream token",
        "secret", secret=True,
    )  # fmt: skip
    result_link_seconds: int = setting(
        "GATEWAY_RESULT_LINK_SECONDS", 300, "how long a result link works", "integer",
        minimum=1,
    )  # fmt: skip
    bulk_list_ttl: int = setting(
        "GATEWAY_BULK_LIST_TTL_SECONDS", 7 * 24 * 3600,
        "how long a gateway list, its files and its result are kept", "integer", minimum=3600,
    )  # fmt: skip
    drain_delay: float = setting(
        "GATEWAY_DRAIN_DELAY_SECONDS", 5.0,
        "after SIGTERM: not ready, still serving, for this long", "number",
    )  # fmt: skip
    shutdown_grace: float = setting(
        "GATEWAY_SHUTDOWN_GRACE_SECONDS", 30.0, "then in-flight requests get this long", "number"
    )
    header_timeout: float = setting(
        "GATEWAY_HEADER_TIMEOUT_SECONDS", 10.0,
        "a request's head must arrive within this from its first byte", "number",
    )  # fmt: skip
    body_timeout: float = setting(
        "GATEWAY_BODY_TIMEOUT_SECONDS", 30.0,
        "a JSON body must arrive within this; an upload may not stall longer", "number",
    )  # fmt: skip
    upload_timeout: float = setting(
        "GATEWAY_UPLOAD_TIMEOUT_SECONDS", 600.0, "a bulk upload must arrive within this", "number"
    )
    keepalive_timeout: float = setting(
        "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS", 75.0,
        "an idle keep-alive connection is closed after this", "number",
    )  # fmt: skip

    # Cache.
    cache_ttl_found: int = setting(
        "GATEWAY_CACHE_TTL_FOUND_SECONDS", 30 * 24 * 3600, "cache lifetime of found answers",
        "integer", minimum=1,
    )  # fmt: skip
    cache_ttl_not_found: int = setting(
        "GATEWAY_CACHE_TTL_NOT_FOUND_SECONDS", 24 * 3600, "cache lifetime of not-found answers",
        "integer", minimum=1,
    )  # fmt: skip
    cache_scope: CacheScope = setting(
        "GATEWAY_CACHE_SCOPE", "shared", "shared (teams share entries) or team", "choice",
        choices=("shared", "team"),
    )  # fmt: skip
    local_cache_ttl: float = setting(
        "GATEWAY_LOCAL_CACHE_TTL_SECONDS", 30.0, "lifetime of the in-process layer (0: off)",
        "number",
    )  # fmt: skip
    local_cache_size: int = setting(
        "GATEWAY_LOCAL_CACHE_SIZE", 100_000, "entries of the in-process layer", "integer"
    )
    singleflight_lease: float = setting(
        "GATEWAY_SINGLEFLIGHT_LEASE_SECONDS", 3.0,
        "the single-flight lease, renewed by its holder every third of it", "number",
        minimum=0.1,
    )  # fmt: skip

    # Budgets.
    upstream_rpm: int | None = setting(
        "GATEWAY_UPSTREAM_RPM", None,
        "upstream-wide instant-lookup budget per minute, shared by all replicas",
        "optional_integer", minimum=1,
    )  # fmt: skip
    quota_on_store_error: StoreErrorPolicy = setting(
        "GATEWAY_QUOTA_ON_STORE_ERROR", "deny",
        "deny or allow credit-spending requests while Redis is down", "choice",
        choices=("deny", "allow"),
    )  # fmt: skip
    price_found: int = setting("GATEWAY_PRICE_FOUND", 4, "credits per found address", "integer")
    price_role: int = setting("GATEWAY_PRICE_ROLE", 2, "credits per role address", "integer")
    price_not_found: int = setting(
        "GATEWAY_PRICE_NOT_FOUND", 0, "credits per answer without an address", "integer"
    )
    queued_reservation_ttl: int = setting(
        "GATEWAY_QUEUED_RESERVATION_TTL_SECONDS", 24 * 3600,
        "a queued lookup's reservation is refunded after this", "integer", minimum=60,
    )  # fmt: skip

    # Background work.
    credits_poll_interval: float = setting(
        "GATEWAY_CREDITS_POLL_SECONDS", 60.0,
        "how often the upstream credit balance is polled (0: never)", "number",
    )  # fmt: skip
    queue_poll_interval: float = setting(
        "GATEWAY_QUEUE_POLL_SECONDS", 10.0,
        "how often queued lookups and pending lists are polled (0: never)", "number",
    )  # fmt: skip

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never leave the process (for log redaction)."""
        redis_password = urlsplit(self.redis_url).password if self.redis_url else None
        values = (self.api_token, self.admin_token, redis_password, self.result_link_secret)
        return tuple(s for s in values if s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        reader = Env(os.environ if env is None else env)
        values = {f.name: reader.read(f.metadata, f.default) for f in fields(cls)}
        # Unset fields with a default_factory are left to build their default.
        settings = cls(**{k: v for k, v in values.items() if v is not MISSING})
        _check(settings)
        return settings


def documented() -> Iterator[tuple[str, str, Any]]:
    """(variable, meaning, default) of every setting, in declaration order."""
    for f in fields(Settings):
        default = f.default_factory() if callable(f.default_factory) else f.default
        yield f.metadata["env"], f.metadata["doc"], default


def _check(s: Settings) -> None:
    """The rules that tie settings together."""
    if s.api_token is None and not s.sandbox:
        raise ConfigError(
            "CLEAROUT_API_TOKEN (or CLEAROUT_API_TOKEN_FILE) is not set and "
            "GATEWAY_SANDBOX is off: the gateway has no way to call Clearout"
        )
    if s.redis_mode == "sentinel" and not s.redis_sentinels:
        raise ConfigError("GATEWAY_REDIS_MODE=sentinel needs GATEWAY_REDIS_SENTINELS")
    if s.redis_mode != "standalone" and s.redis_url is None and not s.redis_sentinels:
        raise ConfigError(f"GATEWAY_REDIS_MODE={s.redis_mode} needs GATEWAY_REDIS_URL")
    if s.teams_file is None and not s.sandbox:
        raise ConfigError(
            "GATEWAY_TEAMS_FILE is not set: without teams no caller could authenticate"
        )
    if not s.upstream_url.startswith(("http://", "https://")):
        raise ConfigError("GATEWAY_UPSTREAM_URL must be an http(s) URL")
