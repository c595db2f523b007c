"""The REST contract: each handler declares its operation (summary, request body, query, path
parameters, response, errors) with `@operation(...)`; the OpenAPI document is generated from
those declarations and the router, and the handlers read their bodies through the same models
(`body_of`), so what is documented is what is checked.

Models are pydantic (v2) models (`web/models.py`); the JSON Schemas come from pydantic's
generator (JSON Schema 2020-12, the dialect of OpenAPI 3.1). A body that does not match its
model is a 400 with the model's error id (`bad-field`, or the domain's, e.g. `bad-campaign`) and
`details.field`, in the format of `web/errors.py`: the edge checks of `web/guard.py` (JSON,
depth, NUL, integer size) still run first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from cti.web.errors import ApiError
from cti.web.guard import BODY, parse_body

M = TypeVar("M", bound="RequestModel")
H = TypeVar("H", bound=Callable[..., Any])


class RequestModel(BaseModel):
    """A request body. Strict: no type is coerced ("1" is no integer); unknown keys are ignored
    unless a model forbids them. `ERROR_ID` and `MESSAGES` keep the error ids and messages the
    handlers gave before the models."""

    model_config = ConfigDict(strict=True, extra="ignore")
    ERROR_ID: ClassVar[str] = "bad-field"
    FIELD_ERROR_IDS: ClassVar[Mapping[str, str]] = {}
    MESSAGES: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def error(cls, exc: ValidationError) -> ApiError:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        if first["type"] == "extra_forbidden":
            message = cls.MESSAGES.get("*extra*", "unknown field {field!r}").format(field=name)
        else:
            message = cls.MESSAGES.get(name) or f"{name!r}: {first['msg']}"
        return ApiError(message, {"field": name}, error_id=cls.FIELD_ERROR_IDS.get(name, cls.ERROR_ID))


class ResponseModel(BaseModel):
    """A response body: every key is declared (`additionalProperties: false`), so a key added to
    a response without its documentation fails the contract test."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel] | None = None  # the JSON answer; None: see `media`
    status: int = 200
    body: type[RequestModel] | None = None
    # Bodiless requests: "absent" reads as {} (validated like one); "bad-json" refuses them (400).
    bodiless: str = "absent"
    query: type[BaseModel] | None = None
    path: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    public: bool = False  # no session needed
    # Other answers than JSON: media type -> JSON Schema of the content.
    media: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # Other success statuses with the same content (healthz: 503 when degraded).
    also: tuple[int, ...] = ()
    tag: str = ""
    description: str = ""


ATTRIBUTE = "__cti_operation__"


def operation(summary: str, **details: Any) -> Callable[[H], H]:
    """Declare what a handler takes and answers (read by the OpenAPI generator and `body_of`)."""
    op = Operation(summary, **details)

    def mark(handler: H) -> H:
        setattr(handler, ATTRIBUTE, op)
        return handler

    return mark


def operation_of(handler: Any) -> Operation | None:
    """A handler's declaration (bound methods read their function's)."""
    found = getattr(handler, ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


async def body_of(request: web.Request, model: type[M]) -> M:
    """The request body validated by `model`, which must be the one the handler declared: the
    document and the check cannot drift apart."""
    route = request.match_info.route
    declared = operation_of(route.handler)
    if declared is None or declared.body is not model:
        raise RuntimeError(f"{route.handler!r} reads a {model.__name__} body it does not declare")
    raw = request.get(BODY)
    if not isinstance(raw, dict):
        if request.body_exists or declared.bodiless == "bad-json":
            raw = parse_body(await request.read())
        else:
            raw = {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise model.error(exc) from None
