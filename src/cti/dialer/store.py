"""Campaigns, contacts, attempts and do-not-call lists in the database.

Every function takes the engine and opens its own short transaction; the engine's pick-and-reserve
(`reserve_attempt`) writes the attempt and marks the contact in one, before any Originate leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Double, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from cti.db.engine import session_factory
from cti.db.models import DialerAttempt, DialerCampaign, DialerContact, DialerDnc
from cti.dialer.campaigns import (
    SCOPE_KEYS,
    CampaignError,
    CampaignSpec,
    RetryPolicy,
    check_mode,
    next_state,
    resolve_rules,
    scope_of,
    with_scope,
)
from cti.dialer.hours import History
from cti.dialer.jurisdiction import AUTO, CampaignRules
from cti.dialer.rulesets import parse_duration

GLOBAL_DNC = "*"
ELIGIBLE = ("pending", "retry", "callback")
OPEN_ATTEMPT = ("reserved", "sent", "answered", "connected")


def utcnow() -> datetime:
    return datetime.now(UTC)


class seconds_between(FunctionElement[float]):
    """`later - earlier` in seconds, to the microsecond, for two stored UTC timestamps."""

    type = Double()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "sqlite")
def _between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


@compiles(seconds_between, "postgresql")
def _between_pg(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"extract(epoch FROM ({later} - {earlier}))"


def late_connect(after_s: float) -> ColumnElement[bool]:
    """An attempt an agent took more than `after_s` after the callee was put through
    (DialerConnected): not an abandon (the callee talked to someone), but a drop in the
    regulator's figure (Ofcom, TCPA: no agent within 2 s of the answer)."""
    a = DialerAttempt
    return and_(
        a.connected_at.is_not(None),
        a.agent_at.is_not(None),
        seconds_between(a.connected_at, a.agent_at) > after_s,
    )


# ----------------------------------------------------------------------------------- campaigns
def spec_of(row: DialerCampaign) -> CampaignSpec:
    return CampaignSpec(
        id=row.id,
        name=row.name,
        queue=row.queue,
        dial_mode=check_mode(row.dial_mode),
        rules=resolve_rules(row.ruleset, row.ruleset_toml),
        retry=RetryPolicy.parse(row.retry_policy),
        max_attempts=row.max_attempts,
        state=row.state,
        caller_id=row.caller_id,
        region=row.region,
        principal=row.principal,
        server=row.server,
        agent_group=tuple(row.agent_group or ()),
        priority=row.priority,
        ring_timeout_s=row.ring_timeout_s,
        amd=row.amd,
        max_ratio=row.max_ratio,
        abandon_limit=row.abandon_limit,
        abandon_window=timedelta(seconds=row.abandon_window_s),
        starts_at=row.starts_at,
        stops_at=row.stops_at,
    )


def campaign_json(row: DialerCampaign) -> dict[str, Any]:
    rules = resolve_rules(row.ruleset, row.ruleset_toml)
    countries = rules.countries()
    return {
        "id": row.id,
        "name": row.name,
        "queue": row.queue,
        "agent_group": list(row.agent_group or ()),
        "dial_mode": row.dial_mode,
        "caller_id": row.caller_id,
        "ruleset": row.ruleset,
        # The countries it calls (declared, or its rule set's own); null: any country.
        "countries": None if countries is None else list(countries),
        "countries_declared": rules.declared is not None,
        "allow_numbers": sorted(rules.allow_numbers),
        "fallback": _fallback_name(rules),
        "region": row.region,
        "principal": row.principal,
        "server": row.server,
        "retry_policy": RetryPolicy.parse(row.retry_policy).to_json(),
        "max_attempts": row.max_attempts,
        "priority": row.priority,
        "ring_timeout_s": row.ring_timeout_s,
        "amd": row.amd,
        "max_ratio": row.max_ratio,
        "abandon_limit": row.abandon_limit,
        "abandon_window_s": row.abandon_window_s,
        "starts_at": iso(row.starts_at),
        "stops_at": iso(row.stops_at),
        "state": row.state,
    }


def _fallback_name(rules: CampaignRules) -> str | None:
    if not rules.auto:
        return None
    return rules.fallback.name if rules.fallback is not None else "refuse"


def iso(at: datetime | None) -> str | None:
    """An instant as the JSON documents give it: UTC, ISO 8601, with a Z."""
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


_EDITABLE = {
    "queue": str,
    "dial_mode": str,
    "caller_id": str,
    "ruleset": str,
    "ruleset_toml": str,
    "region": str,
    "principal": str,
    "server": str,
    "retry_policy": dict,
    "max_attempts": int,
    "priority": int,
    "ring_timeout_s": int,
    "amd": bool,
    "max_ratio": float,
    "abandon_limit": float,
    "abandon_window_s": int,
    "agent_group": list,
    "starts_at": datetime,
    "stops_at": datetime,
}


