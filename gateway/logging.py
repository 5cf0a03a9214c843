"""structlog configuration: JSON lines by default, console for local runs.

Configured once by the CLI.  Per-request fields (request id, route, team) live
in one context variable set by `bind_request` and merged into every event
logged while the request is served.  A last-line-of-defence processor
replaces any secret the process holds (upstream token, admin token) wherever
it would appear in an event, so even a careless `log.info(..., headers=...)`
cannot leak it.

The access log writes a line per request, so its cost is on the cache-hit
path: lines are rendered with orjson and written through `LineSink`, which
buffers while the server runs and is flushed every `FLUSH_SECONDS` by the app
(and at shutdown), instead of a write syscall per line.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

REDACTED = "[REDACTED]"
FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024

_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "gateway_request", default=None
)


def bind_request(**fields: Any) -> None:
    """Fields every log line of the current request carries (replaces the previous)."""
    _REQUEST.set(fields)


def _merge_request(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    fields = _REQUEST.get()
    if fields:
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


_second = -1
_second_text = ""


def _timestamp(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """ISO-8601 UTC with milliseconds; the date part is formatted once per second."""
    global _second, _second_text
    now = time.time()
    whole = int(now)
    if whole != _second:
        _second, _second_text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    event["timestamp"] = f"{_second_text}.{int((now - whole) * 1000):03d}Z"
    return event


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


class LineSink:
    """Collects rendered lines; writes them through at once unless buffering is on."""

    def __init__(self, stream: TextIO | BinaryIO) -> None:
        self._binary: BinaryIO | None = getattr(stream, "buffer", None)
        self._text: TextIO | None = None if self._binary is not None else stream  # type: ignore[assignment]
        self._pending = bytearray()
        self.buffering = False

    def write(self, line: bytes | str) -> None:
        data = line.encode() if isinstance(line, str) else line
        self._pending += data
        self._pending += b"\n"
        if not self.buffering or len(self._pending) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = bytes(self._pending), bytearray()
        if self._binary is not None:
            self._binary.write(data)
            self._binary.flush()
        elif self._text is not None:
            self._text.write(data.decode())
            self._text.flush()


class _SinkLogger:
    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def msg(self, message: bytes | str) -> None:
        self._sink.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


SINK = LineSink(sys.stdout)
atexit.register(lambda: SINK.flush())


def _orjson_dumps(event: Any, **_kw: Any) -> bytes:
    return orjson.dumps(event, default=repr)


def configure(
    log_format: str = "json",
    secrets: Iterable[str] = (),
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    cache_loggers: bool = True,
) -> LineSink:
    """Configure structlog once per process (tests reconfigure with cache_loggers=False)."""
    global SINK
    SINK.flush()
    SINK = LineSink(stream or sys.stdout)
    processors: list[structlog.types.Processor] = [
        _merge_request,
        structlog.processors.add_log_level,
        _timestamp,
        structlog.processors.format_exc_info,
        _redactor(tuple(s for s in secrets if s)),
    ]
    if log_format == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=_orjson_dumps))
    sink = SINK
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_args: _SinkLogger(sink),
        cache_logger_on_first_use=cache_loggers,
    )
    return sink


def sink() -> LineSink:
    return SINK
