"""REST resources of the dialer. Thin: check the input and the role, call the engine or the store.

Who may do what: a *campaign manager* is a user with the `supervisor` or `admin` role; they create,
change, start, pause and stop campaigns, read their statistics and why contacts are not dialled,
add do-not-call numbers, and read or qualify any contact. Agents ask for preview contacts, and
read, dial, skip and qualify (disposition) only *their* contacts: one shown or called back for
them, or one they talked to. Anyone else's contact answers 404, as one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select

from cti.db.models import DialerAttempt, DialerContact
from cti.dialer import store
from cti.dialer.campaigns import check_server
from cti.dialer.csv_import import NumberCheck, RowError
from cti.dialer.dispositions import apply_disposition, campaign_stats
from cti.dialer.engine import DialerEngine
from cti.dialer.why import why_not_dialed
from cti.web.api import body_of, operation
from cti.web.auth import Principal, Role
from cti.web.errors import ApiError, NotFound
from cti.web.models import (
    ActionId,
    Campaign,
    CampaignDoc,
    CampaignList,
    CampaignSettings,
    Contact,
    Disposition,
    DispositionReply,
    Dnc,
    DncReply,
    NewCampaign,
    NoBody,
    Ok,
    PreviewNext,
    Why,
    WhyQuery,
)
from cti.web.server import principal_of, require

MANAGER: Role = "supervisor"  # the lowest role that manages campaigns (admin inherits it)


def _int(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(f"'{name}' must be a whole number", {"field": name}, error_id="bad-field")
    return int(text)


def _instant(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            f"'{name}' must be an ISO-8601 instant", {"field": name}, error_id="bad-field"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class DialerResource:
    def __init__(self, engine: DialerEngine) -> None:
        self.engine = engine
        self.db = engine.db

    def _check_server(self, settings: dict[str, Any]) -> None:
        check_server(settings.get("server"), self.engine.servers)

    async def campaign_doc(self, name: str) -> dict[str, Any]:
        row = await store.get_campaign(self.db, name)
        doc = store.campaign_json(row)
        doc["contacts"] = await store.contact_counts(self.db, row.id)
        doc["stats"] = await campaign_stats(
            self.db, store.spec_of(row), self.engine.clock(), self.engine.settings.abandon_after_s
        )
        status = self.engine.status.get(row.name)
        doc["engine"] = None if status is None else status.to_json()
        return doc

    @operation("every campaign (campaign managers)", response=CampaignList, errors=(403,), tag="dialer")
    async def list_campaigns(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        rows = await store.list_campaigns(self.db)
        return web.json_response({"campaigns": [store.campaign_json(r) for r in rows]})

    @operation(
        "create a campaign (a draft)",
        response=Campaign,
        status=201,
        body=NewCampaign,
        errors=(403, 409),
        tag="dialer",
        description="Unknown or ill-typed settings: 400 bad-campaign. A name in use: 409 campaign-exists.",
    )
    async def create(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        body = await body_of(request, NewCampaign)
        settings = body.model_dump(exclude_unset=True, exclude={"name"})
        self._check_server(settings)
        row = await store.create_campaign(self.db, body.name, settings)
        return web.json_response(store.campaign_json(row), status=201)

    @operation(
        "a campaign with its contacts by status, statistics and what the engine decided",
        response=CampaignDoc,
        errors=(403, 404),
        tag="dialer",
    )
    async def show(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        return web.json_response(await self.campaign_doc(request.match_info["name"]))

    @operation(
        "change a campaign's settings (only those given)",
        response=Campaign,
        body=CampaignSettings,
        errors=(403, 404),
        tag="dialer",
    )
    async def change(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        settings = (await body_of(request, CampaignSettings)).model_dump(exclude_unset=True)
        self._check_server(settings)
        row = await store.update_campaign(self.db, request.match_info["name"], settings)
        return web.json_response(store.campaign_json(row))

    @operation(
        "start | pause | stop a campaign",
        response=Campaign,
        body=NoBody,
        path={"action": {"enum": ["start", "pause", "stop"]}},
        errors=(403, 404, 409),
        tag="dialer",
    )
    async def state(self, request: web.Request) -> web.Response:
        principal = require(request, MANAGER)
        await body_of(request, NoBody)
        name, action = request.match_info["name"], request.match_info["action"]
        row = await store.change_state(self.db, name, action)
        self.engine.log_action(principal.username, name, action)
        return web.json_response(store.campaign_json(row))

    @operation(
        "the contacts not being dialled, and why (and until when)",
        response=Why,
        query=WhyQuery,
        errors=(403, 404),
        tag="dialer",
    )
    async def why(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        row = await store.get_campaign(self.db, request.match_info["name"])
        limit = min(_int(request.query.get("limit", "100"), "limit"), 1000)
        held = await why_not_dialed(
            self.db, store.spec_of(row), self.engine.clock(), limit, request.query.get("code")
        )
        status = self.engine.status.get(row.name)
        return web.json_response({"campaign": None if status is None else status.to_json(), "contacts": held})

    @operation(
        "add numbers to the campaign's do-not-call list (or the global one)",
        response=DncReply,
        body=Dnc,
        errors=(403, 404),
        tag="dialer",
    )
    async def dnc(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        row = await store.get_campaign(self.db, request.match_info["name"])
        body = await body_of(request, Dnc)
        numbers = body.numbers
        checker = NumberCheck(row.region)
        try:
            e164 = [checker.e164(n) for n in numbers]
        except RowError as exc:
            raise ApiError(str(exc), {"field": "numbers"}, error_id="bad-number") from None
        scope = store.GLOBAL_DNC if body.global_ else row.name
        added = await store.add_dnc(self.db, e164, scope, body.reason)
        return web.json_response(DncReply(added=added, scope=scope).model_dump())

    @operation("a campaign contact (agents: only theirs)", response=Contact, errors=(404,), tag="dialer")
    async def contact(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        found = await self.engine.contact_json(contact_id)
        if found is None:
            raise NotFound("no such contact", error_id="no-contact")
        return web.json_response(found)

    @operation(
        "qualify a call with the contact: what came of it (sale, refused, callback...)",
        response=DispositionReply,
        body=Disposition,
        errors=(404, 409),
        tag="dialer",
    )
    async def disposition(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        body = await body_of(request, Disposition)
        result = await apply_disposition(
            self.db,
            contact_id,
            body.disposition,
            agent=principal.username,
            now=self.engine.clock(),
            callback_at=_instant(body.callback_at, "callback_at"),
            notes=body.notes,
        )
        if result.add_to_dnc is not None:
            await store.add_dnc(self.db, [result.add_to_dnc], result.campaign, "wrong number")
        plan = result.plan
        reply = DispositionReply(
            contact=contact_id,
            status=plan.status,
            result=plan.result,
            next_attempt_at=None if plan.next_attempt_at is None else plan.next_attempt_at.isoformat(),
            why=plan.why,
        )
        return web.json_response(reply.model_dump())

    async def _check_agent(self, principal: Principal, contact_id: int) -> None:
        """An agent's contact: shown to them (preview) or called back for them, or one of its
        attempts was put through to them. Any other answers as a contact that does not exist."""
        if principal.at_least(MANAGER):
            return
        async with self.db.connect() as conn:
            agents = set(
                (
                    await conn.scalars(
                        select(DialerAttempt.agent).where(DialerAttempt.contact_id == contact_id)
                    )
                ).all()
            )
            agents.add(
                await conn.scalar(select(DialerContact.callback_agent).where(DialerContact.id == contact_id))
            )
        if not agents & {principal.username, *principal.interfaces}:
            raise NotFound("no such contact", error_id="no-contact")

    @operation(
        "preview: the next contact of the campaign, reserved for me",
        response=PreviewNext,
        body=NoBody,
        errors=(404,),
        tag="dialer",
    )
    async def preview_next(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        await body_of(request, NoBody)
        found = await self.engine.preview_next(request.match_info["name"], principal.username)
        if found is None:
            return web.json_response({"contact": None, "why": "no contact may be called now"})
        return web.json_response({"contact": found})

    @operation(
        "preview: dial the contact I was shown",
        response=ActionId,
        status=202,
        body=NoBody,
        errors=(404, 409, 503),
        tag="dialer",
    )
    async def preview_dial(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        await body_of(request, NoBody)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        interface = principal.interfaces[0] if principal.interfaces else None
        action_id = await self.engine.preview_dial(contact_id, principal.username, interface)
        return web.json_response(ActionId(action_id=action_id).model_dump(), status=202)

    @operation(
        "preview: skip the contact I was shown (back in line)",
        response=Ok,
        body=NoBody,
        errors=(404,),
        tag="dialer",
    )
    async def preview_skip(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        await body_of(request, NoBody)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        await self.engine.preview_skip(contact_id, principal.username)
        return web.json_response(Ok(ok=True).model_dump())


def dialer_routes(engine: DialerEngine) -> list[web.RouteDef]:
    r = DialerResource(engine)
    return [
        web.get("/api/dialer/campaigns", r.list_campaigns),
        web.post("/api/dialer/campaigns", r.create),
        web.get("/api/dialer/campaigns/{name}", r.show),
        web.patch("/api/dialer/campaigns/{name}", r.change),
        web.post("/api/dialer/campaigns/{name}/{action:start|pause|stop}", r.state),
        web.get("/api/dialer/campaigns/{name}/why", r.why),
        web.post("/api/dialer/campaigns/{name}/dnc", r.dnc),
        web.post("/api/dialer/campaigns/{name}/preview/next", r.preview_next),
        web.get("/api/dialer/contacts/{id}", r.contact),
        web.post("/api/dialer/contacts/{id}/disposition", r.disposition),
        web.post("/api/dialer/contacts/{id}/dial", r.preview_dial),
        web.post("/api/dialer/contacts/{id}/skip", r.preview_skip),
    ]
