"""REST resources of the dialer. Thin: check the input and the role, call the engine or the store.

Who may do what: a *campaign manager* is a user with the `supervisor` or `admin` role; they create,
change, start, pause and stop campaigns, read their statistics and why contacts are not dialled,
add do-not-call numbers, and read or qualify any contact. Agents ask for preview contacts, and
read, dial, skip and qualify (disposition) only *their* contacts: one shown or called back for
them, or one they talked to. Anyone else's contact answers 404, as one that does not exist.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select

from cti.db.models import DialerAttempt, DialerContact
from cti.dialer import store
from cti.dialer.csv_import import NumberCheck, RowError
from cti.dialer.dispositions import apply_disposition, campaign_stats
from cti.dialer.engine import DialerEngine
from cti.web.auth import Principal, Role
from cti.web.errors import ApiError, NotFound
from cti.web.server import principal_of, require

MANAGER: Role = "supervisor"  # the lowest role that manages campaigns (admin inherits it)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError("the body is not JSON", error_id="bad-json") from None
    if not isinstance(body, dict):
        raise ApiError("the body must be a JSON object", error_id="bad-json")
    return body


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

    async def list_campaigns(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        rows = await store.list_campaigns(self.db)
        return web.json_response({"campaigns": [store.campaign_json(r) for r in rows]})

    async def create(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        body = await _body(request)
        name = body.pop("name", None)
        if not isinstance(name, str):
            raise ApiError("'name' is required", {"field": "name"}, error_id="bad-field")
        row = await store.create_campaign(self.db, name, body)
        return web.json_response(store.campaign_json(row), status=201)

    async def show(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        return web.json_response(await self.campaign_doc(request.match_info["name"]))

    async def change(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        row = await store.update_campaign(self.db, request.match_info["name"], await _body(request))
        return web.json_response(store.campaign_json(row))

    async def state(self, request: web.Request) -> web.Response:
        principal = require(request, MANAGER)
        name, action = request.match_info["name"], request.match_info["action"]
        row = await store.change_state(self.db, name, action)
        self.engine.log_action(principal.username, name, action)
        return web.json_response(store.campaign_json(row))

    async def why(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        row = await store.get_campaign(self.db, request.match_info["name"])
        limit = min(_int(request.query.get("limit", "100"), "limit"), 1000)
        held = await store.why_not_dialed(self.db, row.id, limit, request.query.get("code"))
        status = self.engine.status.get(row.name)
        return web.json_response({"campaign": None if status is None else status.to_json(), "contacts": held})

    async def dnc(self, request: web.Request) -> web.Response:
        require(request, MANAGER)
        row = await store.get_campaign(self.db, request.match_info["name"])
        body = await _body(request)
        numbers = body.get("numbers")
        if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
            raise ApiError("'numbers' must be a list of strings", {"field": "numbers"}, error_id="bad-field")
        checker = NumberCheck(row.region)
        try:
            e164 = [checker.e164(n) for n in numbers]
        except RowError as exc:
            raise ApiError(str(exc), {"field": "numbers"}, error_id="bad-number") from None
        scope = store.GLOBAL_DNC if body.get("global") else row.name
        added = await store.add_dnc(self.db, e164, scope, body.get("reason"))
        return web.json_response({"added": added, "scope": scope})

    async def contact(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        found = await self.engine.contact_json(contact_id)
        if found is None:
            raise NotFound("no such contact", error_id="no-contact")
        return web.json_response(found)

    async def disposition(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        body = await _body(request)
        kind = body.get("disposition")
        if not isinstance(kind, str):
            raise ApiError("'disposition' is required", {"field": "disposition"}, error_id="bad-field")
        notes = body.get("notes")
        result = await apply_disposition(
            self.db,
            contact_id,
            kind,
            agent=principal.username,
            now=self.engine.clock(),
            callback_at=_instant(body.get("callback_at"), "callback_at"),
            notes=notes if isinstance(notes, str) else None,
        )
        if result.add_to_dnc is not None:
            await store.add_dnc(self.db, [result.add_to_dnc], result.campaign, "wrong number")
        plan = result.plan
        return web.json_response(
            {
                "contact": contact_id,
                "status": plan.status,
                "result": plan.result,
                "next_attempt_at": None if plan.next_attempt_at is None else plan.next_attempt_at.isoformat(),
                "why": plan.why,
            }
        )

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

    async def preview_next(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        found = await self.engine.preview_next(request.match_info["name"], principal.username)
        if found is None:
            return web.json_response({"contact": None, "why": "no contact may be called now"})
        return web.json_response({"contact": found})

    async def preview_dial(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        interface = principal.interfaces[0] if principal.interfaces else None
        action_id = await self.engine.preview_dial(contact_id, principal.username, interface)
        return web.json_response({"action_id": action_id}, status=202)

    async def preview_skip(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        contact_id = _int(request.match_info["id"], "id")
        await self._check_agent(principal, contact_id)
        await self.engine.preview_skip(contact_id, principal.username)
        return web.json_response({"ok": True})


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
