"""Why a contact is not being dialled, and from when it may be: the engine's own judgement, also
given from the database alone (`cti campaign why` with no daemon running, the REST `why`).

The engine judges a contact only when it picks it (`judge`, `hold_values`); a contact nobody
picked yet has no stored reason. `why_not_dialed` judges every contact the way the engine would
when it next looks at it: at the later of now, the contact's own next time (a retry, a callback,
an earlier hold) and the campaign's start, with the same rules, history and caps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import DialerContact
from cti.dialer import store
from cti.dialer.campaigns import CampaignSpec
from cti.dialer.hours import Callee, Decision, History, decide_for
from cti.dialer.timezones import NumberError
from cti.humanize import when

BATCH = 1000
# Contacts judged between two yields to the event loop: the daemon answers the REST `why` on the
# loop that sends screen pops, and a judgement takes about 0.3 ms.
SLICE = 50
# The codes a judgement gives a contact that waits its turn, besides its rule sets' and its own
# stored one.
_JUDGED = frozenset({
    "invalid_number", "scheduled", "due", "campaign_draft", "campaign_paused", "campaign_stopped",
    "campaign_not_started", "campaign_ended",
})  # fmt: skip


# ----------------------------------------------------------------------------------- the engine's
def judge(spec: CampaignSpec, contact: Any, at: datetime, history: History | None) -> Decision | None:
    """May the contact be called at `at` under the campaign's rules? None: not a valid number."""
    callee = Callee(
        contact.phone_e164,
        contact.timezone,
        contact.country,
        contact.subdivision,
        bool(contact.consent),
        spec.region,
    )
    try:
        return decide_for(callee, at, spec.rules, history)
    except NumberError:
        return None


def hold_values(decision: Decision | None) -> dict[str, Any]:
    """The contact's columns while it waits: why, and from when (never: blocked)."""
    if decision is None:
        return {
            "status": "blocked",
            "why_code": "invalid_number",
            "why_not_dialed": "not a valid phone number",
            "next_attempt_at": None,
        }
    values: dict[str, Any] = {
        "why_code": decision.rule,
        "why_not_dialed": why_text(decision),
        "next_attempt_at": decision.next_allowed_at,
    }
    if decision.next_allowed_at is None:
        values["status"] = "blocked"
    return values


def why_text(decision: Decision) -> str:
    """The reason a contact waits; under `auto` rules, also which rule set judged it and why."""
    if decision.ruleset_why.startswith("auto:"):
        return f"{decision.reason} [{decision.ruleset}: {decision.ruleset_why}]"
    return decision.reason


def history_since(spec: CampaignSpec, now: datetime) -> datetime:
    """How far back a number's calls matter: the longest cap's period (a day at least)."""
    rulesets = spec.rules.rulesets()
    periods = [c.period for ruleset in rulesets for c in ruleset.caps]
    periods += [c.period for ruleset in rulesets for area in ruleset.areas for c in area.caps]
    return now - max(periods, default=timedelta(days=1))


def for_agent(history: History) -> History:
    """Preview dialling: an agent waits for this very call, so it cannot be abandoned."""
    return History(
        history.attempts,
        history.campaign_attempts,
        history.refused_at,
        history.abandoned_at,
        agent_reserved=True,
    )


# ----------------------------------------------------------------------------------- why
@dataclass(frozen=True, slots=True)
class Verdict:
    code: str
    text: str
    next_at: datetime | None


