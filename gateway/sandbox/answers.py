"""The shapes the sandbox answers failures in, as Clearout does.

A refusal is `{"status": "failed", "error": {"code", "message", "additional_info"?}}`,
usually with HTTP 200; invalid input is Clearout's Joi shape, HTTP 400 with `reasons` and
no `code`, which is what handlers get by raising `ValidationFailed` (the sandbox's error
middleware renders it with `validation_failed`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import ValidationFailed


def failed(code: int, message: str, status: int = 200, **extra: Any) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if extra:
        error["additional_info"] = extra
    return web.json_response({"status": "failed", "error": error}, status=status)


def validation_failed(exc: ValidationFailed) -> web.Response:
    # Upstream's shape: no `code` in validation failures (the gateway's own adds one).
    body = {"status": "failed", "error": {"message": exc.message, "reasons": exc.reasons}}
    return web.json_response(body, status=400)


def file_required() -> ValidationFailed:
    return ValidationFailed("file", "body", '"file" is required', "any.required")


def invalid_file_type() -> web.Response:
    # Clearout's one answer for a file it cannot take: not CSV/XLSX, unreadable, too big.
    return failed(1100, "Invalid file type")
