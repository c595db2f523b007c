"""The REST API's OpenAPI 3.1 document, served at /api/openapi.json and browsable at /api/docs.

Generated from the router: every route the application registers, with the operation its handler
declares (`web/api.py`) and the JSON Schemas pydantic generates for its models (`web/models.py`).
A route whose handler declares nothing is an error at start-up, not a gap in the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from cti import __version__
from cti.web.api import Operation, operation, operation_of
from cti.web.models import Error

REF = "#/components/schemas/{model}"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STATIC = Operation(
    "the pages' scripts, styles and images (files of the package)",
    public=True,
    media={"*/*": {"type": "string", "format": "binary"}},
    path={"filename": {"type": "string"}},
    errors=(404,),
    tag="pages",
)
INFO = {
    "title": "cti",
    "version": __version__,
    "summary": "CTI middleware for Asterisk call centres",
    "description": "REST API of the desktop, the wallboard, statistics and the dialer. Every operation "
    "but the public ones needs a session: `POST /api/login` returns a token, sent as "
    "`Authorization: Bearer ...` (or the `cti_session` cookie browsers get). State-changing requests "
    "are JSON from the page's own origin. Errors are `{error_id, message, details}` "
    "(docs/security.md). The WebSocket protocol: docs/websocket.md. Metrics: docs/operations.md.",
}
STATUS_TEXT = {
    101: "switching to the WebSocket protocol",
    200: "OK",
    201: "created",
    202: "accepted: the PBX is asked",
    400: "bad input (error_id says which: bad-json, bad-field, bad-filter, bad-query...)",
    401: "no valid session (unauthenticated, bad-credentials)",
    403: "not for this role, or a request from another origin (cross-origin)",
    404: "no such object, or someone else's (answered alike)",
    408: "the body did not arrive in time",
    409: "refused in this state, or by Asterisk",
    415: "the body is not JSON (json-required)",
    429: "too many attempts (login-rate-limited)",
    503: "a dependency is unavailable (AMI link, directory, sessions, login-busy)",
}


class DocumentError(RuntimeError):
    """A route without a declared operation."""


def _path_of(route: web.AbstractRoute) -> tuple[str, Operation | None]:
    resource = route.resource
    if isinstance(resource, web.StaticResource):
        return resource.canonical.rstrip("/") + "/{filename}", STATIC
    assert resource is not None
    return resource.canonical, operation_of(route.handler)


def routes_of(app: web.Application) -> list[tuple[str, str, Operation]]:
    """(method, OpenAPI path, operation) for every route but the HEADs aiohttp adds to GETs."""
    out, missing = [], []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path, op = _path_of(route)
        if op is None:
            missing.append(f"{route.method} {path}")
        else:
            out.append((route.method, path, op))
    if missing:
        raise DocumentError(f"routes without an @operation: {', '.join(missing)}")
    return out


@dataclass
class _Schemas:
    """Every model the operations use, generated together so that shared models are one schema."""

    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = field(default_factory=list)
    refs: dict[tuple[Any, JsonSchemaMode], dict[str, Any]] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)

    def want(self, model: type[BaseModel] | None, mode: JsonSchemaMode) -> None:
        if model is not None and (model, mode) not in self.wanted:
            self.wanted.append((model, mode))

    def build(self) -> None:
        refs, defs = models_json_schema(self.wanted, ref_template=REF)
        self.refs = dict(refs)
        self.components = defs.get("$defs", {})

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return self.refs[model, mode]

    def properties(self, model: type[BaseModel]) -> tuple[dict[str, Any], set[str]]:
        schema = model.model_json_schema(ref_template=REF)
        return schema.get("properties", {}), set(schema.get("required", ()))


def _parameters(method: str, path: str, op: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    params = []
    for name in re.findall(r"\{(\w+)", path):
        schema = op.path.get(name) or ({"type": "integer"} if name == "id" else {"type": "string"})
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        properties, required = schemas.properties(op.query)
        for name, schema in properties.items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
            description = schema.pop("description", None)
            schema.pop("title", None)
            if description:
                param["description"] = description
            param["schema"] = schema
            params.append(param)
    return params


def _content(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {"schema": schemas.ref(op.response, "serialization")}
    for media, schema in op.media.items():
        content[media] = {"schema": schema}
    return content


def _responses(method: str, path: str, op: Operation, schemas: _Schemas) -> dict[str, Any]:
    content = _content(op, schemas)
    responses: dict[str, Any] = {}
    for status in (op.status, *op.also):
        answer: dict[str, Any] = {"description": STATUS_TEXT.get(status, "OK")}
        if content:
            answer["content"] = content
        responses[str(status)] = answer
    errors = set(op.errors)
    if not op.public:
        errors.add(401)
    if method in UNSAFE:
        errors.update((403, 415))
    if op.body is not None or op.query is not None or "{" in path:
        errors.add(400)
    error = {"application/json": {"schema": schemas.ref(Error, "serialization")}}
    for status in sorted(errors):
        if str(status) not in responses:
            responses[str(status)] = {"description": STATUS_TEXT.get(status, "error"), "content": error}
    return responses


def _operation(method: str, path: str, op: Operation, schemas: _Schemas) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path).rstrip('_')}",
        "summary": op.summary,
        "responses": _responses(method, path, op, schemas),
    }
    if op.tag:
        doc["tags"] = [op.tag]
    if op.description:
        doc["description"] = op.description
    params = _parameters(method, path, op, schemas)
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.bodiless == "bad-json",
            "content": {"application/json": {"schema": schemas.ref(op.body, "validation")}},
        }
    if op.public:
        doc["security"] = []
    return doc


def build_document(app: web.Application) -> dict[str, Any]:
    routes = routes_of(app)
    schemas = _Schemas()
    schemas.want(Error, "serialization")
    for _method, _path, op in routes:
        schemas.want(op.body, "validation")
        schemas.want(op.response, "serialization")
    schemas.build()
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op in sorted(routes, key=lambda r: (r[1], r[0])):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op, schemas)
    _scrape_token(paths)
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": _tags(op for _m, _p, op in routes),
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the token of POST /api/login"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "cti_session"},
                "scrapeToken": {"type": "http", "scheme": "bearer", "description": "[web] metrics_token"},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    }


def _scrape_token(paths: dict[str, dict[str, Any]]) -> None:
    metrics = paths.get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["security"] = [{"scrapeToken": []}]


TAGS = {
    "session": "logging in and out, who am I",
    "tickets": "the agent's tickets and their chronometer (docs/tickets.md)",
    "customers": "the customer directory (docs/directory.md)",
    "agent": "the agent's own phone and queues, through Asterisk",
    "floor": "the supervisor's floor: listen, whisper, barge, breaks, abandoned calls (docs/desktop.md)",
    "admin": "users and their phones, roles, sessions (the admin page)",
    "stats": "live figures and reports (docs/metrics.md)",
    "dialer": "campaigns and their contacts (docs/dialer.md)",
    "operations": "health, metrics, this document",
    "pages": "the desktop, the wallboard and their files",
}


def _tags(ops: Iterable[Operation]) -> list[dict[str, str]]:
    used = {op.tag for op in ops if op.tag}
    return [{"name": name, "description": text} for name, text in TAGS.items() if name in used]


DOCUMENT = web.AppKey("openapi", dict)


async def build_on_startup(app: web.Application) -> None:
    """Built once the router is complete: a route without an @operation stops the start."""
    app[DOCUMENT].update(build_document(app))


@operation(
    "this document (OpenAPI 3.1)",
    public=True,
    media={"application/json": {"type": "object", "description": "an OpenAPI 3.1 document"}},
    tag="operations",
)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])
