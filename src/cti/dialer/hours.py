"""May this number be called at this instant? `decide` answers, says why, and says when it may.

Pure: no I/O, no clock. The caller passes the instant, the rule set and the number's history.
A number in several zones is called only when every zone allows it. `next_allowed_at` is exact:
the earliest instant at or after `at` when every rule is satisfied, found by walking forward
over the instants where the answer can change (window starts in each zone, a DST gap's end) and
checking each, so DST change days, holidays and caps need no special cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import phonenumbers

from cti.dialer.jurisdiction import CampaignRules
from cti.dialer.rulesets import END_OF_DAY, AreaRule, Cap, RuleSet, Window
from cti.dialer.timezones import CalleeZones, callee_zones

HORIZON_DAYS = 400  # beyond this, a rule set that never opens is reported as never
_BATCH_DAYS = 8
# The holidays package names some French subdivisions by département number.
_FR_SUBDIVISION = {
    "GP": "971",
    "MQ": "972",
    "GF": "973",
    "RE": "974",
    "YT": "976",
    "BL": "BL",
    "MF": "MF",
    "PM": "PM",
    "57": "57",
    "67": "6AE",
    "68": "6AE",
    "ALSACE": "6AE",
    "MOSELLE": "57",
    "ALSACE-MOSELLE": "57",
    # Department (INSEE) codes of the overseas territories.
    "971": "971",
    "972": "972",
    "973": "973",
    "974": "974",
    "975": "PM",
    "976": "976",
    "977": "BL",
    "978": "MF",
}
# Public holidays the `holidays` package does not have: Saint-Martin commemorates the abolition of
# slavery on 28 May since 2018 (the package's date), but art. L.3422-2 of the Code du travail
# still says 27 May: both are kept.
_EXTRA_HOLIDAYS: dict[tuple[str, str], dict[tuple[int, int], str]] = {
    ("FR", "MF"): {(5, 27): "Abolition of Slavery (27 May, art. L.3422-2 Code du travail)"},
}


@dataclass(frozen=True, slots=True)
class History:
    """What was done to this number before `at` (aware datetimes)."""

    # Every call or attempt to the number for the same principal (any campaign of theirs).
    attempts: tuple[datetime, ...] = ()
    # The same, for this campaign only ("on the same subject").
    campaign_attempts: tuple[datetime, ...] = ()
    refused_at: datetime | None = None
    abandoned_at: datetime | None = None
    # Preview dialling: an agent is waiting for this very call, so it cannot be abandoned.
    agent_reserved: bool = False


@dataclass(frozen=True, slots=True)
class Callee:
    number: str
    timezone: str | None = None  # the contact's own column: overrides the number's zones
    country: str | None = None
    subdivision: str | None = None  # e.g. 57/67/68 (Alsace-Moselle), for holidays
    consent: bool = False  # prior express consent to be called outside the hours (fr)
    region: str | None = None  # for national numbers


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    number: str
    timezones: tuple[str, ...]
    local_time: dict[str, str]
    rule: str
    reason: str
    next_allowed_at: datetime | None
    zone_source: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    territory: str | None = None  # the number's region (RE, GP, US...)
    ruleset: str = ""  # the rule set that judged the number
    ruleset_why: str = ""  # why that one
    ruleset_source: str = ""  # the law or practice it encodes

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "number": self.number,
            "territory": self.territory,
            "timezones": list(self.timezones),
            "zone_source": self.zone_source,
            "local_time": self.local_time,
            "ruleset": {"name": self.ruleset, "why": self.ruleset_why, "source": self.ruleset_source},
            "rule": self.rule,
            "reason": self.reason,
            "next_allowed_at": _iso(self.next_allowed_at),
        }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rule set as it applies to one callee."""

    name: str
    zones: tuple[ZoneInfo, ...]
    windows: tuple[Window, ...]
    caps: tuple[Cap, ...]
    holiday_country: str | None
    holiday_subdivision: str | None
    hours_waived: bool


