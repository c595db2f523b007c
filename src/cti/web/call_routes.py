"""REST resources of the call controls on the agent's own live call (`calls/controls.py`).

Object-level rule (docs/security.md): every control acts on a channel of the caller's own
interfaces and devices, found in Asterisk's channel list; no parameter names a channel, a call
or another agent's phone. A supervisor is an agent here (their own phone); their actions on
other agents' calls (listen, whisper, barge) are separate routes.
"""

from __future__ import annotations

from aiohttp import web

from cti.calls.controls import AgentCall, CallControls, ControlRefused, Phone, TransferPlan
from cti.directory.numbers import normalize
from cti.web.api import body_of, operation
from cti.web.auth import Principal
from cti.web.call_models import (
    Callback,
    Callbacks,
    CallControl,
    Colleague,
    Dtmf,
    NewCallback,
    OutboundToday,
    RunningCampaign,
    RunningCampaigns,
    ScheduledCallback,
    Transfer,
    TransferTargets,
)
from cti.web.models import NoBody
from cti.web.server import CTX, WebContext, principal_of

ERRORS = (404, 409, 503)


def _controls(ctx: WebContext, phone: Phone) -> CallControls:
    """The controls on the server the agent's phone is on (its live call's, calls/pbxs.py)."""
    if ctx.actions is None:
        raise ControlRefused("no AMI link for call controls", "ami-unavailable", 503)
    return CallControls(ctx.actions.link_for(phone))


def _phone(principal: Principal) -> Phone:
    return Phone(tuple(principal.interfaces), tuple(principal.devices))


async def _my_call(request: web.Request) -> tuple[CallControls, AgentCall, Principal]:
    ctx = request.app[CTX]
    principal = principal_of(request)
    phone = _phone(principal)
    controls = _controls(ctx, phone)
    return controls, await controls.find(phone), principal


def _done(
    action: str, controls: CallControls, call: AgentCall, channel: str, target: str | None = None
) -> web.Response:
    # The call is its server and its linkedid: two PBXs may name two calls alike.
    server = getattr(getattr(controls.link, "server", None), "name", None)
    reply = CallControl(
        ok=True, action=action, server=server, linkedid=call.linkedid, channel=channel, target=target
    )
    return web.json_response(reply.model_dump())


@operation("hang up my live call", response=CallControl, body=NoBody, errors=ERRORS, tag="agent")
async def hangup(request: web.Request) -> web.Response:
    await body_of(request, NoBody)
    controls, call, _ = await _my_call(request)
    await controls.hangup(call)
    return _done("hangup", controls, call, call.phone.name)


def _destination(ctx: WebContext, controls: CallControls, body: Transfer, me: Principal) -> tuple[str, str]:
    kind, value = body.target.kind, body.target.value
    if kind == "agent":
        colleague = ctx.users.principal(value)
        if colleague is None or colleague.username == me.username:
            raise ControlRefused(f"no such colleague: {value!r}", "no-such-target", 404)
        return controls.plan.agent(Phone(tuple(colleague.interfaces), tuple(colleague.devices)))
    if kind == "queue":
        return controls.plan.queue(value, _phone(me))
    number = normalize(value, getattr(ctx, "region", "FR"))
    if number.e164 is None:
        raise ControlRefused("not a phone number we can dial", "bad-number", 400, number=value)
    return controls.plan.number(number.e164, _phone(me))


@operation(
    "transfer my live call: blind, or attended (a consultation leg, then complete or cancel)",
    response=CallControl,
    body=Transfer,
    bodiless="bad-json",
    errors=(400, *ERRORS),
    tag="agent",
    description="The target is a colleague (username), a queue or a number. Attended: the caller "
    "waits while the agent talks to the target; POST .../transfer/complete hands the caller "
    "over, .../transfer/cancel brings the agent back to the caller.",
)
async def transfer(request: web.Request) -> web.Response:
    body = await body_of(request, Transfer)
    controls, call, principal = await _my_call(request)
    context, exten = _destination(request.app[CTX], controls, body, principal)
    if body.mode == "blind":
        await controls.blind_transfer(call, context, exten)
    else:
        await controls.attended_transfer(call, context, exten)
    return _done(f"transfer.{body.mode}", controls, call, call.member.name, f"{exten}@{context}")


@operation(
    "complete or cancel the attended transfer in progress",
    response=CallControl,
    body=NoBody,
    path={"step": {"enum": ["complete", "cancel"]}},
    errors=ERRORS,
    tag="agent",
)
async def transfer_step(request: web.Request) -> web.Response:
    await body_of(request, NoBody)
    step = request.match_info["step"]
    if step not in ("complete", "cancel"):
        raise ControlRefused(f"no transfer step {step!r}", "unknown-action", 404)
    controls, call, _ = await _my_call(request)
    if step == "complete":
        await controls.complete_transfer(call)
        return _done("transfer.complete", controls, call, call.phone.name)
    await controls.cancel_transfer(call)
    return _done("transfer.cancel", controls, call, call.member.name)


