"""REST resources and WebSocket actions for tickets, customers and agent actions. Thin: each
handler checks its input and who may do it, calls a service, renders JSON.

Who may see and do what (docs/security.md, "Roles"):
- tickets: an agent reads and acts on their own only; someone else's ticket answers 404 exactly
  as a ticket that does not exist (its id tells nothing); supervisors and admins, every ticket;
- the customer directory: every role searches, reads and creates customer files (an agent must
  find any caller); in a file's history, the free-text notes of a ticket are shown only to the
  ticket's agent and to supervisors (the category and status to everyone);
- the customer of a call: an agent sets it only for a call that is theirs (ringing or answered
  on their desktop, or one of their tickets); another call answers 404;
- agent actions (pause, queues, click-to-call, hang-up) act on the caller's own interface and
  phone only: there is no parameter naming someone else's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from aiohttp import web

from cti.calls.controls import Phone
from cti.directory.numbers import normalize
from cti.web.api import body_of, operation
from cti.web.auth import Principal
from cti.web.errors import ApiError, NotFound
from cti.web.models import (
    ChooseCustomer,
    ClickToCall,
    Customer,
    CustomerList,
    Dialing,
    History,
    Lookup,
    LookupQuery,
    NewCustomer,
    NoBody,
    Ok,
    Pause,
    PauseReply,
    QueueMembership,
    SearchQuery,
    TicketChange,
    TicketList,
    TicketReply,
    TicketsQuery,
)
from cti.web.server import CTX, WebContext, principal_of

Reply = TypeVar("Reply")


class AgentLink(Protocol):
    """What the agent routes need from the AMI side (one server, or a router over several)."""

    async def queue_add(
        self, queue: str, interface: str, member_name: str, state_interface: str | None
    ) -> None: ...
    async def queue_remove(self, queue: str, interface: str) -> None: ...
    async def pause(self, interface: str, paused: bool, reason: str | None) -> None: ...
    # `interfaces`: the agent's member interfaces, which say which server the device is on.
    async def click_to_call(
        self, device: str, number_e164: str, caller_id: str | None, interfaces: Sequence[str] = ()
    ) -> str: ...
    async def hangup(self, device: str, interfaces: Sequence[str] = ()) -> None: ...
    # The link to the server a phone is on (for a queue login, or that has the queue).
    def link_for(self, phone: Phone, queue: str | None = None) -> Any: ...


def _actor(principal: Principal) -> Any:
    from cti.tickets import Actor

    return Actor(principal.username, principal.role)


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(f"'{name}' must be an integer", {"field": name}, error_id="bad-field") from None


# ------------------------------------------------------------------------------------ tickets
async def _ticket_reply(ctx: WebContext, view: Any) -> dict[str, Any]:
    data: dict[str, Any] = view.to_json(ctx.clock())
    data["categories"] = list(ctx.tickets.categories) if hasattr(ctx.tickets, "categories") else None
    return {"ticket": data, "now": ctx.clock()}


@operation(
    "my open tickets (supervisors: another agent's with ?agent=)",
    response=TicketList,
    query=TicketsQuery,
    errors=(403,),
    tag="tickets",
)
async def list_tickets(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = principal_of(request)
    views = await ctx.tickets.open_for_agent(
        request.query.get("agent", principal.username), _actor(principal)
    )
    return web.json_response({"tickets": [v.to_json(ctx.clock()) for v in views], "now": ctx.clock()})


async def _as_not_found(ticket_id: int, call: Awaitable[Reply]) -> Reply:
    """Someone else's ticket is answered exactly as one that does not exist: 403 for an id that
    exists and 404 for one that does not would tell an agent which ids exist."""
    from cti.tickets import TicketForbidden

    try:
        return await call
    except TicketForbidden:
        raise ApiError(
            f"no such ticket: {ticket_id}", {"ticket_id": ticket_id}, status=404, error_id="ticket-not-found"
        ) from None


@operation("one ticket with its chronometer", response=TicketReply, errors=(404,), tag="tickets")
async def get_ticket(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ticket_id = _int(request.match_info["id"], "id")
    view = await _as_not_found(ticket_id, ctx.tickets.get(ticket_id, _actor(principal_of(request))))
    return web.json_response(await _ticket_reply(ctx, view))


@operation(
    "qualify | hold | resume | resolve | reopen a ticket",
    response=TicketReply,
    body=TicketChange,
    path={"action": {"enum": ["qualify", "hold", "resume", "resolve", "reopen"]}},
    errors=(404, 409),
    tag="tickets",
)
async def ticket_action(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = principal_of(request)
    ticket_id = _int(request.match_info["id"], "id")
    action = request.match_info["action"]
    body = await body_of(request, TicketChange)
    actor = _actor(principal)
    service = ctx.tickets
    if action in ("qualify", "resolve"):
        call = getattr(service, action)(ticket_id, actor, category=body.category, notes=body.notes)
    elif action in ("hold", "resume", "reopen"):
        call = getattr(service, action)(ticket_id, actor)
    else:
        raise NotFound(f"no ticket action {action!r}", error_id="unknown-action")
    view = await _as_not_found(ticket_id, call)
    return web.json_response(await _ticket_reply(ctx, view))


# ------------------------------------------------------------------------------------ customers
def _directory(ctx: WebContext) -> Any:
    if ctx.directory is None:
        raise ApiError(
            "the customer directory is not available", status=503, error_id="directory-unavailable"
        )
    return ctx.directory


@operation(
    "look a caller number up, as the screen pop does",
    response=Lookup,
    query=LookupQuery,
    errors=(503,),
    tag="customers",
)
async def lookup_customer(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    result = await _directory(ctx).lookup(request.query.get("number", ""))
    return web.json_response(result.to_json())


@operation(
    "search customers by name, account or number (20 at most)",
    response=CustomerList,
    query=SearchQuery,
    errors=(503,),
    tag="customers",
)
async def search_customers(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    found = await _directory(ctx).search(request.query.get("q", ""), limit=20)
    return web.json_response({"customers": [c.to_json() for c in found]})


@operation("one customer file", response=Customer, errors=(404, 503), tag="customers")
async def get_customer(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await _directory(ctx).get_customer(_int(request.match_info["id"], "id"))
    return web.json_response(customer.to_json())


@operation(
    "a customer's last calls and tickets (others' ticket notes: supervisors only)",
    response=History,
    errors=(404, 503),
    tag="customers",
)
async def customer_history(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = principal_of(request)
    history = (await _directory(ctx).history(_int(request.match_info["id"], "id"), limit=20)).to_json()
    if not principal.at_least("supervisor"):
        # A ticket's notes may hold what the caller confided: its agent and supervisors only.
        for ticket in history.get("tickets", []):
            if ticket.get("agent") != principal.username and ticket.get("notes") is not None:
                ticket["notes"], ticket["notes_restricted"] = None, True
    return web.json_response(history)


async def _check_call(ctx: WebContext, principal: Principal, server: str, linkedid: str) -> None:
    """An agent may set the customer of their own calls only: one ringing or answered on their
    desktop now, or one they hold a ticket for. Another call is answered as unknown (404)."""
    if principal.at_least("supervisor"):
        return
    call = ctx.pops.calls.get((server, linkedid))
    mine = call is not None and principal.username in (*call.ringing, call.answered_by)
    if mine:
        return
    if ctx.tickets is not None and await ctx.tickets.for_call(server, linkedid, _actor(principal)):
        return
    details = {"server": server, "linkedid": linkedid}
    raise NotFound("no such call of yours", details, error_id="call-not-found")


@operation(
    "create a customer (for the call being handled: it is then chosen for it)",
    response=Customer,
    status=201,
    body=NewCustomer,
    bodiless="bad-json",
    errors=(404, 503),
    tag="customers",
)
async def create_customer(request: web.Request) -> web.Response:
    """Create a customer from the desktop (the pop's "new customer" form), optionally tying it to
    the call being handled."""
    ctx = request.app[CTX]
    principal = principal_of(request)
    body = await body_of(request, NewCustomer)
    directory = _directory(ctx)
    server, linkedid = body.server, body.linkedid
    if server and linkedid:
        await _check_call(ctx, principal, server, linkedid)  # before anything is written
    customer = await directory.create_customer(
        body.name, body.phones, account=body.account, address=body.address, notes=body.notes
    )
    if server and linkedid:
        await directory.choose_for_call(server, linkedid, customer.id, principal.username)
    return web.json_response(customer.to_json(), status=201)


@operation(
    "the customer the agent picked for this call (one of several sharing its number)",
    response=Customer,
    body=ChooseCustomer,
    bodiless="bad-json",
    errors=(404, 503),
    tag="customers",
)
async def choose_customer(request: web.Request) -> web.Response:
    """The agent picked one of several customers sharing the caller's number."""
    ctx = request.app[CTX]
    principal = principal_of(request)
    customer_id = (await body_of(request, ChooseCustomer)).customer_id
    server, linkedid = request.match_info["server"], request.match_info["linkedid"]
    if len(server) > 64 or len(linkedid) > 64:
        raise NotFound("no such call", error_id="call-not-found")
    await _check_call(ctx, principal, server, linkedid)
    customer = await _directory(ctx).choose_for_call(server, linkedid, customer_id, principal.username)
    return web.json_response(customer.to_json())


# ------------------------------------------------------------------------------------ agent
def _agent_link(ctx: WebContext) -> AgentLink:
    if ctx.actions is None:
        raise ApiError("no AMI link for agent actions", status=503, error_id="ami-unavailable")
    link: AgentLink = ctx.actions
    return link


def _interface(principal: Principal) -> str:
    if not principal.interfaces:
        raise ApiError("no queue-member interface is configured for you", status=409, error_id="no-interface")
    return principal.interfaces[0]


def _device(principal: Principal) -> str:
    if not principal.devices:
        raise ApiError("no phone device is configured for you", status=409, error_id="no-device")
    return principal.devices[0]


@operation(
    "pause / unpause me in every queue (a reason for the pause)",
    response=PauseReply,
    body=Pause,
    bodiless="bad-json",
    errors=(409, 503),
    tag="agent",
)
async def agent_pause(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = principal_of(request)
    body = await body_of(request, Pause)
    reason = body.reason if body.paused else None
    await _agent_link(ctx).pause(_interface(principal), body.paused, reason)
    return web.json_response(PauseReply(paused=body.paused, reason=reason).model_dump())


def member_name(interface: str, principal: Principal) -> str:
    """The queue member name, as the *41 feature code gives it to the same phone ("Agent 1001",
    dialplans/cti-agents.conf): queue_log and every report then show one name per agent,
    whichever way they logged in. Interfaces of other kinds keep the user's own name."""
    tech, _, resource = interface.partition("/")
    if tech == "PJSIP" and resource and "@" not in resource:
        return f"Agent {resource}"
    return principal.display_name or principal.username


@operation(
    "log me in to or out of a queue",
    response=QueueMembership,
    body=NoBody,
    path={"action": {"enum": ["login", "logout"]}},
    errors=(404, 409, 503),
    tag="agent",
)
async def agent_queue(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = principal_of(request)
    await body_of(request, NoBody)
    queue, action = request.match_info["queue"], request.match_info["action"]
    link = _agent_link(ctx)
    if action == "login":
        devices = principal.devices or (None,)
        interface = _interface(principal)
        await link.queue_add(queue, interface, member_name(interface, principal), devices[0])
    elif action == "logout":
        await link.queue_remove(queue, _interface(principal))
    else:
        raise NotFound(f"no queue action {action!r}", error_id="unknown-action")
    return web.json_response(QueueMembership(queue=queue, logged_in=action == "login").model_dump())


@operation(
    "click-to-call: my phone rings, then the number is dialled",
    response=Dialing,
    status=202,
    body=ClickToCall,
    bodiless="bad-json",
    errors=(409, 503),
    tag="agent",
)
async def agent_call(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = principal_of(request)
    raw = (await body_of(request, ClickToCall)).number
    number = normalize(raw, ctx.region if hasattr(ctx, "region") else "FR")
    if number.e164 is None:
        raise ApiError("not a phone number we can dial", {"number": raw}, error_id="bad-number")
    # The agent's phone rings first, showing the customer's number: they see whom they call.
    action_id = await _agent_link(ctx).click_to_call(
        _device(principal), number.e164, number.e164, principal.interfaces
    )
    return web.json_response(Dialing(dialing=number.e164, action_id=action_id).model_dump(), status=202)


@operation("hang up my phone's calls", response=Ok, body=NoBody, errors=(409, 503), tag="agent")
async def agent_hangup(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    await body_of(request, NoBody)
    principal = principal_of(request)
    await _agent_link(ctx).hangup(_device(principal), principal.interfaces)
    return web.json_response(Ok(ok=True).model_dump())


TICKET_ROUTES = [
    web.get("/api/tickets", list_tickets),
    web.get("/api/tickets/{id}", get_ticket),
    web.post("/api/tickets/{id}/{action}", ticket_action),
]
CUSTOMER_ROUTES = [
    web.get("/api/customers/lookup", lookup_customer),
    web.get("/api/customers", search_customers),
    web.post("/api/customers", create_customer),
    web.get("/api/customers/{id}", get_customer),
    web.get("/api/customers/{id}/history", customer_history),
    web.post("/api/calls/{server}/{linkedid}/customer", choose_customer),
]
AGENT_ROUTES = [
    web.post("/api/agent/pause", agent_pause),
    web.post("/api/agent/queues/{queue}/{action}", agent_queue),
    web.post("/api/agent/call", agent_call),
    web.post("/api/agent/hangup", agent_hangup),
]

WsHandler = Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any] | None]]
