"""API errors: an HTTP status, a stable `error_id` and a `details` dict, rendered by one middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


class ApiError(Exception):
    status = 400
    error_id = "bad-request"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        error_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if status is not None:
            self.status = status
        if error_id is not None:
            self.error_id = error_id


class Unauthenticated(ApiError):
    status = 401
    error_id = "unauthenticated"


class Forbidden(ApiError):
    status = 403
    error_id = "forbidden"


class NotFound(ApiError):
    status = 404
    error_id = "not-found"


def error_body(error_id: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error_id": error_id, "message": message, "details": details or {}}


def as_api_error(exc: BaseException) -> ApiError | None:
    """Domain errors (tickets, directory) carry `error_id` and `status`: render them the same way."""
    if isinstance(exc, ApiError):
        return exc
    error_id = getattr(exc, "error_id", None)
    status = (
        getattr(exc, "status", None) or getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    )
    if isinstance(error_id, str) and isinstance(status, int):
        details = getattr(exc, "details", None)
        return ApiError(
            str(exc), details if isinstance(details, dict) else {}, status=status, error_id=error_id
        )
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        api = as_api_error(exc)
        if api is None:
            log.exception("request failed", path=request.path)
            return web.json_response(error_body("internal", "internal error"), status=500)
        return web.json_response(error_body(api.error_id, api.message, api.details), status=api.status)
