"""Call scripts (docs/desktop.md): every desktop reads them (`GET /api/scripts`), supervisors
set or drop a queue's or campaign's script (`PUT|DELETE /api/floor/scripts/{key}`)."""

from __future__ import annotations

from typing import Annotated, ClassVar

import structlog
from aiohttp import web
from pydantic import Field, StringConstraints

from cti.callscripts import drop_script, load_scripts, save_script
from cti.web.api import RequestModel, ResponseModel, body_of, operation
from cti.web.errors import ApiError, NotFound
from cti.web.models import NoBody, Ok
from cti.web.server import CTX, principal_of, require

log = structlog.get_logger(__name__)
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Key = r"^(\*|[A-Za-z0-9._-]{1,64})$"


class Phase(RequestModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
    prompts: list[Line] = Field(max_length=12)


class Typology(RequestModel):
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
    category: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]


class Script(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "phases": "'phases' is 1 to 8 of {name, prompts}",
        "typologies": "'typologies' is at most 20 of {label, category}",
    }
    phases: list[Phase] = Field(min_length=1, max_length=8)
    typologies: list[Typology] = Field(default_factory=list, max_length=20)


class PhaseOut(ResponseModel):
    name: str
    prompts: list[str]


class TypologyOut(ResponseModel):
    label: str
    category: str


class ScriptOut(ResponseModel):
    phases: list[PhaseOut]
    typologies: list[TypologyOut]


class Scripts(ResponseModel):
    scripts: dict[str, ScriptOut]


def _key(request: web.Request) -> str:
    import re

    key = request.match_info["key"]
    if not re.match(Key, key):
        raise ApiError(
            "a script key is a queue or campaign name, or *", {"field": "key"}, error_id="bad-field"
        )
    return key


@operation(
    "the call scripts supervisors set, by queue or campaign (* for the others)", response=Scripts, tag="agent"
)
async def list_scripts(request: web.Request) -> web.Response:
    principal_of(request)
    scripts = await load_scripts(request.app[CTX].users.engine)
    return web.json_response(Scripts.model_validate({"scripts": scripts}).model_dump())


@operation(
    "set the call script of a queue or campaign (* for the others)",
    response=Ok,
    body=Script,
    bodiless="bad-json",
    path={"key": {"type": "string", "pattern": Key}},
    errors=(400, 403),
    tag="floor",
)
async def put_script(request: web.Request) -> web.Response:
    me = require(request, "supervisor")
    key = _key(request)
    body = await body_of(request, Script)
    await save_script(request.app[CTX].users.engine, key, body.model_dump(), me.username)
    log.info("call script set", by=me.username, key=key)
    return web.json_response({"ok": True})


@operation(
    "drop a queue's or campaign's call script (back to the shipped charter)",
    response=Ok,
    body=NoBody,
    path={"key": {"type": "string", "pattern": Key}},
    errors=(400, 403, 404),
    tag="floor",
)
async def delete_script(request: web.Request) -> web.Response:
    me = require(request, "supervisor")
    key = _key(request)
    await body_of(request, NoBody)
    if not await drop_script(request.app[CTX].users.engine, key):
        raise NotFound(f"no script for {key!r}", {"key": key}, error_id="no-script")
    log.info("call script dropped", by=me.username, key=key)
    return web.json_response({"ok": True})


SCRIPT_ROUTES = [
    web.get("/api/scripts", list_scripts),
    web.put("/api/floor/scripts/{key}", put_script),
    web.delete("/api/floor/scripts/{key}", delete_script),
]
