"""structlog configuration: JSON lines by default, console for local runs.

Configured once by the CLI.  Per-request fields (request id, route, team) come
from the request's facts (`gateway.context`) and are merged into every event
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
import logging
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

from gateway import context
from gateway.context import RequestFacts

REDACTED = "[REDACTED]"
FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024

_second = -1
_second_text = ""


def _enrich(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Request fields, level, ISO-8601 UTC timestamp, and a formatted exception if any.

    One processor instead of four (structlog calls each per line).
    """
    facts = context.current()
    if facts is not None:
        event.setdefault("request_id", facts.request_id)
        event.setdefault("route", facts.route)
        event.setdefault("team", facts.team)
    event["level"] = "warning" if name == "warn" else name
    event["timestamp"] = _timestamp()
    if "exc_info" in event:
        return structlog.processors.format_exc_info(logger, name, event)
    return event


def _timestamp() -> str:
    # The date and time of day are formatted once per second.
    global _second, _second_text
    now = time.time()
    whole = int(now)
    if whole != _second:
        _second, _second_text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second_text}.{int((now - whole) * 1000):03d}Z"


def _renderer(log_format: str, secrets: tuple[str, ...]) -> structlog.types.Processor:
    """Render the event, then blank out any secret anywhere in the rendered line.

    Redacting the finished line (rather than walking every value of every
    event) catches secrets in keys, nested values and reprs alike, and costs
    one substring search per secret.
    """
    inner: Any
    if log_format == "console":
        inner = structlog.dev.ConsoleRenderer(colors=False)
    else:
        inner = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    redact = _redactor(secrets)

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> bytes:
        line = inner(logger, name, event)
        return redact(line.encode() if isinstance(line, str) else line)

    return render


def _redactor(secrets: tuple[str, ...]) -> Callable[[bytes], bytes]:
    needles = [(s.encode(), REDACTED.encode()) for s in secrets]

    def redact(data: bytes) -> bytes:
        for secret, mask in needles:
            if secret in data:
                data = data.replace(secret, mask)
        return data

    return redact


class LineSink:
    """Collects rendered lines; writes them through at once unless buffering is on."""

    def __init__(self, stream: TextIO | BinaryIO) -> None:
        self._stream = stream  # keep it alive: its buffer closes with it
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


def access(facts: RequestFacts, method: str, path: str, status: int, duration_ms: float) -> None:
    """Write one access-log line ("request" event), as every other line is rendered.

    A line per request puts this on the cache-hit path, so in JSON format the
    event is built whole and rendered and redacted here, the same fields in
    the same order as the processors would produce, without structlog's
    layers (which cost more than the rendering itself).
    """
    event = {
        "method": method, "path": path, "status": status, "duration_ms": duration_ms,
        "cache": facts.cache, "upstream_ms": facts.upstream_ms, "event": "request",
        "request_id": facts.request_id, "route": facts.route, "team": facts.team,
    }  # fmt: skip
    if _ACCESS_JSON is not None:
        event["level"] = "info"
        event["timestamp"] = _timestamp()
        SINK.write(_ACCESS_JSON(_orjson_dumps(event)))
        return
    rendered: Any = event
    for processor in _CHAIN:
        rendered = processor(None, "info", rendered)
    SINK.write(rendered)


def _orjson_dumps(event: Any, **_kw: Any) -> bytes:
    try:
        return orjson.dumps(event, default=repr)
    except orjson.JSONEncodeError:
        # A path or header can carry raw non-UTF-8 bytes (lone surrogates
        # after aiohttp's decoding), which orjson refuses: log them escaped.
        return orjson.dumps(_printable(event), default=repr)


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


_CHAIN: list[structlog.types.Processor] = [_enrich, _renderer("json", ())]
# The access log's own JSON path: the redaction of the configured secrets.
_ACCESS_JSON: Callable[[bytes], bytes] | None = _redactor(())


def configure(
    log_format: str = "json",
    secrets: Iterable[str] = (),
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    cache_loggers: bool = True,
) -> LineSink:
    """Configure structlog once per process (tests reconfigure with cache_loggers=False)."""
    global SINK, _CHAIN, _ACCESS_JSON
    SINK.flush()
    SINK = LineSink(stream or sys.stdout)
    kept = tuple(s for s in secrets if s)
    processors: list[structlog.types.Processor] = [_enrich, _renderer(log_format, kept)]
    _CHAIN = processors
    _ACCESS_JSON = _redactor(kept) if log_format == "json" else None
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
