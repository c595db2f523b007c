"""The REST API's OpenAPI 3.1 description, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

ERROR = {
    "type": "object",
    "required": ["error_id", "message", "details"],
    "properties": {
        "error_id": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
}


def _op(
    summary: str,
    ok: str = "200",
    body: dict[str, Any] | None = None,
    params: list[str] | None = None,
    errors: tuple[str, ...] = ("400", "401", "403", "404"),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
        }
        | {
            code: {
                "description": "error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for code in errors
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ]
    return op


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


STR = {"type": "string"}
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cti",
        "version": "1",
        "description": "CTI middleware for Asterisk call centres. "
        "Every endpoint but /healthz, /api/login and this document needs a session "
        "(bearer token or the cti_session cookie). WebSocket protocol: docs/websocket.md.",
    },
    "components": {
        "schemas": {"Error": ERROR},
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "cti_session"},
        },
    },
    "security": [{"bearer": []}, {"cookie": []}],
    "paths": {
        "/healthz": {
            "get": _op("liveness and AMI link state (503 when a link is down)", errors=("503",))
            | {"security": []}
        },
        "/api/login": {
            "post": _op(
                "log in; returns a token and sets the session cookie",
                body=_obj(username=STR, password=STR),
                errors=("400", "401", "429"),
            )
            | {"security": []}
        },
        "/api/logout": {"post": _op("log out")},
        "/api/me": {"get": _op("who am I")},
        "/api/tickets": {"get": _op("my open tickets (supervisors: ?agent=NAME)")},
        "/api/tickets/{id}": {"get": _op("one ticket with its chronometer", params=["id"])},
        "/api/tickets/{id}/{action}": {
            "post": _op(
                "qualify | hold | resume | resolve | reopen",
                params=["id", "action"],
                body=_obj(category=STR, notes=STR),
                errors=("400", "401", "403", "404", "409"),
            )
        },
        "/api/customers": {
            "get": _op("search customers (?q= name, account or number)"),
            "post": _op(
                "create a customer (optionally for the call being handled)",
                ok="201",
                body=_obj(
                    name=STR,
                    phones={"type": "array", "items": STR},
                    account=STR,
                    address=STR,
                    notes=STR,
                    server=STR,
                    linkedid=STR,
                ),
            ),
        },
        "/api/customers/lookup": {"get": _op("look a caller number up (as the screen pop does)")},
        "/api/customers/{id}": {"get": _op("one customer file", params=["id"])},
        "/api/customers/{id}/history": {"get": _op("the customer's calls and tickets", params=["id"])},
        "/api/calls/{server}/{linkedid}/customer": {
            "post": _op(
                "the customer the agent picked for this call",
                params=["server", "linkedid"],
                body=_obj(customer_id={"type": "integer"}),
            )
        },
        "/api/agent/pause": {
            "post": _op("pause / unpause in every queue", body=_obj(paused={"type": "boolean"}, reason=STR))
        },
        "/api/agent/queues/{queue}/{action}": {
            "post": _op("login | logout of a queue", params=["queue", "action"])
        },
        "/api/agent/call": {
            "post": _op(
                "click-to-call: rings my phone, then dials the number",
                ok="202",
                body=_obj(number=STR),
                errors=("400", "401", "409", "503"),
            )
        },
        "/api/agent/hangup": {"post": _op("hang up my phone's calls", errors=("401", "409", "503"))},
    },
}


def add_paths(paths: dict[str, Any]) -> None:
    SPEC["paths"].update(paths)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)
