"""The gateway's own errors and the Clearout error envelope they become.

Handlers raise these; one middleware (`gateway.http.endpoint`) turns them into a
response shaped exactly like Clearout's own failures, so a Clearout client
needs no new error handling.  Codes 9000-9999 mark answers the gateway gave
itself (upstream codes are four digits below 9000), and every such answer
carries `X-Gateway-Error: <reason>`.

    GatewayError
     ├── Unauthorized          401  9001  unauthorized
     ├── ValidationFailed      400  9100  validation_failed  (upstream's Joi shape)
     ├── PayloadTooLarge       413  9101  payload_too_large
     ├── UnsupportedMediaType  415  9102  unsupported_media_type
     ├── RequestTimeout        408  9103  request_timeout
     ├── RouteNotFound         404  9104  not_found
     ├── MethodNotAllowed      405  9105  method_not_allowed
     ├── BadRequest            400  9106  bad_request        (malformed HTTP or multipart)
     ├── HeadersTooLarge       431  9107  headers_too_large
     ├── QuotaExceeded         402  9200  quota_exceeded
     ├── RateLimited           429  9201  rate_limited
     ├── UpstreamBusy          429  9202  upstream_rate_limited
     ├── AdminDisabled         404  9300  admin_disabled
     ├── LinkRefused           403  9301  link_refused       (a result link bad or expired)
     ├── StoreUnavailable      503  9400  store_unavailable
     ├── UpstreamUnavailable   503  9500  upstream_unavailable
     ├── UpstreamTimeout       503  9501  upstream_timeout
     └── UpstreamCircuitOpen   503  9502  upstream_circuit_open
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class GatewayError(Exception):
    # Class-level defaults; an instance may carry another status (aiohttp's
    # own HTTP errors are translated that way).
    status: int = 500
    code: int = 9000
    reason: str = "internal_error"
    # Set when the error is about one team's own budget (quota, pace, its
    # store check), so requests of other teams coalesced onto it can tell.
    team: str | None = None

    def __init__(
        self,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        additional_info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.additional_info = dict(additional_info or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.additional_info:
            error["additional_info"] = self.additional_info
        return {"status": "failed", "error": error}

    def response_headers(self) -> dict[str, str]:
        """The headers of this error's answer (`X-Gateway-Error` and any extra ones)."""
        return {"X-Gateway-Error": self.reason, **self.headers}


class Unauthorized(GatewayError):
    status, code, reason = 401, 9001, "unauthorized"


class ValidationFailed(GatewayError):
    """Bad input, answered in the upstream's own validation shape.

    Clearout validates with Joi and answers 400 with a `reasons` list; the
    gateway answers the same way (plus its own `code`) so client code that
    reads `reasons` keeps working.
    """

    status, code, reason = 400, 9100, "validation_failed"

    def __init__(self, field: str, location: str, message: str, joi_type: str) -> None:
        super().__init__("validation failed")
        self.reasons: list[dict[str, Any]] = [
            {"field": [field], "location": location, "messages": [message], "types": [joi_type]}
        ]

    def body(self) -> dict[str, Any]:
        return {
            "status": "failed",
            "error": {"code": self.code, "message": self.message, "reasons": self.reasons},
        }


class PayloadTooLarge(GatewayError):
    status, code, reason = 413, 9101, "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status, code, reason = 415, 9102, "unsupported_media_type"


class RequestTimeout(GatewayError):
    status, code, reason = 408, 9103, "request_timeout"


class BadRequest(GatewayError):
    status, code, reason = 400, 9106, "bad_request"


class HeadersTooLarge(GatewayError):
    status, code, reason = 431, 9107, "headers_too_large"


class RouteNotFound(GatewayError):
    status, code, reason = 404, 9104, "not_found"


class MethodNotAllowed(GatewayError):
    status, code, reason = 405, 9105, "method_not_allowed"


class QuotaExceeded(GatewayError):
    status, code, reason = 402, 9200, "quota_exceeded"


class RateLimited(GatewayError):
    status, code, reason = 429, 9201, "rate_limited"


class UpstreamBusy(GatewayError):
    status, code, reason = 429, 9202, "upstream_rate_limited"


class AdminDisabled(GatewayError):
    status, code, reason = 404, 9300, "admin_disabled"


class LinkRefused(GatewayError):
    status, code, reason = 403, 9301, "link_refused"


class StoreUnavailable(GatewayError):
    status, code, reason = 503, 9400, "store_unavailable"


class UpstreamUnavailable(GatewayError):
    status, code, reason = 503, 9500, "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status, code, reason = 503, 9501, "upstream_timeout"


class UpstreamCircuitOpen(GatewayError):
    status, code, reason = 503, 9502, "upstream_circuit_open"

