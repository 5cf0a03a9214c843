"""Input checks for the finder routes, with Clearout's own (Joi) messages.

Used by the gateway before it spends an upstream call, and by the sandbox to
answer as Clearout does.  Like Joi with its default `convert: true`, numeric
strings are accepted for numbers and "true"/"false" for booleans.
"""

from __future__ import annotations

from typing import Any

import orjson
from cachetools import LRUCache

from gateway.errors import ValidationFailed
from gateway.lookup.request import InstantRequest

MIN_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 180_000
DEFAULT_TIMEOUT_MS = 30_000

# Field lengths, generous for any real input: the longest personal names on
# record run to a few hundred characters, a host name is at most 253 (a
# pasted URL a little more), and Clearout's ids are 24 hex digits.  They
# bound the work every later step does (normalization, cache keys, logs).
MAX_NAME_CHARS = 512
MAX_DOMAIN_CHARS = 1024
MAX_ID_CHARS = 128


def not_an_object(location: str = "body") -> ValidationFailed:
    return ValidationFailed("value", location, '"value" must be of type object', "object.base")


def required_string(
    payload: dict[str, Any], field: str, location: str, max_chars: int = MAX_ID_CHARS
) -> str:
    value = payload.get(field)
    if value is None:
        raise ValidationFailed(field, location, f'"{field}" is required', "any.required")
    if not isinstance(value, str):
        raise ValidationFailed(field, location, f'"{field}" must be a string', "string.base")
    if not value.strip():
        raise ValidationFailed(
            field, location, f'"{field}" is not allowed to be empty', "any.empty"
        )
    if len(value) > max_chars:
        raise ValidationFailed(
            field,
            location,
            f'"{field}" length must be less than or equal to {max_chars} characters long',
            "string.max",
        )
    return value


def _timeout(payload: dict[str, Any]) -> int:
    raw = payload.get("timeout")
    if raw is None:
        return DEFAULT_TIMEOUT_MS
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or value != value:  # NaN is not a number either
        raise ValidationFailed("timeout", "body", '"timeout" must be a number', "number.base")
    if value < MIN_TIMEOUT_MS:
        raise ValidationFailed(
            "timeout",
            "body",
            f'"timeout" must be greater than or equal to {MIN_TIMEOUT_MS}',
            "number.min",
        )
    if value > MAX_TIMEOUT_MS:
        raise ValidationFailed(
            "timeout",
            "body",
            f'"timeout" must be less than or equal to {MAX_TIMEOUT_MS}',
            "number.max",
        )
    return int(value)


def _queue(payload: dict[str, Any]) -> bool:
    raw = payload.get("queue", True)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ValidationFailed("queue", "body", '"queue" must be a boolean', "boolean.base")


PARSED_CACHE_SIZE = 65536
# Only small bodies are remembered: a valid body may carry up to 64 KiB of
# ignored fields, and 65 536 of those would be 4 GiB.  Real ones are ~100 bytes.
PARSED_BODY_MAX = 1024
_PARSED: LRUCache[bytes, InstantRequest] = LRUCache(PARSED_CACHE_SIZE)


def instant_request_from_bytes(raw: bytes) -> InstantRequest:
    """Parse and validate an instant body, memoized on its exact bytes.

    Callers repeat the same bodies (that is why there is a cache); parsing
    and validating them again is pure work with the same result.  Only valid
    bodies are remembered, in a bounded map.
    """
    known = _PARSED.get(raw)
    if known is not None:
        return known
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed(
            "value", "body", '"value" must be valid JSON of type object', "object.base"
        ) from None
    parsed = instant_request(payload)
    if len(raw) <= PARSED_BODY_MAX:
        _PARSED[raw] = parsed
    return parsed


def instant_request(payload: Any) -> InstantRequest:
    if not isinstance(payload, dict):
        raise not_an_object()
    return InstantRequest(
        name=required_string(payload, "name", "body", MAX_NAME_CHARS),
        domain=required_string(payload, "domain", "body", MAX_DOMAIN_CHARS),
        timeout_ms=_timeout(payload),
        queue=_queue(payload),
    )


def list_id_in_body(payload: Any) -> str:
    if not isinstance(payload, dict):
        raise not_an_object()
    return required_string(payload, "list_id", "body").strip()


def query_id(query: dict[str, str], field: str) -> str:
    return required_string(dict(query), field, "query").strip()


def optional_flag(payload: dict[str, Any], field: str) -> bool:
    raw = payload.get(field, False)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ValidationFailed(field, "body", f'"{field}" must be a boolean', "boolean.base")
