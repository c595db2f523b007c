"""The supervisor's floor (docs/desktop.md): today's abandoned calls for a callback, and actions
on an agent — listen to, whisper to or barge into their call from the supervisor's own phone
(ChanSpy through an Originate), force a break, log them out of their queues. Supervisors and
admins only (403 otherwise)."""

from __future__ import annotations

import secrets
from datetime import datetime

from aiohttp import web

from cti.calls.controls import ControlRefused, Phone
from cti.calls.supervision import Supervision
from cti.stats.abandoned import abandoned_since
from cti.web.api import body_of, operation
from cti.web.call_models import AbandonedList, ForcePause, Member, MemberChange, Spy, Spying
from cti.web.server import CTX, WebContext, require

ERRORS = (403, 404, 409, 503)


def _supervision(ctx: WebContext, interface: str) -> Supervision:
    """Actions on the server the agent's interface is on (calls/pbxs.py). A spy's Originate goes
    there too: the supervisor's phone must be on the same PBX as the agent's."""
    if ctx.actions is None:
        raise ControlRefused("no AMI link for supervision", "ami-unavailable", 503)
    return Supervision(ctx.actions.link_for(Phone((interface,))))


@operation(
    "listen to, whisper to or barge into an agent's call from my phone (ChanSpy)",
    response=Spying,
    status=202,
    body=Spy,
    bodiless="bad-json",
    errors=ERRORS,
    tag="floor",
    description="My phone rings; once answered it hears the agent's call (listen: q), speaks to the "
    "agent alone (whisper: w) or to both (barge: B). Needs a device mapped to me (409 no-device).",
)
async def spy(request: web.Request) -> web.Response:
    me = require(request, "supervisor")
    body = await body_of(request, Spy)
    if not me.devices:
        raise ControlRefused("no phone device is configured for you", "no-device", 409)
    action_id = f"cti-spy-{secrets.token_hex(6)}"
    await _supervision(request.app[CTX], body.interface).spy(
        me.devices[0], body.interface, body.mode, action_id
    )
    reply = Spying(
        ok=True, mode=body.mode, interface=body.interface, from_device=me.devices[0], action_id=action_id
    )
    return web.json_response(reply.model_dump(), status=202)


@operation(
    "force an agent's break (or end it)", response=MemberChange, body=ForcePause, bodiless="bad-json",
    errors=ERRORS, tag="floor",
)  # fmt: skip
async def force_pause(request: web.Request) -> web.Response:
    require(request, "supervisor")
    body = await body_of(request, ForcePause)
    reason = (body.reason or "supervisor") if body.paused else None
    await _supervision(request.app[CTX], body.interface).pause(body.interface, body.paused, reason)
    return web.json_response(MemberChange(ok=True, interface=body.interface, paused=body.paused).model_dump())


@operation(
    "log an agent out of every queue", response=MemberChange, body=Member, bodiless="bad-json",
    errors=ERRORS, tag="floor",
)  # fmt: skip
async def log_out(request: web.Request) -> web.Response:
    require(request, "supervisor")
    body = await body_of(request, Member)
    queues = await _supervision(request.app[CTX], body.interface).log_out(body.interface)
    return web.json_response(MemberChange(ok=True, interface=body.interface, queues=queues).model_dump())


@operation("today's abandoned calls, each with whether the caller was reached since", response=AbandonedList,
           errors=(403,), tag="floor")  # fmt: skip
async def abandoned(request: web.Request) -> web.Response:
    require(request, "supervisor")
    now = datetime.now().astimezone()
    since = now.replace(hour=0, minute=0, second=0, microsecond=0)
    calls = await abandoned_since(request.app[CTX].users.engine, since)
    return web.json_response({"since": since.isoformat(), "calls": calls})


FLOOR_ROUTES = [
    web.post("/api/floor/spy", spy),
    web.post("/api/floor/pause", force_pause),
    web.post("/api/floor/logout", log_out),
    web.get("/api/floor/abandoned", abandoned),
]