def decide(
    callee: Callee | str,
    at: datetime,
    ruleset: RuleSet,
    history: History | None = None,
    *,
    why: str = "",
    found: CalleeZones | None = None,
) -> Decision:
    """Raises `timezones.NumberError` for a number that is not a valid phone number."""
    if isinstance(callee, str):
        callee = Callee(callee)
    if at.tzinfo is None:
        raise ValueError("`at` must be an aware datetime")
    history = history or History()
    found = found or callee_zones(callee.number, callee.timezone, callee.country, callee.region)
    chosen = _Chosen(ruleset.name, why or f"the rule set asked for ({ruleset.name})", ruleset.source)
    if not found.zones:
        return _no_zone(found, ruleset, chosen)
    plan = _plan(ruleset, found, callee)
    local = {z.key: at.astimezone(z).isoformat(timespec="seconds") for z in plan.zones}
    bounds = _bounds(ruleset, plan, history, at)
    blocking = [b for b in bounds if b[2] > at]
    earliest = max([at, *(b[2] for b in bounds)])
    next_at = _next_open(plan, earliest)
    if blocking:
        rule, reason, _ = blocking[0]
        return _decision(False, found, local, f"{plan.name}:{rule}", reason, next_at, chosen)
    closed = _closed_reason(plan, at)
    if closed is not None:
        rule, reason = closed
        return _decision(False, found, local, f"{plan.name}:{rule}", reason, next_at, chosen)
    return _decision(True, found, local, f"{plan.name}:window", _open_reason(plan, at), at, chosen)


def decide_for(
    callee: Callee | str, at: datetime, rules: CampaignRules, history: History | None = None
) -> Decision:
    """`decide` under a campaign's rules: the number's own country's rule set for `auto`, and
    no call at all for a special number or a country the campaign does not call (`*:country`,
    `*:number_type`, never allowed). Raises `timezones.NumberError` for an invalid number."""
    if isinstance(callee, str):
        callee = Callee(callee)
    found = callee_zones(callee.number, callee.timezone, callee.country, callee.region)
    kind = number_kind(found.e164)
    refused = rules.special_refusal(kind)
    if refused is not None:
        return _refusal(found, rules.name, "number_type", f"{found.e164} is {refused}")
    choice = rules.choose(found.region)
    if choice.refusal is not None or choice.ruleset is None:
        rule, reason = choice.refusal or ("country", choice.why)
        return _refusal(found, rules.name, rule, reason)
    return decide(callee, at, choice.ruleset, history, why=choice.why, found=found)


@lru_cache(maxsize=4096)
def number_kind(e164: str) -> str:
    """phonenumbers' type of a number, by name (mobile, premium_rate...)."""
    kind = phonenumbers.number_type(phonenumbers.parse(e164))
    return _KIND_NAMES.get(kind, "unknown")


