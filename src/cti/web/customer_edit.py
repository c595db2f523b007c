"""Editing a customer file from the desktop (`PATCH /api/customers/{id}`): only the fields given
change; `phones`, when given, becomes the whole list. Every logged-in role may, as every role may
create one (docs/security.md: an agent keeps the files of the callers they handle right)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import structlog
from aiohttp import web
from pydantic import StringConstraints

from cti.web.api import RequestModel, body_of, operation
from cti.web.errors import ApiError
from cti.web.models import Customer
from cti.web.server import CTX, principal_of

log = structlog.get_logger(__name__)


def _text(n: int) -> Any:
    return Annotated[str, StringConstraints(max_length=n)] | None


class CustomerChange(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "name": "'name' is a non-empty string of at most 200 characters",
        "phones": "'phones' is a list of numbers",
    }
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    account: _text(64) = None  # type: ignore[valid-type]
    address: _text(400) = None  # type: ignore[valid-type]
    notes: _text(4000) = None  # type: ignore[valid-type]
    phones: list[Annotated[str, StringConstraints(max_length=40)]] | None = None


@operation(
    "change a customer file (only the fields given; phones, when given, is the whole list)",
    response=Customer,
    body=CustomerChange,
    bodiless="bad-json",
    errors=(404, 503),
    tag="customers",
)
async def edit_customer(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    who = principal_of(request)
    if ctx.directory is None:
        raise ApiError("no customer directory", status=503, error_id="directory-unavailable")
    try:
        customer_id = int(request.match_info["id"])
    except ValueError:
        raise ApiError("'id' must be an integer", {"field": "id"}, error_id="bad-field") from None
    body = await body_of(request, CustomerChange)
    given = body.model_dump(exclude_unset=True)
    if "name" in given and given["name"] is None:
        del given["name"]
    customer = await ctx.directory.update_customer(customer_id, **given)
    log.info("customer changed", agent=who.username, customer_id=customer_id, fields=sorted(given))
    return web.json_response(customer.to_json())


EDIT_ROUTES = [web.patch("/api/customers/{id}", edit_customer)]
