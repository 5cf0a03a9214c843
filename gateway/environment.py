"""Typed readers over the environment, for the settings (`gateway.settings`).

Each setting field says which reader turns its variable into a value
(`text`, `secret`, `flag`, `choice`, `number`, `integer`, `port`, `path`,
`host_ports`, ...); every error names the variable and what was wrong with
it.  A `secret` can also come from a file named by `<VARIABLE>_FILE` (a
Kubernetes secret mount).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def setting(env: str, default: Any, doc: str, read: str = "text", **extra: Any) -> Any:
    """A field read from `env` with `_Env.<read>`.

    `extra` may hold `minimum`, `choices` and `secret` (kept out of repr).
    """
    secret = extra.pop("secret", False)
    meta = {"env": env, "doc": doc, "read": read, "minimum": None, "choices": (), **extra}
    if callable(default):
        return field(default_factory=default, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


class Env:
    """Typed readers over a string mapping; every error names its key."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def read(self, meta: Mapping[str, Any], default: Any) -> Any:
        key = meta["env"]
        reader = getattr(self, meta["read"])
        raw = self._env.get(key, "").strip()
        if meta["read"] != "secret" and not raw:
            return default
        value = reader(key, raw, meta)
        if value is None and meta["read"] == "secret":
            return default
        minimum = meta["minimum"]
        if minimum is not None and value is not None and value < minimum:
            raise ConfigError(f"{key} must be at least {minimum:g}, got {raw}")
        return value

    def text(self, key: str, raw: str, meta: Mapping[str, Any]) -> str:
        return raw

    def url(self, key: str, raw: str, meta: Mapping[str, Any]) -> str:
        return raw.rstrip("/")

    def secret(self, key: str, raw: str, meta: Mapping[str, Any]) -> str | None:
        """`KEY` or the contents of the file named by `KEY_FILE` (not both)."""
        file_key = f"{key}_FILE"
        path = self._env.get(file_key, "").strip()
        if raw and path:
            raise ConfigError(f"set only one of {key} and {file_key}")
        if not path:
            return raw or None
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{file_key}: {path} is empty")
        return value

    def flag(self, key: str, raw: str, meta: Mapping[str, Any]) -> bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be 1 or 0, got {raw!r}")

    def choice(self, key: str, raw: str, meta: Mapping[str, Any]) -> str:
        options: tuple[str, ...] = meta["choices"]
        if raw.lower() not in options:
            raise ConfigError(f"{key} must be one of {', '.join(options)}; got {raw!r}")
        return raw.lower()

    def number(self, key: str, raw: str, meta: Mapping[str, Any]) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
        if not value >= 0:  # also refuses NaN
            raise ConfigError(f"{key} must not be negative, got {raw!r}")
        return value

    def integer(self, key: str, raw: str, meta: Mapping[str, Any]) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {raw!r}")
        return value

    optional_integer = integer

    def port(self, key: str, raw: str, meta: Mapping[str, Any]) -> int:
        value = self.integer(key, raw, meta)
        if not 0 <= value <= 65535:
            raise ConfigError(f"{key} must be a TCP port (0-65535), got {value}")
        return value

    optional_port = port

    def path(self, key: str, raw: str, meta: Mapping[str, Any]) -> Path:
        return Path(raw)

    def host_ports(
        self, key: str, raw: str, meta: Mapping[str, Any]
    ) -> tuple[tuple[str, int], ...]:
        pairs = []
        for item in raw.split(","):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{key} must be host:port[,host:port...], got {item!r}")
            pairs.append((host, int(port)))
        return tuple(pairs)