@operation(
    "send DTMF digits on my live call (as if keyed on my phone)",
    response=CallControl,
    body=Dtmf,
    bodiless="bad-json",
    errors=(400, *ERRORS),
    tag="agent",
)
async def dtmf(request: web.Request) -> web.Response:
    digits = (await body_of(request, Dtmf)).digits
    controls, call, _ = await _my_call(request)
    await controls.dtmf(call, digits)
    return _done("dtmf", controls, call, call.phone.name, digits)


@operation("whom I can transfer to: colleagues and queues", response=TransferTargets, tag="agent")
async def targets(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    me = principal_of(request)
    colleagues = [
        Colleague(username=p.username, display_name=p.display_name or p.username, role=p.role)
        for p in sorted(ctx.users.users(), key=lambda p: p.username)
        if p.username != me.username and (p.interfaces or p.devices)
    ]
    queues = sorted(TransferPlan().queue_extens)
    return web.json_response(TransferTargets(colleagues=colleagues, queues=queues).model_dump())


@operation(
    "the campaigns running now (name, mode, queue): what an agent may preview",
    response=RunningCampaigns,
    tag="agent",
)
async def running_campaigns(request: web.Request) -> web.Response:
    from cti.dialer.store import list_campaigns

    principal_of(request)
    found = await list_campaigns(request.app[CTX].users.engine)
    rows = [
        RunningCampaign(name=c.name, dial_mode=c.dial_mode, queue=c.queue)
        for c in found
        if c.state == "running"
    ]
    return web.json_response(RunningCampaigns(campaigns=rows).model_dump())


@operation(
    "schedule a callback (date and time, number, note) for me or for the team",
    response=ScheduledCallback,
    status=201,
    body=NewCallback,
    bodiless="bad-json",
    errors=(400,),
    tag="agent",
    description="The number joins the centre's callback campaign (rappels-clients): first in line once "
    "due, judged by the calling-hours rules, dialled by the dialer.",
)
async def schedule_callback(request: web.Request) -> web.Response:
    from datetime import datetime

    from cti.dialer.callbacks import schedule

    ctx = request.app[CTX]
    me = principal_of(request)
    body = await body_of(request, NewCallback)
    number = normalize(body.number, getattr(ctx, "region", "FR"))
    if number.e164 is None:
        raise ControlRefused("not a phone number we can dial", "bad-number", 400, number=body.number)
    try:
        at = datetime.fromisoformat(body.at.replace("Z", "+00:00"))
    except ValueError:
        raise ControlRefused("'at' is an ISO-8601 instant", "bad-callback", 400, field="at") from None
    done = await schedule(
        ctx.users.engine,
        number.e164,
        body.number,
        at,
        me.username,
        for_me=body.for_me,
        note=body.note,
        name=body.name,
    )
    return web.json_response(ScheduledCallback.model_validate(done).model_dump(), status=201)


@operation("my callbacks to make, and the team's, soonest first", response=Callbacks, tag="agent")
async def my_callbacks(request: web.Request) -> web.Response:
    from cti.dialer.callbacks import upcoming

    me = principal_of(request)
    ctx = request.app[CTX]
    found = await upcoming(ctx.users.engine, me.username, grace_s=ctx.callback_grace_s)
    return web.json_response(Callbacks(callbacks=[Callback.model_validate(c) for c in found]).model_dump())


@operation(
    "my outbound figures today: calls qualified, contacts argued, conversion",
    response=OutboundToday,
    tag="agent",
)
async def outbound_today(request: web.Request) -> web.Response:
    from datetime import datetime

    from cti.stats.agent_outbound import outbound_figures

    me = principal_of(request)
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    figures = await outbound_figures(request.app[CTX].users.engine, me.username, midnight)
    return web.json_response(OutboundToday.model_validate(figures).model_dump())


CALL_ROUTES = [
    web.post("/api/agent/call/hangup", hangup),
    web.post("/api/agent/call/transfer", transfer),
    web.post("/api/agent/call/transfer/{step}", transfer_step),
    web.post("/api/agent/call/dtmf", dtmf),
    web.get("/api/agent/transfer-targets", targets),
    web.get("/api/agent/campaigns", running_campaigns),
    web.post("/api/agent/callbacks", schedule_callback),
    web.get("/api/agent/callbacks", my_callbacks),
    web.get("/api/agent/outbound-today", outbound_today),
]
