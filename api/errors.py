"""Every error leaves the API as application/problem+json (RFC 9457), decided here.

One table maps DtqsError codes to HTTP statuses. Falcon's own errors (404 route,
405 method, 400 malformed body, 413, 415) use the same shape. An unexpected
exception is logged with the request id and answered 500 with no detail.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from dtqs.runtime import errors as E
from dtqs.runtime.errors import DtqsError, PayloadValidationError

log = logging.getLogger("dtqs.api")

PROBLEM = "application/problem+json"
#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_S = 1

#: The single DtqsError code -> HTTP status table.
STATUS = {
    E.INVALID: 400,
    E.NOT_FOUND: 404,
    E.ALREADY_EXISTS: 409,
    E.CONFLICT: 409,
    E.UNAVAILABLE: 503,
    E.TIMEOUT: 504,
    E.INTERNAL: 500,
}

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem(status: int, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://dtqs.dev/problems/{status}" if status != 500 else "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


class ProblemError(falcon.HTTPError):
    """A falcon error whose body is a problem document (with optional extra members)."""

    def __init__(
        self, status: int, detail: str | None = None, *, headers: Any = None, **extra: Any
    ):
        super().__init__(falcon.code_to_http_status(status), headers=headers)
        self.body = problem(status, detail, **extra)

    def to_dict(self, obj_type: type = dict) -> dict[str, Any]:
        return dict(self.body)


def violations(exc: PayloadValidationError) -> list[dict[str, str]]:
    return [{"pointer": v.pointer, "detail": v.message} for v in exc.violations]


def from_dtqs(exc: DtqsError) -> ProblemError:
    """The HTTP answer to a DtqsError (validation of a payload is 422, not 400)."""
    if isinstance(exc, PayloadValidationError):
        return ProblemError(422, exc.message, errors=violations(exc))
    status = STATUS.get(exc.code, 500)
    if status == 503:
        return ProblemError(503, exc.message, headers={"Retry-After": str(RETRY_AFTER_S)})
    if status == 500:
        log.error("internal error: %s", exc)
        return ProblemError(500)
    return ProblemError(status, exc.message)


def handle_dtqs(req: falcon.Request, resp: falcon.Response, exc: DtqsError, params: Any) -> None:
    raise from_dtqs(exc)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any
) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error in %s %s (request %s)", req.method, req.path,
                  req.context.get("request_id", "-"))  # fmt: skip
    raise ProblemError(500)


def serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Write every falcon.HTTPError as problem+json."""
    if isinstance(exc, ProblemError):
        body = exc.body
    else:
        status = exc.status_code
        detail = exc.description or _DEFAULT_DETAIL.get(status, "").format(req=req)
        body = problem(status, detail or None)
    from dtqs.api.media import dumps

    resp.content_type = PROBLEM
    resp.text = dumps(body)


_DEFAULT_DETAIL = {
    404: "no such endpoint: {req.path}",
    405: "method {req.method} is not allowed on {req.path}",
}


def install(app: falcon.App[Any, Any]) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(DtqsError, handle_dtqs)
    app.set_error_serializer(serialize)
