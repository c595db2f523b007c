"""Callbacks an agent schedules from the desktop ("rappeler M. Dupont demain à 10 h"): a contact
of the centre's callback campaign (`CALLBACK_CAMPAIGN`, created on first use: progressive, the
France rules) with status `callback` at the chosen instant. The dialer then treats it like any
campaign callback: first in line once due, judged by the calling-hours rules (a time outside
them waits for the next allowed one, and says so), dialled and put through to the campaign's
queue. `for_me` records the agent in `callback_agent` and in the contact's fields (the pop shows
who asked and the note), and makes it theirs: the engine dials it only while they are free and
into the personal queue where only they can take it, until `[dialer] personal_grace_s` past its
time (engine.py `_reserve_personal`, docs/dialer.md "Personal callbacks").
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import DialerCampaign, DialerContact
from cti.dialer import store
from cti.dialer.campaigns import CampaignError

CALLBACK_CAMPAIGN = "rappels-clients"
DEFAULTS: dict[str, Any] = {"dial_mode": "progressive", "queue": "outbound", "ruleset": "fr"}


class CallbackError(Exception):
    def __init__(self, message: str, error_id: str = "bad-callback", status: int = 400) -> None:
        super().__init__(message)
        self.error_id, self.status = error_id, status
        self.details: dict[str, Any] = {}


async def callback_campaign(engine: AsyncEngine) -> DialerCampaign:
    """The centre's callback campaign, created (and started) on first use."""
    try:
        campaign = await store.get_campaign(engine, CALLBACK_CAMPAIGN)
    except CampaignError:
        with suppress(CampaignError):  # created meanwhile by another request
            await store.create_campaign(engine, CALLBACK_CAMPAIGN, DEFAULTS)
        campaign = await store.get_campaign(engine, CALLBACK_CAMPAIGN)
    if campaign.state != "running":
        await store.change_state(engine, CALLBACK_CAMPAIGN, "start")
        campaign = await store.get_campaign(engine, CALLBACK_CAMPAIGN)
    return campaign


async def schedule(
    engine: AsyncEngine,
    e164: str,
    raw: str,
    at: datetime,
    agent: str,
    *,
    for_me: bool,
    note: str = "",
    name: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Schedule (or move) the callback of this number; the contact as stored."""
    now = now or datetime.now(UTC)
    if at.tzinfo is None or at <= now:
        raise CallbackError("a callback needs a future instant with its time zone")
    campaign = await callback_campaign(engine)
    fields = {"nom": name, "note": note, "demandé par": agent, "pour": agent if for_me else "équipe"}
    values = {
        "status": "callback",
        "next_attempt_at": at,
        "callback_agent": agent if for_me else None,
        "fields": fields,
        "why_code": "scheduled",
        "why_not_dialed": f"callback requested for {at.isoformat()} (by {agent})",
        "result": None,
    }
    async with engine.begin() as conn:
        found = (
            await conn.execute(
                select(DialerContact.id).where(
                    DialerContact.campaign_id == campaign.id, DialerContact.phone_e164 == e164
                )
            )
        ).first()
        if found is None:
            inserted = await conn.execute(
                DialerContact.__table__.insert().values(  # type: ignore[attr-defined]
                    campaign_id=campaign.id, phone_e164=e164, phone_raw=raw, attempts=0, **values
                )
            )
            key = inserted.inserted_primary_key
            assert key is not None
            contact_id = int(key[0])
        else:
            contact_id = int(found.id)
            await conn.execute(update(DialerContact).where(DialerContact.id == contact_id).values(**values))
    return {"id": contact_id, "campaign": CALLBACK_CAMPAIGN, "phone": e164, "at": at.isoformat()}


async def upcoming(
    engine: AsyncEngine, agent: str, limit: int = 50, grace_s: float = 1800.0
) -> list[dict[str, Any]]:
    """The callbacks still to make that are the agent's or the team's, soonest first; one of
    mine says whether it waits for me (due, I am away) and when it goes to the team."""
    c = DialerContact
    async with engine.connect() as conn:
        campaign = (
            await conn.execute(select(DialerCampaign.id).where(DialerCampaign.name == CALLBACK_CAMPAIGN))
        ).first()
        if campaign is None:
            return []
        rows = (
            await conn.execute(
                select(
                    c.id,
                    c.phone_e164,
                    c.fields,
                    c.next_attempt_at,
                    c.callback_agent,
                    c.status,
                    c.why_not_dialed,
                    c.why_code,
                )
                .where(c.campaign_id == campaign.id, c.status.in_(("callback", "dialing")))
                .where((c.callback_agent == agent) | c.callback_agent.is_(None))
                .order_by(c.next_attempt_at)
                .limit(limit)
            )
        ).all()
    return [
        {
            "id": r.id,
            "phone": r.phone_e164,
            "at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
            "for_me": r.callback_agent == agent,
            "note": (r.fields or {}).get("note", ""),
            "name": (r.fields or {}).get("nom", ""),
            "status": r.status,
            "waiting": r.callback_agent == agent and r.why_code == "agent-away",
            "team_at": (r.next_attempt_at + timedelta(seconds=grace_s)).isoformat()
            if r.callback_agent == agent and r.next_attempt_at
            else None,
        }
        for r in rows
    ]