_KIND_NAMES = {
    value: name.lower()
    for name, value in vars(phonenumbers.PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}


def _refusal(found: CalleeZones, name: str, rule: str, reason: str) -> Decision:
    return Decision(
        False,
        found.e164,
        found.zones,
        {},
        f"{name}:{rule}",
        reason,
        None,
        found.source,
        territory=found.region,
        ruleset=name,
        ruleset_why=reason,
    )


@dataclass(frozen=True, slots=True)
class _Chosen:
    name: str
    why: str
    source: str


def _decision(
    allowed: bool,
    found: CalleeZones,
    local: dict[str, str],
    rule: str,
    reason: str,
    next_at: datetime | None,
    chosen: _Chosen,
) -> Decision:
    return Decision(
        allowed,
        found.e164,
        found.zones,
        local,
        rule,
        reason,
        next_at,
        found.source,
        territory=found.region,
        ruleset=chosen.name,
        ruleset_why=chosen.why,
        ruleset_source=chosen.source,
    )


def _no_zone(found: CalleeZones, ruleset: RuleSet, chosen: _Chosen) -> Decision:
    reason = f"no time zone is known for {found.e164}: give the contact a timezone (e.g. Europe/Paris)"
    return _decision(False, found, {}, f"{ruleset.name}:zone", reason, None, chosen)


def _plan(ruleset: RuleSet, found: CalleeZones, callee: Callee) -> _Plan:
    area: AreaRule | None = ruleset.area_for(found.e164)
    name = ruleset.name if area is None else f"{ruleset.name}/{area.name}"
    windows = area.windows if area is not None and area.windows is not None else ruleset.windows
    caps = ruleset.caps + (area.caps if area is not None else ())
    subdivision = _subdivision(ruleset, found, callee)
    waived = ruleset.consent_waives_hours and callee.consent
    zones = tuple(ZoneInfo(z) for z in found.zones)
    return _Plan(name, zones, windows, caps, ruleset.holiday_country, subdivision, waived)


def _subdivision(ruleset: RuleSet, found: CalleeZones, callee: Callee) -> str | None:
    """The contact's own subdivision (57, 974...), else the number's territory (refined by the
    contact's country where the number is in several: a 0690 mobile is Guadeloupe's for
    phonenumbers, Saint-Martin's when the contact's country says MF)."""
    if ruleset.holiday_country != "FR":
        return callee.subdivision or ruleset.holiday_subdivision
    for key in (callee.subdivision, found.region):
        mapped = _FR_SUBDIVISION.get((key or "").strip().upper())
        if mapped is not None:
            return mapped
    return ruleset.holiday_subdivision


# ----------------------------------------------------------------------------------- bounds
def _bounds(ruleset: RuleSet, plan: _Plan, history: History, at: datetime) -> list[tuple[str, str, datetime]]:
    """(rule, reason, not before) for every rule that depends on the past, in reporting order."""
    out: list[tuple[str, str, datetime]] = []
    if ruleset.refusal_cooldown is not None and history.refused_at is not None:
        until = history.refused_at + ruleset.refusal_cooldown
        days = ruleset.refusal_cooldown.days
        out.append(
            ("refusal_cooldown", f"refused on {_iso(history.refused_at)}: no new call for {days} days", until)
        )
    if ruleset.abandon_lock is not None and history.abandoned_at is not None and not history.agent_reserved:
        until = history.abandoned_at + ruleset.abandon_lock
        hours = ruleset.abandon_lock / timedelta(hours=1)
        reason = (
            f"abandoned call on {_iso(history.abandoned_at)}: no redial for {hours:g} h "
            "unless an agent is reserved"
        )
        out.append(("abandon_lock", reason, until))
    for cap in plan.caps:
        calls = history.attempts if cap.scope == "principal" else history.campaign_attempts
        cap_until = cap_bound(cap, calls, at)
        if cap_until is not None:
            recent = sum(1 for a in calls if at - cap.period < a <= at)
            scope = "for this principal" if cap.scope == "principal" else "in this campaign"
            span = _span_text(cap.period)
            reason = f"{recent} calls or attempts in the last {span} {scope} ({cap.label()})"
            out.append(("cap", reason, cap_until))
    return out


def _span_text(period: timedelta) -> str:
    return f"{period.days} days" if period >= timedelta(days=1) else f"{period / timedelta(hours=1):g} h"


def cap_bound(cap: Cap, calls: tuple[datetime, ...], at: datetime) -> datetime | None:
    """The first instant ≥ `at` when fewer than `cap.max_calls` calls fall in the period before
    it, or None if that is already so. A call at instant `a` counts until `a + period`."""
    recent = sorted(a for a in calls if at - cap.period < a <= at)
    excess = len(recent) - cap.max_calls
    if excess < 0:
        return None
    return recent[excess] + cap.period


# ----------------------------------------------------------------------------------- windows
@lru_cache(maxsize=256)
def _holiday_calendar(country: str, subdivision: str | None) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision)