def verdict(spec: CampaignSpec, contact: Any, now: datetime, history: History | None) -> Verdict:
    """Why this contact is not being dialled now, and from when it may be (None: never, or not
    before the campaign is started). Code `due`: the engine would dial it now, given an agent."""
    if contact.status not in store.ELIGIBLE:
        return Verdict(contact.why_code or contact.status, contact.why_not_dialed or contact.status, None)
    waiting = contact.next_attempt_at is not None and contact.next_attempt_at > now
    due = max(now, contact.next_attempt_at or now, spec.starts_at or now)
    if spec.dial_mode == "preview":
        history = for_agent(history or History())
    decision = judge(spec, contact, due, history)
    if decision is None or not decision.allowed:
        held = hold_values(decision)
        code, text, next_at = held["why_code"], held["why_not_dialed"], held["next_attempt_at"]
        if waiting and contact.why_code:
            # The stored reason (a retry's delay, a callback) comes first: it is what holds it now.
            code, text = contact.why_code, f"{contact.why_not_dialed or contact.why_code}; then {text}"
    elif waiting:
        code = contact.why_code or "scheduled"
        text, next_at = contact.why_not_dialed or f"not before {when(due)}", due
    elif spec.state != "running":
        return Verdict(f"campaign_{spec.state}", f"the campaign is {spec.state}: nothing is dialled", None)
    elif spec.starts_at is not None and due == spec.starts_at > now:
        code, text, next_at = "campaign_not_started", f"the campaign starts at {when(due)}", due
    elif contact.why_code == "agent-away" and contact.status == "callback":
        # A personal callback waiting for its agent (engine: free again, or past the grace).
        code, text, next_at = "agent-away", contact.why_not_dialed or "waiting for its agent", due
    else:
        waits = "an agent asking for it (preview)" if spec.dial_mode == "preview" else "a free agent"
        code, text, next_at = "due", f"may be called now: waits for {waits}", due
    stops = spec.stops_at
    if next_at is not None and stops is not None and next_at >= stops:
        if code in ("due", "campaign_not_started"):
            return Verdict("campaign_ended", f"the campaign stopped at {when(stops)}", None)
        return Verdict(code, f"{text}; the campaign stops at {when(stops)}, before that", None)
    return Verdict(code, text, next_at)


def _ruleset_of(why_code: str) -> str | None:
    head, sep, _ = why_code.partition(":")
    return head if sep and head != "retry" else None


def _matches(code: str, wanted: str | None) -> bool:
    return wanted is None or code == wanted or code.startswith(wanted + ":")


def _judgement_may_give(spec: CampaignSpec, code: str) -> bool:
    """Could judging a contact that waits its turn give `code` (not only its stored reason)? A
    rule's code starts with its rule set's name (`fr:window`, `us/FL:cap`, `auto:country`)."""
    names = {spec.rules.name, *(ruleset.name for ruleset in spec.rules.rulesets())}
    return code in _JUDGED or code.partition(":")[0].partition("/")[0] in names


async def why_not_dialed(
    engine: AsyncEngine,
    spec: CampaignSpec,
    now: datetime,
    limit: int = 100,
    code: str | None = None,
) -> list[dict[str, Any]]:
    """Contacts not being dialled (every one but those in a call), in contact order, with why
    and from when, as the engine would judge them; `code`: only that reason (`fr` matches
    `fr:window`, `fr:holiday`...)."""
    out: list[dict[str, Any]] = []
    after = 0
    c = DialerContact
    where = [c.campaign_id == spec.id, c.status != "dialing"]
    if code is not None:
        # Contacts that are done or blocked keep their reason, and so may one that waits (a
        # retry, a callback): filtered by the database. The others are judged, unless no
        # judgement can give that code (`dnc`, `retry`...): a million contacts are not judged
        # to find the ten on the do-not-call list.
        stored = or_(c.why_code == code, c.why_code.startswith(code + ":"))
        where.append(or_(c.status.in_(store.ELIGIBLE), stored) if _judgement_may_give(spec, code) else stored)
    while len(out) < limit:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        c.id,
                        c.phone_e164,
                        c.timezone,
                        c.country,
                        c.subdivision,
                        c.consent,
                        c.status,
                        c.attempts,
                        c.why_code,
                        c.why_not_dialed,
                        c.next_attempt_at,
                        c.result,
                    )
                    .where(*where, c.id > after)
                    .order_by(c.id)
                    .limit(BATCH)
                )
            ).all()
            if not rows:
                break
            numbers = [r.phone_e164 for r in rows if r.status in store.ELIGIBLE]
            history = await store.histories(conn, numbers, spec, history_since(spec, now))
        for start in range(0, len(rows), SLICE):
            if len(out) >= limit:
                break
            out += _judged(spec, rows[start : start + SLICE], now, history, code)
            await asyncio.sleep(0)
        after = rows[-1].id
    return out[:limit]


def _judged(
    spec: CampaignSpec, rows: Sequence[Any], now: datetime, history: dict[str, History], code: str | None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        found = verdict(spec, row, now, history.get(row.phone_e164))
        if not _matches(found.code, code):
            continue
        out.append(
            {
                "contact": row.id,
                "phone": row.phone_e164,
                "status": row.status,
                "attempts": row.attempts,
                "why_code": found.code,
                # The rule set that holds it (fr, us/FL...) when a calling-hours rule does.
                "ruleset": _ruleset_of(found.code),
                "why_not_dialed": found.text,
                "next_attempt_at": store.iso(found.next_at),
                "result": row.result,
            }
        )
    return out
