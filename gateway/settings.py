"""Gateway settings: read once from the environment into a frozen dataclass.

Every knob the gateway has is a field here, with the environment variable that
sets it and its default.  `Settings.from_env()` casts and validates each value
and names the offending variable in its error, so a misconfigured deployment
fails at start with one line instead of misbehaving later.  Tests build
`Settings(...)` directly (or `from_env` with a plain dict) instead of patching
`os.environ`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

DEFAULT_UPSTREAM_URL = "https://api.clearout.io/v2"

RedisMode = Literal["standalone", "cluster", "sentinel"]
LogFormat = Literal["json", "console"]
CacheScope = Literal["shared", "team"]
StoreErrorPolicy = Literal["deny", "allow"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Upstream.  The token is excluded from repr so a logged or printed
    # Settings object can never carry it.
    upstream_url: str = DEFAULT_UPSTREAM_URL
    api_token: str | None = field(default=None, repr=False)
    sandbox: bool = False
    upstream_timeout_margin: float = 5.0
    upstream_timeout: float = 30.0
    upstream_bulk_timeout: float = 300.0
    upstream_retries: int = 2
    upstream_retry_budget: float = 0.1
    breaker_failures: int = 5
    breaker_open_seconds: float = 10.0

    # Backing store.
    redis_url: str | None = field(default=None, repr=False)
    redis_mode: RedisMode = "standalone"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_timeout: float = 0.25

    # Callers and operators.
    teams_file: Path | None = None
    admin_token: str | None = field(default=None, repr=False)

    # Serving.
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all interfaces
    port: int = 8080
    metrics_port: int | None = None
    log_format: LogFormat = "json"
    max_json_bytes: int = 64 * 1024
    max_bulk_bytes: int = 50 * 1024 * 1024
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    drain_delay: float = 5.0
    shutdown_grace: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    upload_timeout: float = 600.0
    keepalive_timeout: float = 75.0
    max_bulk_rows: int = 1_000_000

    # Cache.
    cache_ttl_found: int = 30 * 24 * 3600
    cache_ttl_not_found: int = 24 * 3600
    cache_scope: CacheScope = "shared"
    local_cache_ttl: float = 2.0
    local_cache_size: int = 100_000
    singleflight_lease: float = 3.0

    # Budgets.
    upstream_rpm: int | None = None
    quota_on_store_error: StoreErrorPolicy = "deny"
    price_found: int = 4
    price_role: int = 2
    price_not_found: int = 0
    queued_reservation_ttl: int = 24 * 3600

    # Background work.
    credits_poll_interval: float = 60.0
    queue_poll_interval: float = 10.0

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never leave the process (for log redaction)."""
        return tuple(s for s in (self.api_token, self.admin_token) if s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = _Env(os.environ if env is None else env)
        sandbox = e.flag("GATEWAY_SANDBOX", default=False)
        token = e.secret("CLEAROUT_API_TOKEN")
        if token is None and not sandbox:
            raise ConfigError(
                "CLEAROUT_API_TOKEN (or CLEAROUT_API_TOKEN_FILE) is not set and "
                "GATEWAY_SANDBOX is off: the gateway has no way to call Clearout"
            )
        redis_mode = e.choice("GATEWAY_REDIS_MODE", ("standalone", "cluster", "sentinel"))
        sentinels = e.host_ports("GATEWAY_REDIS_SENTINELS")
        redis_url = e.text("GATEWAY_REDIS_URL")
        if redis_mode == "sentinel" and not sentinels:
            raise ConfigError("GATEWAY_REDIS_MODE=sentinel needs GATEWAY_REDIS_SENTINELS")
        if redis_mode != "standalone" and redis_url is None and not sentinels:
            raise ConfigError(f"GATEWAY_REDIS_MODE={redis_mode} needs GATEWAY_REDIS_URL")
        teams_file = e.path("GATEWAY_TEAMS_FILE")
        if teams_file is None and not sandbox:
            raise ConfigError(
                "GATEWAY_TEAMS_FILE is not set: without teams no caller could authenticate"
            )
        upstream_url = (e.text("GATEWAY_UPSTREAM_URL") or DEFAULT_UPSTREAM_URL).rstrip("/")
        if not upstream_url.startswith(("http://", "https://")):
            raise ConfigError("GATEWAY_UPSTREAM_URL must be an http(s) URL")
        return cls(
            upstream_url=upstream_url,
            api_token=token,
            sandbox=sandbox,
            upstream_timeout_margin=e.number("GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS", 5.0),
            upstream_timeout=e.number("GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 30.0),
            upstream_bulk_timeout=e.number("GATEWAY_UPSTREAM_BULK_TIMEOUT_SECONDS", 300.0),
            upstream_retries=e.integer("GATEWAY_UPSTREAM_RETRIES", 2),
            upstream_retry_budget=e.number("GATEWAY_UPSTREAM_RETRY_BUDGET", 0.1),
            breaker_failures=e.integer("GATEWAY_BREAKER_FAILURES", 5),
            breaker_open_seconds=e.number("GATEWAY_BREAKER_OPEN_SECONDS", 10.0),
            redis_url=redis_url,
            redis_mode=cast(RedisMode, redis_mode),
            redis_sentinels=sentinels,
            redis_sentinel_master=e.text("GATEWAY_REDIS_SENTINEL_MASTER") or "mymaster",
            redis_timeout=e.number("GATEWAY_REDIS_TIMEOUT_SECONDS", 0.25),
            teams_file=teams_file,
            admin_token=e.secret("GATEWAY_ADMIN_TOKEN"),
            host=e.text("GATEWAY_HOST") or "0.0.0.0",  # noqa: S104 - see field comment
            port=e.port("GATEWAY_PORT", 8080),
            metrics_port=e.optional_port("GATEWAY_METRICS_PORT"),
            log_format=cast(LogFormat, e.choice("GATEWAY_LOG_FORMAT", ("json", "console"))),
            max_json_bytes=e.integer("GATEWAY_MAX_JSON_BYTES", 64 * 1024, minimum=1024),
            max_bulk_bytes=e.integer("GATEWAY_MAX_BULK_BYTES", 50 * 1024 * 1024, minimum=1024),
            spool_dir=e.path("GATEWAY_SPOOL_DIR") or Path(tempfile.gettempdir()),
            drain_delay=e.number("GATEWAY_DRAIN_DELAY_SECONDS", 5.0),
            shutdown_grace=e.number("GATEWAY_SHUTDOWN_GRACE_SECONDS", 30.0),
            header_timeout=e.number("GATEWAY_HEADER_TIMEOUT_SECONDS", 10.0),
            body_timeout=e.number("GATEWAY_BODY_TIMEOUT_SECONDS", 30.0),
            upload_timeout=e.number("GATEWAY_UPLOAD_TIMEOUT_SECONDS", 600.0),
            keepalive_timeout=e.number("GATEWAY_KEEPALIVE_TIMEOUT_SECONDS", 75.0),
            max_bulk_rows=e.integer("GATEWAY_MAX_BULK_ROWS", 1_000_000, minimum=1),
            cache_ttl_found=e.integer("GATEWAY_CACHE_TTL_FOUND_SECONDS", 30 * 24 * 3600, minimum=1),
            cache_ttl_not_found=e.integer(
                "GATEWAY_CACHE_TTL_NOT_FOUND_SECONDS", 24 * 3600, minimum=1
            ),
            cache_scope=cast(CacheScope, e.choice("GATEWAY_CACHE_SCOPE", ("shared", "team"))),
            local_cache_ttl=e.number("GATEWAY_LOCAL_CACHE_TTL_SECONDS", 2.0),
            local_cache_size=e.integer("GATEWAY_LOCAL_CACHE_SIZE", 100_000, minimum=0),
            singleflight_lease=e.number("GATEWAY_SINGLEFLIGHT_LEASE_SECONDS", 3.0),
            upstream_rpm=e.optional_integer("GATEWAY_UPSTREAM_RPM"),
            quota_on_store_error=cast(
                StoreErrorPolicy, e.choice("GATEWAY_QUOTA_ON_STORE_ERROR", ("deny", "allow"))
            ),
            price_found=e.integer("GATEWAY_PRICE_FOUND", 4, minimum=0),
            price_role=e.integer("GATEWAY_PRICE_ROLE", 2, minimum=0),
            price_not_found=e.integer("GATEWAY_PRICE_NOT_FOUND", 0, minimum=0),
            queued_reservation_ttl=e.integer(
                "GATEWAY_QUEUED_RESERVATION_TTL_SECONDS", 24 * 3600, minimum=60
            ),
            credits_poll_interval=e.number("GATEWAY_CREDITS_POLL_SECONDS", 60.0),
            queue_poll_interval=e.number("GATEWAY_QUEUE_POLL_SECONDS", 10.0),
        )


class _Env:
    """Typed accessors over a string mapping; every error names its key."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, key: str) -> str | None:
        value = self._env.get(key, "").strip()
        return value or None

    def secret(self, key: str) -> str | None:
        """`KEY` or the contents of the file named by `KEY_FILE` (not both)."""
        direct = self.text(key)
        file_key = f"{key}_FILE"
        path = self.text(file_key)
        if direct and path:
            raise ConfigError(f"set only one of {key} and {file_key}")
        if path is None:
            return direct
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{file_key}: {path} is empty")
        return value

    def flag(self, key: str, *, default: bool) -> bool:
        raw = self.text(key)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be 1 or 0, got {raw!r}")

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        raw = self.text(key)
        if raw is None:
            return options[0]
        if raw.lower() not in options:
            raise ConfigError(f"{key} must be one of {', '.join(options)}; got {raw!r}")
        return raw.lower()

    def number(self, key: str, default: float) -> float:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {raw!r}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.optional_integer(key)
        if value is None:
            return default
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum}, got {value}")
        return value

    def optional_integer(self, key: str) -> int | None:
        raw = self.text(key)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {raw!r}") from None

    def port(self, key: str, default: int) -> int:
        value = self.optional_port(key)
        return default if value is None else value

    def optional_port(self, key: str) -> int | None:
        value = self.optional_integer(key)
        if value is not None and not 0 <= value <= 65535:
            raise ConfigError(f"{key} must be a TCP port (0-65535), got {value}")
        return value

    def path(self, key: str) -> Path | None:
        raw = self.text(key)
        return Path(raw) if raw else None

    def host_ports(self, key: str) -> tuple[tuple[str, int], ...]:
        raw = self.text(key)
        if raw is None:
            return ()
        pairs = []
        for item in raw.split(","):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{key} must be host:port[,host:port...], got {item!r}")
            pairs.append((host, int(port)))
        return tuple(pairs)