def campaign_values(data: dict[str, Any], current: DialerCampaign | None = None) -> dict[str, Any]:
    """Checked column values for a campaign from user input (CLI or REST); the scope keys
    (countries, allow_numbers, fallback) go into the rule TOML, over the `current` one's."""
    data = dict(data)
    scope = {key: data.pop(key) for key in SCOPE_KEYS if key in data}
    if isinstance(scope.get("countries"), str):
        scope["countries"] = [c for c in scope["countries"].replace(",", " ").split() if c]
    if scope or "ruleset" in data or "ruleset_toml" in data:
        data.update(_rule_columns(data, scope, current))
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _EDITABLE:
            raise CampaignError(f"unknown campaign field {key!r}")
        values[key] = None if value is None else _coerce(key, value)
    if "dial_mode" in values:
        check_mode(values["dial_mode"])
    if "retry_policy" in values:
        RetryPolicy.parse(values["retry_policy"])
    if "ruleset" in values or "ruleset_toml" in values:
        resolve_rules(values.get("ruleset") or "custom", values.get("ruleset_toml"))
    if values.get("ring_timeout_s") is not None and values["ring_timeout_s"] < 15:
        raise CampaignError("ring_timeout_s must be at least 15 s: shorter rings make false no-answers")
    if values.get("abandon_limit") is not None and not 0 <= values["abandon_limit"] <= 0.03:
        raise CampaignError("abandon_limit must be between 0 and 0.03 (3 %)")
    if values.get("max_ratio") is not None and not 1.0 <= values["max_ratio"] <= 5.0:
        raise CampaignError("max_ratio must be between 1 and 5")
    return values


def _rule_columns(
    data: dict[str, Any], scope: dict[str, Any], current: DialerCampaign | None
) -> dict[str, Any]:
    """`ruleset` and `ruleset_toml` with the scope folded in: what is given now, else what the
    new rule TOML says, else what the campaign had."""
    for key in ("countries", "allow_numbers"):
        if key in scope and not (scope[key] is None or isinstance(scope[key], list)):
            raise CampaignError(f'{key} must be a list, e.g. ["FR", "MA"]')
    name = data.get("ruleset") or (current.ruleset if current is not None else "fr")
    if "ruleset" in data or "ruleset_toml" in data:
        toml_text = data.get("ruleset_toml")
    else:
        toml_text = current.ruleset_toml if current is not None else None
    merged = {**(scope_of(current.ruleset_toml) if current is not None else {}), **scope_of(toml_text)}
    merged.update(scope)
    if name != AUTO and "fallback" not in scope:
        merged.pop("fallback", None)  # only auto rules have one: not carried over to a fixed set
    return {"ruleset": name, "ruleset_toml": with_scope(toml_text, merged)}


def _coerce(key: str, value: Any) -> Any:
    kind = _EDITABLE[key]
    if kind is datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise CampaignError(f"{key}: {value!r} is not an ISO-8601 instant") from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    if kind is int and key == "abandon_window_s" and isinstance(value, str):
        return int(parse_duration(value).total_seconds())
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CampaignError(f"{key} must be a {kind.__name__}")
    return value


async def create_campaign(engine: AsyncEngine, name: str, data: dict[str, Any]) -> DialerCampaign:
    name = name.strip()
    if not name or len(name) > 80 or "," in name:
        raise CampaignError("a campaign name is 1 to 80 characters, without commas")
    values = {"dial_mode": "progressive", "ruleset": "fr", "retry_policy": {}, **campaign_values(data)}
    async with session_factory(engine)() as session, session.begin():
        existing = await session.scalar(select(DialerCampaign.id).where(DialerCampaign.name == name))
        if existing is not None:
            raise CampaignError(f"campaign {name!r} exists already", error_id="campaign-exists", status=409)
        values.setdefault("agent_group", [])
        session.add(DialerCampaign(name=name, **values))
    return await get_campaign(engine, name)


async def get_campaign(engine: AsyncEngine, name: str) -> DialerCampaign:
    async with session_factory(engine)() as session:
        row = await session.scalar(select(DialerCampaign).where(DialerCampaign.name == name))
    if row is None:
        raise CampaignError(f"no campaign {name!r}", error_id="no-campaign", status=404)
    return row


async def list_campaigns(engine: AsyncEngine) -> list[DialerCampaign]:
    async with session_factory(engine)() as session:
        return list((await session.scalars(select(DialerCampaign).order_by(DialerCampaign.name))).all())


async def update_campaign(engine: AsyncEngine, name: str, data: dict[str, Any]) -> DialerCampaign:
    current = await get_campaign(engine, name)
    values = campaign_values(data, current)
    async with engine.begin() as conn:
        await conn.execute(update(DialerCampaign).where(DialerCampaign.name == name).values(**values))
    return await get_campaign(engine, name)


