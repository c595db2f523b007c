"""What happens to a contact after a call: retries by outcome, the agent's disposition, and the
campaign statistics they feed (contact rate, contacts argumentés, conversion, abandon rate).

`plan_after_outcome` and `plan_after_disposition` are pure; `apply_disposition` and
`campaign_stats` read and write the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, desc, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.engine import session_factory
from cti.db.models import DialerAttempt, DialerCampaign, DialerContact
from cti.dialer.campaigns import CampaignError, CampaignSpec
from cti.dialer.store import late_connect, spec_of

# no_answer: the agent says nobody spoke (a machine the detection missed, silence): retried.
# argued: "contact argumenté", the right person heard the whole pitch; sale and appointment
# are argued contacts that converted.
DISPOSITIONS = ("no_answer", "wrong_number", "refused", "callback", "argued", "sale", "appointment")
ARGUED = ("argued", "sale", "appointment")
CONVERTED = ("sale", "appointment")


@dataclass(frozen=True, slots=True)
class ContactPlan:
    status: str  # retry / callback / done
    next_attempt_at: datetime | None
    why_code: str | None
    why: str | None
    result: str | None = None
    callback_agent: str | None = None

    def values(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "next_attempt_at": self.next_attempt_at,
            "why_code": self.why_code,
            "why_not_dialed": self.why,
            "result": self.result,
            "callback_agent": self.callback_agent,
        }


def _span(delay: timedelta) -> str:
    seconds = int(delay.total_seconds())
    if seconds % 86400 == 0 and seconds:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def plan_after_outcome(
    outcome: str, *, attempts: int, same_outcome: int, spec: CampaignSpec, now: datetime
) -> ContactPlan:
    """`attempts`: the contact's attempts so far, this one included; `same_outcome`: how many of
    them ended like this one."""
    if outcome == "answered":
        return ContactPlan("done", None, "contacted", "reached an agent; no disposition yet", "contacted")
    if attempts >= spec.max_attempts:
        why = f"{attempts} attempts made, the campaign's maximum"
        return ContactPlan("done", None, "max_attempts", why, "max_attempts")
    rule = spec.retry.rules.get(outcome)
    if rule is None or same_outcome > rule.max_attempts:
        limit = 0 if rule is None else rule.max_attempts
        why = f"{outcome} {same_outcome} times (retries allowed for {outcome}: {limit})"
        return ContactPlan("done", None, f"max_{outcome}", why, f"max_{outcome}")
    why = f"{outcome}: next try after {_span(rule.delay)}"
    return ContactPlan("retry", now + rule.delay, f"retry:{outcome}", why)


def plan_after_disposition(
    disposition: str,
    *,
    agent: str,
    callback_at: datetime | None,
    attempts: int,
    same_outcome: int,
    spec: CampaignSpec,
    now: datetime,
) -> ContactPlan:
    if disposition == "no_answer":
        return plan_after_outcome(
            "no_answer", attempts=attempts, same_outcome=same_outcome, spec=spec, now=now
        )
    if disposition == "callback":
        if callback_at is None or callback_at <= now:
            raise CampaignError("a callback needs a future 'callback_at'", error_id="bad-callback")
        why = f"callback requested for {callback_at.isoformat()} (by {agent})"
        return ContactPlan("callback", callback_at, "callback", why, None, agent)
    if disposition == "refused":
        cooldowns = [(r.name, r.refusal_cooldown) for r in spec.rules.rulesets() if r.refusal_cooldown]
        extra = "".join(f"; no call for {span.days} days under {name}" for name, span in cooldowns)
        return ContactPlan("done", None, "refused", f"the consumer refused{extra}", "refused")
    if disposition == "wrong_number":
        return ContactPlan(
            "done", None, "wrong_number", "wrong number (added to the campaign's DNC)", "wrong_number"
        )
    return ContactPlan("done", None, disposition, f"qualified {disposition} by {agent}", disposition)


# ----------------------------------------------------------------------------------- database
async def outcome_counts(conn: Any, contact_id: int, outcome: str) -> tuple[int, int]:
    """(attempts of the contact, how many ended with `outcome`)."""
    row = (
        await conn.execute(
            select(func.count(), func.sum(case((DialerAttempt.outcome == outcome, 1), else_=0))).where(
                DialerAttempt.contact_id == contact_id
            )
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


@dataclass(frozen=True, slots=True)
class DispositionResult:
    attempt_id: int
    contact_id: int
    campaign: str
    plan: ContactPlan
    add_to_dnc: str | None  # a number for the campaign's do-not-call list


async def apply_disposition(
    engine: AsyncEngine,
    contact_id: int,
    disposition: str,
    *,
    agent: str,
    now: datetime,
    callback_at: datetime | None = None,
    notes: str | None = None,
) -> DispositionResult:
    """Qualify the contact's latest attempt. If its call is still going on, the disposition is
    kept and the engine applies it when the call ends."""
    if disposition not in DISPOSITIONS:
        raise CampaignError(
            f"unknown disposition {disposition!r}: {', '.join(DISPOSITIONS)}", "bad-disposition"
        )
    async with engine.begin() as conn:
        found = (
            await conn.execute(
                select(
                    DialerAttempt.id, DialerAttempt.state, DialerContact.phone_e164, DialerAttempt.campaign_id
                )
                .join(DialerContact, DialerContact.id == DialerAttempt.contact_id)
                .where(DialerAttempt.contact_id == contact_id)
                .order_by(desc(DialerAttempt.id))
                .limit(1)
            )
        ).first()
        if found is None:
            raise CampaignError(f"contact {contact_id} has not been called", "no-attempt", 404)
        attempt_id, state, phone, campaign_id = found
        async with session_factory(engine)() as session:
            campaign = await session.get(DialerCampaign, campaign_id)
        assert campaign is not None  # the foreign key guarantees it
        spec = spec_of(campaign)
        await conn.execute(
            update(DialerAttempt)
            .where(DialerAttempt.id == attempt_id)
            .values(
                disposition=disposition,
                disposition_at=now,
                disposition_by=agent,
                callback_at=callback_at,
                notes=notes,
            )
        )
        attempts, same = await outcome_counts(conn, contact_id, "no_answer")
        plan = plan_after_disposition(
            disposition,
            agent=agent,
            callback_at=callback_at,
            attempts=attempts,
            same_outcome=same + (1 if disposition == "no_answer" else 0),
            spec=spec,
            now=now,
        )
        if state == "ended":
            await conn.execute(
                update(DialerContact)
                .where(DialerContact.id == contact_id)
                .values(updated_at=now, **plan.values())
            )
    dnc = phone if disposition == "wrong_number" else None
    return DispositionResult(attempt_id, contact_id, spec.name, plan, dnc)


async def campaign_stats(
    engine: AsyncEngine, spec: CampaignSpec, now: datetime, drop_after_s: float = 2.0
) -> dict[str, Any]:
    """`abandoned`: put through, no agent ever came (the 72 h redial lock applies);
    `late_connects`: an agent came, more than `drop_after_s` after the callee was put through;
    `drop_rate` = (abandoned + late connects) ÷ connected over the campaign's window: the
    regulator's figure, the one the pacing keeps under the abandon limit."""
    a = DialerAttempt
    since = now - spec.abandon_window
    abandoned = func.sum(case((a.abandoned.is_(True), 1), else_=0))
    late = func.sum(case((late_connect(drop_after_s), 1), else_=0))
    async with engine.connect() as conn:
        totals = (
            await conn.execute(
                select(
                    func.count(),
                    func.count(a.connected_at),
                    func.count(a.agent_at),
                    abandoned,
                    late,
                    func.sum(case((a.disposition.in_(ARGUED), 1), else_=0)),
                    func.sum(case((a.disposition.in_(CONVERTED), 1), else_=0)),
                ).where(a.campaign_id == spec.id)
            )
        ).one()
        window = (
            await conn.execute(
                select(func.count(a.connected_at), abandoned, late).where(
                    a.campaign_id == spec.id, a.connected_at >= since
                )
            )
        ).one()
        by_outcome = select(a.outcome, func.count()).where(a.campaign_id == spec.id).group_by(a.outcome)
        outcomes = {str(k): int(v) for k, v in (await conn.execute(by_outcome)).all()}
        by_disposition = (
            select(a.disposition, func.count())
            .where(a.campaign_id == spec.id, a.disposition.is_not(None))
            .group_by(a.disposition)
        )
        dispositions = {str(k): int(v) for k, v in (await conn.execute(by_disposition)).all()}
    attempts, connected, handled, abandons, late_connects, argued, converted = (int(v or 0) for v in totals)
    window_connected, window_abandoned, window_late = (int(v or 0) for v in window)
    return {
        "attempts": attempts,
        "connected": connected,
        "handled_by_agent": handled,
        "abandoned": abandons,
        "late_connects": late_connects,
        "dropped": abandons + late_connects,
        "argued": argued,
        "converted": converted,
        "contact_rate": _ratio(connected, attempts),
        "conversion": _ratio(converted, handled),
        "abandon_rate": _ratio(window_abandoned, window_connected),
        "drop_rate": _ratio(window_abandoned + window_late, window_connected),
        "drop_after_s": drop_after_s,
        "abandon_window_s": int(spec.abandon_window.total_seconds()),
        "outcomes": outcomes,
        "dispositions": dispositions,
    }


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)