def holiday_name(plan: _Plan, day: date) -> str | None:
    if plan.holiday_country is None:
        return None
    calendar = _holiday_calendar(plan.holiday_country, plan.holiday_subdivision)
    extra = _EXTRA_HOLIDAYS.get((plan.holiday_country, plan.holiday_subdivision or ""), {})
    name = calendar.get(day) or extra.get((day.month, day.day))
    return None if name is None else str(name)


def _in_window(window: Window, local: datetime) -> bool:
    if local.weekday() not in window.days:
        return False
    now = local.time().replace(tzinfo=None)
    return window.start <= now and (now < window.end or window.end == END_OF_DAY)


def _open_in(plan: _Plan, zone: ZoneInfo, at: datetime) -> bool:
    local = at.astimezone(zone)
    if holiday_name(plan, local.date()) is not None:
        return False
    return any(_in_window(w, local) for w in plan.windows)


def _open(plan: _Plan, at: datetime) -> bool:
    return plan.hours_waived or all(_open_in(plan, z, at) for z in plan.zones)


def _closed_reason(plan: _Plan, at: datetime) -> tuple[str, str] | None:
    if plan.hours_waived:
        return None
    for zone in plan.zones:
        local = at.astimezone(zone)
        holiday = holiday_name(plan, local.date())
        if holiday is not None:
            return "holiday", f"public holiday in {zone.key}: {holiday} ({local.date().isoformat()})"
        if not any(_in_window(w, local) for w in plan.windows):
            windows = ", ".join(w.label() for w in plan.windows)
            when = local.strftime("%a %H:%M")
            return "window", f"outside the calling windows ({windows}) in {zone.key}: it is {when} there"
    return None


def _open_reason(plan: _Plan, at: datetime) -> str:
    if plan.hours_waived:
        return "the consumer consented to be called outside the legal hours; caps respected"
    parts = []
    for zone in plan.zones:
        local = at.astimezone(zone)
        window = next(w for w in plan.windows if _in_window(w, local))
        parts.append(f"{window.label()} in {zone.key} ({local.strftime('%a %H:%M')})")
    return "inside " + "; ".join(parts)


def _next_open(plan: _Plan, earliest: datetime) -> datetime | None:
    """The first instant ≥ `earliest` when every zone is inside a window and not on a holiday."""
    if _open(plan, earliest):
        return earliest
    first_day = min(earliest.astimezone(z).date() for z in plan.zones) - timedelta(days=1)
    pending: list[datetime] = []
    for offset in range(0, HORIZON_DAYS, _BATCH_DAYS):
        start = first_day + timedelta(days=offset)
        batch_end = start + timedelta(days=_BATCH_DAYS)
        pending += [c for c in _starts(plan, start, batch_end) if c > earliest]
        pending.sort()
        # Later batches only hold instants after the earliest local midnight of `batch_end`.
        cutoff = min(_instant(batch_end, time(0), z)[0] for z in plan.zones)
        ready = [c for c in pending if c < cutoff]
        pending = [c for c in pending if c >= cutoff]
        for candidate in ready:
            if _open(plan, candidate):
                return candidate
    return None


def _starts(plan: _Plan, first: date, end: date) -> Iterator[datetime]:
    """Every instant in [first, end) (local dates) when a window opens in some zone."""
    day = first
    while day < end:
        for zone in plan.zones:
            for window in plan.windows:
                if day.weekday() in window.days:
                    yield from _instant(day, window.start, zone)
        day += timedelta(days=1)


def _instant(day: date, wall: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants when the wall clock of `zone` reads `wall` on `day`: one, two (a repeated
    hour in autumn) or, for a time skipped in spring, the end of the gap (when the clock jumps
    past it)."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return sorted({first, second})  # repeated hour: both instants exist
    return [_gap_end(min(first, second), max(first, second), naive, zone)]


def _gap_end(lo: datetime, hi: datetime, naive: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (lo, hi] whose local wall time is at or after `naive`."""
    low, high = int(lo.timestamp()), int(hi.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        wall = datetime.fromtimestamp(middle, UTC).astimezone(zone).replace(tzinfo=None)
        if wall >= naive:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