async def change_state(engine: AsyncEngine, name: str, action: str) -> DialerCampaign:
    async with engine.begin() as conn:
        state = await conn.scalar(select(DialerCampaign.state).where(DialerCampaign.name == name))
        if state is None:
            raise CampaignError(f"no campaign {name!r}", error_id="no-campaign", status=404)
        target = next_state(state, action)
        await conn.execute(update(DialerCampaign).where(DialerCampaign.name == name).values(state=target))
    return await get_campaign(engine, name)


# ----------------------------------------------------------------------------------- DNC
async def add_dnc(
    engine: AsyncEngine, numbers: Iterable[str], scope: str = GLOBAL_DNC, reason: str | None = None
) -> int:
    """Add numbers (E.164) to a do-not-call list; numbers already there are left alone. Contacts
    of the campaigns concerned stop being dialled at once."""
    unique = sorted(set(numbers))
    rows = [{"scope": scope, "phone_e164": n, "reason": reason} for n in unique]
    added = 0
    async with engine.begin() as conn:
        make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            result = await conn.execute(make(DialerDnc).values(chunk).on_conflict_do_nothing())
            added += max(result.rowcount or 0, 0)
        await _block_contacts(conn, unique, scope)
    return added


async def _block_contacts(conn: Any, numbers: Sequence[str], scope: str) -> None:
    where: list[ColumnElement[bool]] = [DialerContact.status.in_(ELIGIBLE)]
    if scope != GLOBAL_DNC:
        ids = select(DialerCampaign.id).where(DialerCampaign.name == scope).scalar_subquery()
        where.append(DialerContact.campaign_id == ids)
    label = "the global do-not-call list" if scope == GLOBAL_DNC else "the campaign's do-not-call list"
    for start in range(0, len(numbers), 500):
        chunk = numbers[start : start + 500]
        await conn.execute(
            update(DialerContact)
            .where(DialerContact.phone_e164.in_(chunk), *where)
            .values(status="blocked", why_code="dnc", why_not_dialed=f"on {label}", next_attempt_at=None)
        )


async def dnc_numbers(conn: Any, scopes: Sequence[str]) -> set[int]:
    """Every number on these lists, as integers (an E.164 number without its '+')."""
    result = await conn.stream(select(DialerDnc.phone_e164).where(DialerDnc.scope.in_(scopes)))
    out: set[int] = set()
    async for (number,) in result:
        out.add(int(number[1:]))
    return out


# ----------------------------------------------------------------------------------- history
@dataclass(frozen=True, slots=True)
class _HistoryRow:
    phone_e164: str
    campaign_id: int
    created_at: datetime
    disposition: str | None
    disposition_at: datetime | None
    abandoned: bool
    ended_at: datetime | None


async def histories(
    conn: Any, numbers: Sequence[str], campaign: CampaignSpec, since: datetime
) -> dict[str, History]:
    """Each number's history for the rules: attempts since `since` for the campaign's principal
    (every campaign of theirs), refusals and abandons."""
    if not numbers:
        return {}
    same_principal = (
        select(DialerCampaign.id).where(DialerCampaign.principal == campaign.principal)
        if campaign.principal
        else select(DialerCampaign.id).where(DialerCampaign.id == campaign.id)
    )
    rows: list[_HistoryRow] = []
    for start in range(0, len(numbers), 500):
        chunk = numbers[start : start + 500]
        query = select(
            DialerAttempt.phone_e164,
            DialerAttempt.campaign_id,
            DialerAttempt.created_at,
            DialerAttempt.disposition,
            DialerAttempt.disposition_at,
            DialerAttempt.abandoned,
            DialerAttempt.ended_at,
        ).where(
            DialerAttempt.phone_e164.in_(chunk),
            DialerAttempt.campaign_id.in_(same_principal),
            or_(
                DialerAttempt.created_at >= since,
                DialerAttempt.disposition == "refused",
                DialerAttempt.abandoned.is_(True),
            ),
        )
        rows += [_HistoryRow(*r) for r in (await conn.execute(query)).all()]
    return _fold(rows, campaign.id)


def _fold(rows: list[_HistoryRow], campaign_id: int) -> dict[str, History]:
    grouped: dict[str, list[_HistoryRow]] = {}
    for row in rows:
        grouped.setdefault(row.phone_e164, []).append(row)
    out: dict[str, History] = {}
    for number, items in grouped.items():
        refused = [r.disposition_at or r.created_at for r in items if r.disposition == "refused"]
        abandoned = [r.ended_at or r.created_at for r in items if r.abandoned]
        out[number] = History(
            attempts=tuple(sorted(r.created_at for r in items)),
            campaign_attempts=tuple(sorted(r.created_at for r in items if r.campaign_id == campaign_id)),
            refused_at=max(refused) if refused else None,
            abandoned_at=max(abandoned) if abandoned else None,
        )
    return out


# ----------------------------------------------------------------------------------- queries
async def contact_counts(engine: AsyncEngine, campaign_id: int) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(DialerContact.status, func.count())
            .where(DialerContact.campaign_id == campaign_id)
            .group_by(DialerContact.status)
        )
        return {status: count for status, count in rows.all()}
