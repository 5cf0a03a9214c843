"""structlog configuration: JSON lines by default, console for local runs.

Configured once by the CLI.  A request's id, route and team are bound into
contextvars by the middleware, so every line logged while serving it carries
them.  A last-line-of-defence processor replaces any secret the process holds
(upstream token, admin token) wherever it would appear in an event, so even a
careless `log.info(..., headers=...)` cannot leak it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"


def _redactor(secrets: tuple[str, ...]) -> structlog.types.Processor:
    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    def redact(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if secrets:
            for key, value in event.items():
                if not isinstance(value, int | float | bool | type(None)):
                    event[key] = scrub(value)
        return event

    return redact


def configure(
    log_format: str = "json",
    secrets: Iterable[str] = (),
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """Configure structlog once per process (tests reconfigure with cache_loggers=False)."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redactor(tuple(s for s in secrets if s)),
    ]
    if log_format == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors.append(structlog.processors.JSONRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=cache_loggers,
    )
